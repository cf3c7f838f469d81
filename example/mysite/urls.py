from django.urls import path
from notes import views

urlpatterns = [
    path("", views.home, name="home"),
    path("hello", views.hello, name="hello"),
    path("login", views.login_view, name="login"),
    path("whoami", views.whoami, name="whoami"),
    path("query", views.query, name="query"),
    path("cache", views.cache_echo, name="cache"),
    path("write", views.write, name="write"),
    path("host", views.host, name="host"),
]
