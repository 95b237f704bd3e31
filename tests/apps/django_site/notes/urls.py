from django.urls import path

from . import views

app_name = "notes"
urlpatterns = [
    path("fetch-demo/", views.fetch_demo, name="fetch-demo"),
    path("api/create/", views.api_create, name="api-create"),
    path("whoami/", views.whoami, name="whoami"),
]
