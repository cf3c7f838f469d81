"""Views of the example site.

Besides a home page for the demo, each view answers with something only the
right database result can produce (the caller's own user, session value,
token or key), so a connection shared between server processes shows up as a
wrong body instead of going unnoticed.
"""

import os
import time

from django.conf import settings
from django.contrib.auth import authenticate, login
from django.core.cache import caches
from django.core.cache.backends.redis import RedisCache
from django.db import connection
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, JsonResponse
from django.shortcuts import render
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from .apps import backend_id, import_time_query
from .models import Note

FORK_WARNING = "at fork time"


def _fork_warnings() -> list[str]:
    """The fork-time warnings in the server's log, when the demo says where it is."""
    path = settings.SERVER_LOG
    if not path:
        return []
    try:
        with open(path, errors="replace") as log:
            return [line.strip() for line in log if FORK_WARNING in line]
    except OSError:
        return []


@require_GET
def home(request: HttpRequest) -> HttpResponse:
    """What the demo shows: this child, its own connection, the import-time query."""
    notes = Note.objects.count()
    with connection.cursor() as cursor:
        backend = backend_id(cursor)
    return render(request, "notes/home.html", {
        "pid": os.getpid(),
        "master_pid": os.getppid(),
        "notes": notes,
        "vendor": connection.vendor,
        "backend": backend,
        "opened_in": getattr(connection, "example_opened_by", None),
        "import_query": import_time_query,
        "fork_warnings": _fork_warnings(),
        "status_path": settings.STATUS_PATH,
    })


@require_GET
def hello(request: HttpRequest) -> HttpResponse:
    return HttpResponse("Hello from safefcgi\n", content_type="text/plain")


# The login and write endpoints are exempt from CSRF so that a plain HTTP test
# client can use them; a real site would keep the protection.
@csrf_exempt
@require_POST
def login_view(request: HttpRequest) -> HttpResponse:
    """Log in with username and password and remember ``nonce`` in the new session."""
    user = authenticate(
        request,
        username=request.POST.get("username", ""),
        password=request.POST.get("password", ""),
    )
    if user is None:
        return JsonResponse({"error": "invalid credentials"}, status=403)
    login(request, user)
    request.session["nonce"] = request.POST.get("nonce", "")
    return JsonResponse({"user": user.get_username(), "pid": os.getpid()})


@require_GET
def whoami(request: HttpRequest) -> HttpResponse:
    """Report the logged-in user and the nonce stored in the session at login."""
    return JsonResponse(
        {
            "user": request.user.get_username() if request.user.is_authenticated else "",
            "nonce": request.session.get("nonce", ""),
            "pid": os.getpid(),
        }
    )


@require_GET
def query(request: HttpRequest) -> HttpResponse:
    """Echo ``token`` through the database, with the server session that answered.

    ``opened_by`` is the process that opened the connection: another one than
    ``pid`` means the connection was inherited across fork.
    """
    token = request.GET.get("token")
    if not token:
        return HttpResponseBadRequest("token is required\n", content_type="text/plain")
    with connection.cursor() as cursor:
        cursor.execute("SELECT %s", [token])
        (echoed,) = cursor.fetchone()
        backend = backend_id(cursor)
    return JsonResponse({"token": echoed, "backend": backend,
                         "opened_by": getattr(connection, "example_opened_by", None),
                         "pid": os.getpid()})


@require_GET
def cache_echo(request: HttpRequest) -> HttpResponse:
    """Echo ``token`` through the cache, with the Redis client id that answered (if Redis)."""
    token = request.GET.get("token")
    if not token:
        return HttpResponseBadRequest("token is required\n", content_type="text/plain")
    key = f"echo-{token}"
    backend = caches["default"]
    backend.set(key, token, 60)
    echoed = backend.get(key)
    client = None
    if isinstance(backend, RedisCache):
        # The private client Django keeps: the connection the two calls above used.
        client = backend._cache.get_client(key, write=True).client_id()
    return JsonResponse({"token": echoed, "client": client, "pid": os.getpid()})


@csrf_exempt
@require_POST
def write(request: HttpRequest) -> HttpResponse:
    """Store a note under the client's ``key`` and answer with the key read back."""
    key = request.POST.get("key")
    if not key:
        return HttpResponseBadRequest("key is required\n", content_type="text/plain")
    note = Note.objects.create(key=key, author=request.user.get_username())
    stored = Note.objects.get(pk=note.pk)
    return JsonResponse({"key": stored.key, "id": stored.pk, "pid": os.getpid()})


@require_GET
def host(request: HttpRequest) -> HttpResponse:
    """Name the application host that answered, after an optional ``sleep`` (0 to 2 seconds).

    A cluster of safefcgi hosts sets ``EXAMPLE_APP_HOST`` on each, so a client
    of the web tier can tell which host served it; the pause keeps requests
    in flight long enough to stop a host in the middle of one.
    """
    try:
        pause = float(request.GET.get("sleep", "0"))
    except ValueError:
        pause = -1.0
    if not 0.0 <= pause <= 2.0:  # also refuses nan
        return HttpResponseBadRequest("sleep must be 0 to 2 seconds\n", content_type="text/plain")
    time.sleep(pause)
    return JsonResponse({"host": os.environ.get("EXAMPLE_APP_HOST", ""), "pid": os.getpid()})
