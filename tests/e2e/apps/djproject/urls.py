from django.urls import path

from . import views

urlpatterns = [
    path("", views.index),
    path("json", views.json_view),
    path("form", views.form),
    path("upload", views.upload),
    path("stream", views.stream),
    path("cookies/set", views.set_cookie),
    path("cookies/get", views.get_cookie),
    path("session", views.session_count),
    path("boom", views.boom),
    path("spin", views.spin),
]
