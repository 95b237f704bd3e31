from django.http import JsonResponse
from django.shortcuts import render
from django.views.decorators.csrf import ensure_csrf_cookie
from django.views.decorators.http import require_GET, require_POST

from .models import Note


@require_GET
@ensure_csrf_cookie
def fetch_demo(request):
    """A page whose button makes a same-origin fetch() POST with Django's CSRF token."""
    return render(request, "notes/fetch_demo.html")


@require_POST
def api_create(request):
    """Creates a Note (title from the JSON or form body); Django's CSRF check applies."""
    if not request.user.is_authenticated:
        return JsonResponse({"error": "unauthenticated"}, status=401)
    title = request.POST.get("title")
    if title is None and request.content_type == "application/json":
        import json

        try:
            title = json.loads(request.body or b"{}").get("title")
        except (ValueError, AttributeError):
            title = None
    note = Note.objects.create(title=title or "fetch note", created_by=request.user)
    return JsonResponse({"id": note.pk, "title": note.title, "created_by": request.user.get_username()})


@require_GET
def whoami(request):
    u = request.user
    return JsonResponse({
        "user": u.get_username() if u.is_authenticated else None,
        "is_staff": bool(u.is_authenticated and u.is_staff),
        "is_superuser": bool(u.is_authenticated and u.is_superuser),
        "script_name": request.META.get("SCRIPT_NAME", ""),
        "path": request.path,
    })
