"""The WSGI side of a request (PEP 3333): environ, wsgi.input, start_response/write.

Nothing here knows about FastCGI records: the protocol module hands in the
CGI params, a function that returns the next piece of the request body, and a
function that sends response bytes.
"""

from __future__ import annotations

import html
import sys
import traceback
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from urllib.parse import unquote_to_bytes

WSGIApp = Callable[[dict, Callable], Iterable[bytes]]
# emit(data, final): send response bytes; ``final`` says nothing will follow.
Emit = Callable[[bytes, bool], None]

REQUIRED_CGI_DEFAULTS = (
    ("REQUEST_METHOD", "GET"),
    ("SERVER_NAME", "localhost"),
    ("SERVER_PORT", "80"),
    ("SERVER_PROTOCOL", "HTTP/1.0"),
)
READ_CHUNK = 65536


class RequestBodyTooLarge(OSError):
    """A body without CONTENT_LENGTH grew past --max-body-bytes.

    An OSError, so frameworks treat it like any failed read of the body
    (Django raises UnreadablePostError).
    """


# -- environ ----------------------------------------------------------------------------


def build_environ(params: dict[str, str], *, body: RequestBody, errors: Any,
                  multithread: bool, multiprocess: bool,
                  script_name: str | None = None) -> dict[str, Any]:
    """Turn the web server's CGI params into a PEP 3333 environ (``params`` is reused).

    ``script_name`` is the mount point the operator gave (--script-name); without
    it, the web server's SCRIPT_NAME/PATH_INFO split is trusted (see fix_paths).
    """
    environ = params
    # nginx passes the request's own Content-Type/Length headers as HTTP_* too;
    # PEP 3333 wants them only under their CGI names.
    environ.pop("HTTP_CONTENT_TYPE", None)
    environ.pop("HTTP_CONTENT_LENGTH", None)
    fix_paths(environ, script_name)
    for name, default in REQUIRED_CGI_DEFAULTS:
        environ.setdefault(name, default)
    environ["wsgi.version"] = (1, 0)
    environ["wsgi.url_scheme"] = url_scheme(environ)
    environ["wsgi.input"] = body
    environ["wsgi.input_terminated"] = True  # read() returns b"" at the end of the body
    environ["wsgi.errors"] = errors
    environ["wsgi.multithread"] = multithread
    environ["wsgi.multiprocess"] = multiprocess
    environ["wsgi.run_once"] = False
    return environ


def url_scheme(environ: dict[str, str]) -> str:
    https = environ.get("HTTPS")
    if https is not None:
        return "https" if https.lower() in ("on", "1", "yes") else "http"
    return "https" if environ.get("REQUEST_SCHEME", "").lower() == "https" else "http"


def fix_paths(environ: dict[str, str], script_name: str | None = None) -> None:
    """Make SCRIPT_NAME and PATH_INFO what a WSGI application expects.

    * Without ``script_name``: the web server's split is kept, except when it
      sent no PATH_INFO; then it did not split at all (nginx's stock
      fastcgi_params put the whole path in SCRIPT_NAME, lighttpd does the
      same for "/" without fix-root-scriptname), and the path moves to
      PATH_INFO. A site mounted below a prefix should give ``script_name``.
    * With ``script_name`` (the mount point, "/" for the whole site): the full
      path is rebuilt from what the web server sent and split at the mount
      point, whatever split the web server made.
    * With neither variable, path and query come from REQUEST_URI.
    """
    script = environ.get("SCRIPT_NAME", "")
    path = environ.get("PATH_INFO", "")
    uri_path, _, uri_query = environ.get("REQUEST_URI", "").partition("?")
    if not script and not path and uri_path:
        path = unquote_to_bytes(uri_path).decode("latin-1")
    if script_name is not None:
        script, path = _split_at_mount_point(script + path, script_name.rstrip("/"))
    elif not path:
        script, path = "", script
    environ["SCRIPT_NAME"] = script
    environ["PATH_INFO"] = path or ("/" if not script else "")
    if "QUERY_STRING" not in environ:
        environ["QUERY_STRING"] = uri_query


def _split_at_mount_point(full_path: str, prefix: str) -> tuple[str, str]:
    if full_path == prefix or full_path.startswith(prefix + "/"):
        return prefix, full_path[len(prefix):]
    return "", full_path  # outside the mount point: hand the application the whole path


# -- wsgi.input -------------------------------------------------------------------------


class RequestBody:
    """``wsgi.input``: the body as the web server streams it, never all held at once.

    ``next_chunk()`` returns the next piece of the body, ``b""`` at its end.
    Only what the application has asked for (plus the rest of one piece) is in
    memory. Reading stops at CONTENT_LENGTH, as PEP 3333 says a server should.
    """

    def __init__(self, next_chunk: Callable[[], bytes], content_length: int | None = None):
        self._next_chunk = next_chunk
        self._remaining = content_length  # None: until the stream ends
        self._buffer = bytearray()
        self._eof = content_length == 0

    def _fill(self) -> bool:
        """Buffer one more piece; False at the end of the body."""
        if self._eof:
            return False
        chunk = self._next_chunk()
        if self._remaining is not None:
            chunk = chunk[:self._remaining]
            self._remaining -= len(chunk)
            if self._remaining == 0:
                self._eof = True
        if not chunk:
            self._eof = True
            return False
        self._buffer += chunk
        return True

    def _take(self, size: int) -> bytes:
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            while self._fill():
                pass
            return self._take(len(self._buffer))
        while len(self._buffer) < size and self._fill():
            pass
        return self._take(size)

    def readline(self, size: int | None = -1) -> bytes:
        limit = sys.maxsize if size is None or size < 0 else size
        searched = 0
        while True:
            newline = self._buffer.find(b"\n", searched, limit)
            if newline >= 0:
                return self._take(newline + 1)
            searched = len(self._buffer)
            if searched >= limit or not self._fill():
                return self._take(limit)

    def readlines(self, hint: int | None = -1) -> list[bytes]:
        lines, total = [], 0
        while line := self.readline():
            lines.append(line)
            total += len(line)
            if hint is not None and 0 < hint <= total:
                break
        return lines

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        line = self.readline()
        if not line:
            raise StopIteration
        return line


# -- the response -----------------------------------------------------------------------


class ResponseWriter:
    """start_response() and write() for one request.

    The status line and headers are held back and leave with the first body
    bytes (or with the end of an empty response), so a small response is one
    send.
    """

    def __init__(self, emit: Emit):
        self._emit = emit
        self._head: bytes | None = None
        self.headers_sent = False
        self.status: str | None = None

    def start_response(self, status: str, headers: list[tuple[str, str]],
                       exc_info: Any = None) -> Callable[[bytes], None]:
        if exc_info is not None:
            try:
                if self.headers_sent:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None  # no reference cycle through the traceback
        elif self._head is not None:
            raise AssertionError("start_response() called twice without exc_info")
        self._head = encode_head(status, headers)
        self.status = status
        return self.write

    def write(self, data: bytes) -> None:
        """The write() callable of PEP 3333, and how the result's blocks are sent."""
        self._send(data, final=False)

    def finish(self, last: bytes = b"") -> None:
        """Send ``last`` (maybe nothing) and end the response."""
        self._send(last, final=True)

    def _send(self, data: bytes, final: bool) -> None:
        if self._head is None:
            raise AssertionError("response body before start_response()")
        # Tuples, not X | Y: a union is built anew on every call, and this runs per block.
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"response body must be bytes, not {type(data).__name__}")
        if not self.headers_sent:
            data = self._head + data
            self.headers_sent = True
        if data or final:
            self._emit(data, final)


def encode_head(status: str, headers: list[tuple[str, str]]) -> bytes:
    """CGI response headers; latin-1 as PEP 3333 says (a valid latin-1 value must not fail)."""
    if not isinstance(status, str) or len(status) < 4 or not status[:3].isdigit() \
            or status[3] != " ":
        raise ValueError(f"invalid WSGI status {status!r}")
    parts = ["Status: ", status]
    for name, value in headers:
        if not isinstance(name, str) or not isinstance(value, str):
            raise TypeError(f"header {name!r} must be a pair of str")
        if "\n" in value or "\r" in value or "\n" in name or ":" in name:
            raise ValueError(f"header {name!r} contains a line break or a colon")
        parts += ("\r\n", name, ": ", value)
    parts.append("\r\n\r\n")
    return "".join(parts).encode("latin-1")  # one encoding for the whole head


def is_buffered(result: Iterable[bytes]) -> bool:
    """True when every block of ``result`` is already in memory.

    Then the server may look one block ahead and send the last block together
    with the end of the request. A streaming result must have each block sent
    before the next is asked for (PEP 3333), so anything unknown counts as
    streaming.
    """
    return isinstance(result, (list, tuple)) or getattr(result, "streaming", True) is False


def run_application(application: WSGIApp, environ: dict[str, Any],
                    writer: ResponseWriter) -> None:
    """Call the application and send its response; close() is always called."""
    result = application(environ, writer.start_response)
    try:
        blocks = iter(result)
        if is_buffered(result):
            pending = b""
            for block in blocks:
                if pending:
                    writer.write(pending)
                pending = block
            writer.finish(pending)
        else:
            for block in blocks:
                if block:
                    writer.write(block)
            writer.finish()
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()


# -- canned responses -------------------------------------------------------------------


def simple_response(status: str, text: str) -> bytes:
    """A whole plain-text CGI response."""
    body = (text + "\n").encode("utf-8")
    return encode_head(status, [("Content-Type", "text/plain; charset=utf-8"),
                                ("Content-Length", str(len(body)))]) + body


def traceback_page() -> bytes:
    """A whole HTML 500 response with the current exception (only with --debug).

    Built with ``traceback`` because ``cgitb`` is gone in Python 3.13.
    """
    page = (
        "<!DOCTYPE html><html><head><title>500 Internal Server Error</title></head>"
        "<body><h1>Unhandled exception</h1><pre>"
        + html.escape(traceback.format_exc())
        + "</pre><p>Shown because safefcgi runs with --debug.</p></body></html>"
    ).encode("utf-8")
    return encode_head("500 Internal Server Error", [
        ("Content-Type", "text/html; charset=utf-8"), ("Content-Length", str(len(page))),
    ]) + page


PLAIN_500 = simple_response("500 Internal Server Error", "Internal Server Error")
