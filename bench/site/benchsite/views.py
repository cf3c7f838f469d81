"""The benchmark's views; each answer is checked by the load generator.

* ``hello``: the smallest Django response (framework plus server overhead).
* ``db``: one query on the persistent PostgreSQL connection.
* ``big``: a 1 MiB body.
* ``upload``: reads the body as a stream (never whole) and answers its length
  and CRC-32, so a 100 MB upload shows the server's memory, not the view's.
"""

import zlib

from django.db import connection
from django.http import HttpResponse
from django.views.decorators.csrf import csrf_exempt

HELLO = b"Hello from the benchmark\n"
BIG = bytes(range(256)) * 4096  # 1 MiB
READ_CHUNK = 64 * 1024


def hello(request):
    return HttpResponse(HELLO, content_type="text/plain")


def db(request):
    with connection.cursor() as cursor:
        cursor.execute("SELECT %s", [request.GET.get("token", "")])
        (token,) = cursor.fetchone()
    return HttpResponse(token.encode(), content_type="text/plain")


def big(request):
    return HttpResponse(BIG, content_type="application/octet-stream")


@csrf_exempt
def upload(request):
    length, crc = 0, 0
    while chunk := request.read(READ_CHUNK):
        length += len(chunk)
        crc = zlib.crc32(chunk, crc)
    return HttpResponse(f"{length} {crc}".encode(), content_type="text/plain")
