"""The FastCGI wire protocol: the one module that imports flup.

flup6 (2015) does the record framing well enough, but some of it is wrong on
Python 3, and those parts are overridden here:

* response headers were encoded as ASCII, so a valid latin-1 header value
  crashed the request; they are latin-1 here, as PEP 3333 says;
* a crashing application got a ``cgitb`` page (``cgitb`` is gone in Python
  3.13) and, without debug, an error page served with status 200; here it is a
  plain ``500`` page, and a traceback only with ``--debug``;
* an unknown management record raised ``NameError`` inside flup and killed the
  child; here it is answered with FCGI_UNKNOWN_TYPE;
* FCGI_GET_VALUES was never answered (bytes names looked up as str keys);
* any other malformed input ends that one connection with a log line, and the
  child goes on serving.
"""

from __future__ import annotations

import errno
import html
import logging
import socket
import struct
import sys
import traceback
from collections.abc import Callable, Iterable
from typing import Any

from flup.server import fcgi as flup_threaded
from flup.server import fcgi_base

log = logging.getLogger("safefcgi.protocol")

WSGIApp = Callable[[dict, Callable], Iterable[bytes]]

# Largest content a FastCGI record may carry is 65535 bytes; keep a multiple of 8.
MAX_RECORD_CONTENT = 65528
CLIENT_GONE = (BrokenPipeError, ConnectionResetError)

PLAIN_500 = (
    b"Status: 500 Internal Server Error\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Length: 22\r\n\r\n"
    b"Internal Server Error\n"
)


class MalformedRecord(Exception):
    """The peer sent bytes that are not a valid FastCGI record stream."""


class SafeConnection(fcgi_base.Connection):
    """flup's connection, with its Python 3 bugs in management records fixed."""

    def _do_get_values(self, inrec: fcgi_base.Record) -> None:
        # flup looked bytes names up in a dict of str keys and never answered.
        outrec = fcgi_base.Record(fcgi_base.FCGI_GET_VALUES_RESULT)
        pos, answer = 0, b""
        while pos < inrec.contentLength:
            pos, (name, _) = fcgi_base.decode_pair(inrec.contentData, pos)
            value = self.server.capability.get(name.decode("latin-1"))
            if value is not None:
                answer += fcgi_base.encode_pair(name, str(value).encode("latin-1"))
        outrec.contentData = answer
        outrec.contentLength = len(answer)
        self.writeRecord(outrec)

    def _do_unknown_type(self, inrec: fcgi_base.Record) -> None:
        outrec = fcgi_base.Record(fcgi_base.FCGI_UNKNOWN_TYPE)
        outrec.contentData = struct.pack(fcgi_base.FCGI_UnknownTypeBody, inrec.type)
        outrec.contentLength = fcgi_base.FCGI_UnknownTypeBody_LEN
        self.writeRecord(outrec)


class SafeRequest(fcgi_base.Request):
    """flup's request, minus its Python 3 crash when the application raises.

    flup printed the traceback as text into a bytes stream, which raised a
    second TypeError and took the child down.
    """

    def run(self) -> None:
        try:
            protocol_status, app_status = self.server.handler(self)
        except Exception:  # noqa: BLE001 - any application error becomes a 500
            if self.stdout.dataWritten:
                log.error("request %s %s raised after its response started; response cut "
                          "short", self.params.get("REQUEST_METHOD"),
                          self.params.get("REQUEST_URI"), exc_info=True)
            else:
                self.server.error(self)
            protocol_status, app_status = fcgi_base.FCGI_REQUEST_COMPLETE, 0
        try:
            self._flush()
            self._end(app_status, protocol_status)
        except CLIENT_GONE:
            log.info("web server closed the connection before the response ended")


class _ResponseWriter:
    """start_response/write for one request; headers travel with the first body bytes."""

    def __init__(self, stdout: fcgi_base.OutputStream):
        self._stdout = stdout
        self._head: bytes | None = None
        self.headers_sent = False

    def start_response(self, status: str, headers: list[tuple[str, str]],
                       exc_info: Any = None) -> Callable[[bytes], None]:
        if exc_info is not None:
            try:
                if self.headers_sent:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None
        elif self._head is not None:
            raise AssertionError("start_response() called twice without exc_info")
        self._head = _encode_head(status, headers)
        return self.write

    def write(self, data: bytes) -> None:
        if self._head is None:
            raise AssertionError("write() before start_response()")
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError(f"response body must be bytes, not {type(data).__name__}")
        if not self.headers_sent:
            data = self._head + data
            self.headers_sent = True
        if data:
            self._stdout.write(bytes(data))

    def finish(self) -> None:
        """Send the headers of an empty response."""
        if not self.headers_sent:
            self.write(b"")


def _encode_head(status: str, headers: list[tuple[str, str]]) -> bytes:
    if not isinstance(status, str) or len(status) < 5 or not status[:3].isdigit() \
            or status[3] != " ":
        raise ValueError(f"invalid WSGI status {status!r}")
    lines = [b"Status: " + status.encode("latin-1")]
    for name, value in headers:
        if not isinstance(name, str) or not isinstance(value, str):
            raise TypeError(f"header {name!r} must be a pair of str")
        lines.append(name.encode("latin-1") + b": " + value.encode("latin-1"))
    return b"\r\n".join(lines) + b"\r\n\r\n"


class FastCGIApplication(fcgi_base.BaseFCGIServer):
    """Speaks FastCGI for one WSGI application; safefcgi's master owns the sockets."""

    maxwrite = MAX_RECORD_CONTENT + fcgi_base.FCGI_HEADER_LEN
    request_class = SafeRequest

    def __init__(self, application: WSGIApp, *, debug: bool, multithreaded: bool,
                 max_connections: int):
        super().__init__(application, multithreaded=multithreaded,
                         multiprocess=not multithreaded, bindAddress="unused",
                         debug=debug)
        self._connectionClass = SafeConnection
        self.capability = {
            fcgi_base.FCGI_MAX_CONNS: max_connections,
            fcgi_base.FCGI_MAX_REQS: max_connections,
            fcgi_base.FCGI_MPXS_CONNS: 0,
        }

    def handler(self, req: fcgi_base.Request) -> tuple[int, int]:
        """Run the WSGI application for one request (PEP 3333)."""
        if req.role not in self.roles:
            return fcgi_base.FCGI_UNKNOWN_ROLE, 0
        environ = self._build_environ(req)
        writer = _ResponseWriter(req.stdout)
        try:
            result = self.application(environ, writer.start_response)
            try:
                for chunk in result:
                    if chunk:
                        writer.write(chunk)
                writer.finish()
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    close()
        except CLIENT_GONE:
            log.info("client went away during %s %s", environ.get("REQUEST_METHOD"),
                     environ.get("REQUEST_URI", environ.get("PATH_INFO")))
        return fcgi_base.FCGI_REQUEST_COMPLETE, 0

    def _build_environ(self, req: fcgi_base.Request) -> dict[str, Any]:
        environ = req.params
        environ.update(self.environ)
        environ["wsgi.version"] = (1, 0)
        environ["wsgi.input"] = req.stdin
        environ["wsgi.errors"] = sys.stderr
        environ["wsgi.multithread"] = self.multithreaded
        environ["wsgi.multiprocess"] = self.multiprocess
        environ["wsgi.run_once"] = False
        https = environ.get("HTTPS", "off").lower() in ("on", "1")
        environ["wsgi.url_scheme"] = "https" if https else "http"
        self._sanitizeEnv(environ)
        return environ

    def error(self, req: fcgi_base.Request) -> None:
        """The application raised before sending anything: answer 500, log the traceback."""
        exc_type, exc, _ = sys.exc_info()
        log.error("request %s %s raised %s", req.params.get("REQUEST_METHOD"),
                  req.params.get("REQUEST_URI", req.params.get("PATH_INFO")),
                  exc_type.__name__ if exc_type else "an error", exc_info=True)
        if not self.debug:
            req.stdout.write(PLAIN_500)
            return
        page = (
            "<!DOCTYPE html><html><head><title>500 Internal Server Error</title></head>"
            "<body><h1>Unhandled exception</h1><pre>"
            + html.escape(traceback.format_exc())
            + "</pre><p>Shown because safefcgi runs with --debug.</p></body></html>"
        ).encode("utf-8")
        req.stdout.write(
            b"Status: 500 Internal Server Error\r\nContent-Type: text/html; charset=utf-8\r\n"
            b"Content-Length: " + str(len(page)).encode() + b"\r\n\r\n" + page
        )


def serve_connection(app: FastCGIApplication, sock: socket.socket, addr: Any) -> bool:
    """Serve every request on one web-server connection; never raise for bad input.

    Returns False when the connection ended abnormally (logged as one line).
    """
    sock.setblocking(True)
    connection = SafeConnection(sock, addr, app)
    try:
        connection.run()
        return True
    except CLIENT_GONE:
        log.info("web server closed the connection mid-request")
    except (struct.error, IndexError, ValueError, UnicodeError) as exc:
        log.warning("malformed FastCGI input, connection closed: %s", exc)
    except OSError as exc:
        if exc.errno not in (errno.EBADF, errno.ENOTCONN):
            log.warning("connection error, connection closed: %s", exc)
    _close_quietly(sock)
    return False


def _close_quietly(sock: socket.socket) -> None:
    try:
        sock.close()
    except OSError:
        pass


class ThreadedFastCGIServer(FastCGIApplication, flup_threaded.WSGIServer):
    """flup's threaded server on safefcgi's own listening socket and fixed handler."""

    def __init__(self, application: WSGIApp, *, debug: bool, min_spare: int, max_spare: int,
                 max_threads: int):
        flup_threaded.WSGIServer.__init__(
            self, application, multithreaded=True, multiprocess=False,
            bindAddress="unused", debug=debug, minSpare=min_spare, maxSpare=max_spare,
            maxThreads=max_threads,
        )
        self._connectionClass = SafeConnection
        self._jobClass = _GuardedJob
        self._jobArgs = (self,)
        self.capability = {
            fcgi_base.FCGI_MAX_CONNS: max_threads,
            fcgi_base.FCGI_MAX_REQS: max_threads,
            fcgi_base.FCGI_MPXS_CONNS: 0,
        }
        self._web_server_addrs = None

    def serve_forever(self, sock: socket.socket) -> None:
        """Serve until SIGTERM/SIGINT/SIGHUP (flup's loop polls with a 1 s timeout)."""
        from flup.server.threadedserver import ThreadedServer

        ThreadedServer.run(self, sock)

    def _isClientAllowed(self, addr: Any) -> bool:  # noqa: N802 - flup's hook name
        return True


class _GuardedJob:
    """A thread-pool job that serves one connection without letting errors escape."""

    def __init__(self, sock: socket.socket, addr: Any, app: FastCGIApplication):
        self._sock = sock
        self._addr = addr
        self._app = app

    def run(self) -> None:
        serve_connection(self._app, self._sock, self._addr)
