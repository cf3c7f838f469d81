import os
import time

from django.http import HttpResponse
from django.urls import include, path


def pid(request):
    return HttpResponse(str(os.getpid()), content_type="text/plain")


def sleep(request):
    time.sleep(float(request.GET.get("seconds", "1")))
    return HttpResponse(f"slept in {os.getpid()}", content_type="text/plain")


def latin1_header(request):
    return HttpResponse("ok", headers={"Content-Disposition": "attachment; filename=café.txt"})


urlpatterns = [
    path("pid", pid),
    path("sleep", sleep),
    path("latin1", latin1_header),
    path("", include("fixturesite_protocol_views")),
]
