from django.urls import include, path

from benchsite import views

urlpatterns = [
    path("bench/hello", views.hello),
    path("bench/db", views.db),
    path("bench/big", views.big),
    path("bench/upload", views.upload),
    path("", include("mysite.urls")),
]
