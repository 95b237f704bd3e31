"""What this site needs to live behind authgate: its identity headers and its mount prefix.

- GatewayUserMiddleware / GatewayUserBackend: Django's REMOTE_USER support, reading the
  gateway's X-Auth-User header (users are created on first sight). A user whose X-Auth-Roles
  contains "admin" is made a staff superuser (and demoted when the role goes away), checked on
  every request so a changed role applies without a new Django session.
- ForwardedPrefixMiddleware: when the gateway mounts the site under a prefix it strips
  (`strip_prefix`), it sends the public mount in X-Forwarded-Prefix; setting SCRIPT_NAME from
  it makes every URL Django builds (reverse(), redirects, admin links) carry it; the two
  storages below add it to static and uploaded files' URLs.
  Set DJANGO_IGNORE_FORWARDED_PREFIX=1 to run the site as an app that is not told its prefix.
"""
import os
import re

from django.contrib.auth.backends import RemoteUserBackend
from django.contrib.auth.middleware import RemoteUserMiddleware
from django.contrib.staticfiles.storage import StaticFilesStorage
from django.core.files.storage import FileSystemStorage
from django.urls import get_script_prefix, set_script_prefix

ROLES_META = "HTTP_X_AUTH_ROLES"
_PREFIX_RE = re.compile(r"^(/[A-Za-z0-9._~!$&'()*+,;=:@%-]+)+/?$")


def _roles(request):
    return {r.strip() for r in request.META.get(ROLES_META, "").split(",") if r.strip()}


class GatewayUserMiddleware(RemoteUserMiddleware):
    header = "HTTP_X_AUTH_USER"

    def process_request(self, request):
        super().process_request(request)
        user = getattr(request, "user", None)
        if user is None or not user.is_authenticated:
            return
        admin = "admin" in _roles(request)
        if user.is_staff != admin or user.is_superuser != admin:
            user.is_staff = user.is_superuser = admin
            user.save(update_fields=["is_staff", "is_superuser"])


class GatewayUserBackend(RemoteUserBackend):
    create_unknown_user = True

    def configure_user(self, request, user, created=True):
        admin = "admin" in _roles(request)
        if user.is_staff != admin or user.is_superuser != admin:
            user.is_staff = user.is_superuser = admin
            user.save(update_fields=["is_staff", "is_superuser"])
        return user


class ForwardedPrefixMiddleware:
    """Django middleware (first in MIDDLEWARE) applying X-Forwarded-Prefix.

    Django's WSGI handler has already computed request.path and the script prefix from the
    WSGI environ by the time middleware runs, so all three are set here.
    """

    def __init__(self, get_response):
        self.get_response = get_response
        self.enabled = os.environ.get("DJANGO_IGNORE_FORWARDED_PREFIX") != "1"

    def __call__(self, request):
        prefix = request.META.get("HTTP_X_FORWARDED_PREFIX", "") if self.enabled else ""
        if prefix and _PREFIX_RE.match(prefix) and "//" not in prefix:
            prefix = prefix.rstrip("/")
            request.META["SCRIPT_NAME"] = prefix
            request.path = prefix + request.path_info
            set_script_prefix(prefix + "/")
        return self.get_response(request)


def _with_prefix(url):
    prefix = get_script_prefix().rstrip("/")
    if prefix and url.startswith("/") and not url.startswith("//"):
        return prefix + url
    return url


class PrefixedStaticFilesStorage(StaticFilesStorage):
    def url(self, name):
        return _with_prefix(super().url(name))


class PrefixedFileSystemStorage(FileSystemStorage):
    def url(self, name):
        return _with_prefix(super().url(name))
