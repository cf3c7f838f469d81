import os
import sys
import time

from django.http import HttpResponse
from django.urls import include, path

if os.environ.get("FIXTURESITE_URLS_FAIL"):  # a project that cannot be imported
    raise ImportError("fixturesite_urls refuses to load (FIXTURESITE_URLS_FAIL)")

try:  # a module the reload tests write and rewrite in their own directory
    import fixturesite_code
except ImportError:
    fixturesite_code = None


def pid(request):
    return HttpResponse(str(os.getpid()), content_type="text/plain")


def sleep(request):
    seconds = request.GET.get("seconds", "1")
    print(f"child {os.getpid()} sleeps {seconds}", file=sys.stderr, flush=True)
    time.sleep(float(seconds))
    return HttpResponse(f"slept in {os.getpid()}", content_type="text/plain")


GROWN = []  # what /grow allocated: kept for the life of the child


def grow(request):
    """Allocate (and touch) ?mb= megabytes that stay allocated; then hold ?hold= seconds."""
    GROWN.append(b"\x01" * (int(request.GET.get("mb", "10")) * 1024 * 1024))
    time.sleep(float(request.GET.get("hold", "0")))
    total = sum(map(len, GROWN)) // (1024 * 1024)
    return HttpResponse(f"{os.getpid()} holds {total} MB", content_type="text/plain")


def latin1_header(request):
    return HttpResponse("ok", headers={"Content-Disposition": "attachment; filename=café.txt"})


def say(request):
    """Write a word to standard error: a log line that comes from a child."""
    print(f"child {os.getpid()} says {request.GET.get('word', '')}", file=sys.stderr, flush=True)
    return HttpResponse("said", content_type="text/plain")


def hello(request):
    return HttpResponse("Hello from the fixture site\n", content_type="text/plain")


def version(request):
    return HttpResponse(getattr(fixturesite_code, "VERSION", "none"), content_type="text/plain")


urlpatterns = [
    path("version", version),
    path("say", say),
    path("hello", hello),
    path("pid", pid),
    path("sleep", sleep),
    path("grow", grow),
    path("latin1", latin1_header),
    path("", include("fixturesite_protocol_views")),
]
