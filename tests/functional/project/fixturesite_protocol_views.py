"""Views for the protocol tests: echo what Django saw, stream, take uploads, report memory."""

import hashlib
import os
import time

from django.http import HttpResponse, JsonResponse, StreamingHttpResponse
from django.urls import re_path, reverse
from django.views.decorators.csrf import csrf_exempt


def peak_rss_kib() -> int:
    """This process's peak resident set size (VmHWM), in KiB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status")


def note(text: str) -> None:
    """Append a line to the file the tests read (the fixture's hook log)."""
    with open(os.environ["FIXTURESITE_HOOK_LOG"], "a") as log:
        log.write(text + "\n")


@csrf_exempt
def echo(request, rest=None):
    meta = request.META
    return JsonResponse({
        "path": request.path, "path_info": request.path_info,
        "script_name": meta.get("SCRIPT_NAME"), "query": request.GET.dict(),
        "method": request.method, "scheme": request.scheme, "pid": os.getpid(),
        "body": request.body.decode("utf-8", "replace") if request.method != "GET" else "",
        "connection_requests": meta.get("safefcgi.connection_requests"),
        "x_test": meta.get("HTTP_X_TEST"), "authorization": meta.get("HTTP_AUTHORIZATION"),
        # Where Django would link this very view: wrong whenever the web
        # server's SCRIPT_NAME/PATH_INFO split was.
        "reversed": reverse("echo", kwargs={"rest": rest}) if rest else reverse("echo"),
    })


def rss(request):
    return JsonResponse({"pid": os.getpid(), "peak_rss_kib": peak_rss_kib()})


@csrf_exempt
def raw_body(request):
    """Read the body piece by piece, as a streaming consumer would."""
    digest, size = hashlib.sha256(), 0
    while chunk := request.read(65536):
        digest.update(chunk)
        size += len(chunk)
    return JsonResponse({"size": size, "sha256": digest.hexdigest(),
                         "peak_rss_kib": peak_rss_kib(), "pid": os.getpid()})


@csrf_exempt
def upload(request):
    """A multipart upload; Django spools the file to disk above 2.5 MB."""
    upload = request.FILES["file"]
    digest = hashlib.sha256()
    for chunk in upload.chunks():
        digest.update(chunk)
    return JsonResponse({"size": upload.size, "sha256": digest.hexdigest(),
                         "name": upload.name, "peak_rss_kib": peak_rss_kib(),
                         "pid": os.getpid()})


def stream(request):
    """``count`` blocks of ``size`` bytes; notes in the hook log how far it got."""
    count = int(request.GET.get("count", "10"))
    size = int(request.GET.get("size", "10"))
    tag = request.GET.get("tag", "stream")

    def blocks():
        sent = 0
        try:
            for _ in range(count):
                yield b"x" * size
                sent += 1
        finally:
            note(f"{tag} closed after {sent} blocks")

    return StreamingHttpResponse(blocks(), content_type="application/octet-stream")


def ticks(request):
    """``count`` short lines, ``interval`` seconds apart: shows whether a front buffers."""
    count = int(request.GET.get("count", "3"))
    interval = float(request.GET.get("interval", "1"))

    def lines():
        for number in range(count):
            if number:
                time.sleep(interval)
            yield f"tick {number}\n".encode()

    response = StreamingHttpResponse(lines(), content_type="text/plain")
    if "x_accel_buffering" in request.GET:  # nginx's per-response switch
        response["X-Accel-Buffering"] = request.GET["x_accel_buffering"]
    return response


def big(request):
    return HttpResponse(b"y" * int(request.GET.get("size", "1000")),
                        content_type="application/octet-stream")


urlpatterns = [
    re_path(r"^p/echo(?P<rest>/.*)?$", echo, name="echo"),
    re_path(r"^p/rss$", rss),
    re_path(r"^p/raw$", raw_body),
    re_path(r"^p/upload$", upload),
    re_path(r"^p/stream$", stream),
    re_path(r"^p/ticks$", ticks),
    re_path(r"^p/big$", big),
]
