"""The FastCGI connection handler: serves every request of one web-server connection.

A connection is read through one buffer (``records.RecordReader``), a
request runs as soon as its PARAMS are complete, its body is streamed to the
application as it reads, and each block of the response leaves in one send
as records of up to 65535 bytes, the last block together with END_REQUEST.
Bad input ends that one connection with one log line; the child goes on.
"""

from __future__ import annotations

import logging
import select
import socket
import struct
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from safefcgi.fastcgi.records import (
    KEEP_CONN,
    MAX_CONTENT,
    NULL_REQUEST_ID,
    ProtocolError,
    ProtocolStatus,
    Record,
    RecordReader,
    RecordType,
    Role,
    decode_pairs,
    encode_pairs,
    encode_record,
    encode_stream,
    end_request,
    parse_begin_request,
    stream_end_and_end_request,
    unknown_type,
)
from safefcgi.fastcgi.wsgi import (
    PLAIN_500,
    RequestBody,
    RequestBodyTooLarge,
    ResponseWriter,
    WSGIApp,
    build_environ,
    run_application,
    simple_response,
    traceback_page,
)

log = logging.getLogger("safefcgi.protocol")

# The record types the per-record code compares with, as plain ints: reading an
# IntEnum member costs four times a module global on Python 3.11.
BEGIN_REQUEST = RecordType.BEGIN_REQUEST.value
ABORT_REQUEST = RecordType.ABORT_REQUEST.value
PARAMS = RecordType.PARAMS.value
STDIN = RecordType.STDIN.value
STDOUT = RecordType.STDOUT.value
DATA = RecordType.DATA.value
RESPONDER = Role.RESPONDER.value

# One recv() at most. Kept below glibc's mmap threshold (128 KiB): Python
# allocates the whole size for every recv() before shrinking it, and a larger
# buffer costs an mmap() and munmap() per call, more than the rest of a small
# request's parsing (measured: 8.4 us against 0.8 us for 64 KiB).
RECV_SIZE = 64 * 1024
MAX_IOV = 512  # buffers per sendmsg(); Linux takes up to 1024
STOP_POLL_SECONDS = 1.0


@dataclass(frozen=True)
class Limits:
    """What one web-server connection may make a child hold or wait for (0: no limit).

    No defaults here: they are the options' (``safefcgi.config.protocol_limits``).
    """

    max_params_bytes: int
    max_body_bytes: int
    read_timeout: float


class PeerClosed(ConnectionError):
    """The web server closed the connection while more was expected."""


class PeerTimedOut(TimeoutError):
    """The web server sent (or accepted) nothing for --read-timeout seconds."""


class ResponseCutShort(Exception):
    """The application failed mid-response (already logged): close without END_REQUEST."""


class RequestAborted(ConnectionAbortedError):
    """The web server sent FCGI_ABORT_REQUEST for the request being served.

    A ConnectionError, so an application reading the body sees a failed read.
    """


class RequestObserver(Protocol):
    """Told when each request starts and ends (a prefork child keeps its scoreboard so)."""

    def request_started(self, environ: dict[str, Any]) -> None: ...

    def request_finished(self) -> None: ...


class FastCGIApplication:
    """A WSGI application as served over FastCGI, with its limits and advertised capacity."""

    def __init__(self, application: WSGIApp, *, debug: bool, multithreaded: bool,
                 max_connections: int, limits: Limits,
                 script_name: str | None = None):
        self.application = application
        self.debug = debug
        self.multithreaded = multithreaded
        self.limits = limits
        self.script_name = script_name
        self.observer: RequestObserver | None = None
        self.socket_timeout = _timeval(self.limits.read_timeout)
        # What FCGI_GET_VALUES reports: one request per connection, no multiplexing.
        self.capabilities = {
            "FCGI_MAX_CONNS": str(max_connections),
            "FCGI_MAX_REQS": str(max_connections),
            "FCGI_MPXS_CONNS": "0",
        }

    def get_values(self, query: bytes) -> bytes:
        """The FCGI_GET_VALUES_RESULT body for a query (names we do not know are left out)."""
        names = decode_pairs(query)
        return encode_pairs((name, self.capabilities[name]) for name in names
                            if name in self.capabilities)


def _send_small_records_at_once(sock: socket.socket) -> None:
    """Turn off Nagle's algorithm on a TCP socket (a listener, or one web-server connection).

    A response ends in small writes (the last STDOUT data, END_REQUEST). With
    Nagle on, each waits for the web server to acknowledge the previous one,
    and Linux delays that acknowledgement by up to 40 ms: a web server that
    keeps the connection open (nginx's fastcgi_keep_conn) waits that long for
    the end of every response.
    """
    if sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError as exc:  # the peer is already gone: serving will say so
        log.debug("could not set TCP_NODELAY: %s", exc)


# Linux copies TCP_NODELAY from a listening socket to each connection it
# accepts: set once on the listener, it costs no system call per connection.
NODELAY_INHERITED = sys.platform.startswith("linux")


def prepare_listener(listener: socket.socket) -> None:
    """Set, once, the options the connections accepted from ``listener`` need."""
    _send_small_records_at_once(listener)


def serve_connection(app: FastCGIApplication, sock: socket.socket, addr: Any, *,
                     stop_requested: Callable[[], bool] | None = None,
                     stop_fds: Sequence[Any] = ()) -> bool:
    """Serve every request on one web-server connection, then close it.

    Never raises for bad input or a vanished peer: returns False after one log
    line instead. ``stop_requested`` lets a kept-open connection (FCGI_KEEP_CONN)
    end between requests when the server is stopping; it is asked when one
    of ``stop_fds`` becomes readable (and at least every second without them).
    """
    if not NODELAY_INHERITED:
        _send_small_records_at_once(sock)
    connection = Connection(app, sock, stop_requested, stop_fds)
    try:
        return _guarded(connection.serve)
    finally:
        connection.close()


def serve_until_idle(app: FastCGIApplication, sock: socket.socket,
                     served: int = 0) -> int | None:
    """Serve the requests already sent on a connection; once it is idle and open, return
    how many it has carried (``served`` of them before), else None: it is closed.

    A prefork child does not wait on a kept-open connection (FCGI_KEEP_CONN)
    for the web server's next request: that would pin the child while other
    connections wait. It serves what is there and, once the connection is
    idle between requests, returns so the caller can watch it with the
    others (or pass it on). None means the connection is closed: the web
    server ended it, did not ask to keep it, or it failed (logged).
    """
    if not NODELAY_INHERITED and not served:
        _send_small_records_at_once(sock)
    connection = Connection(app, sock)
    connection.requests_served = served
    idle = False
    try:
        idle = _guarded(connection.serve_available) and not connection.ended
        return connection.requests_served if idle else None
    finally:
        if not idle:
            connection.close()


def _guarded(serve: Callable[[], Any]) -> bool:
    """Run ``serve``; False after one log line for bad input or a vanished peer."""
    try:
        serve()
        return True
    except ResponseCutShort:
        pass
    except ProtocolError as exc:
        log.warning("malformed FastCGI input, connection closed: %s", exc)
    except RequestBodyTooLarge as exc:
        log.warning("%s; connection closed", exc)
    except PeerTimedOut as exc:
        log.warning("%s; connection closed", exc)
    except PeerClosed as exc:
        log.info("%s", exc)
    except (BrokenPipeError, ConnectionResetError):
        log.info("web server closed the connection before the response was complete")
    except OSError as exc:
        log.warning("connection error, connection closed: %s", exc)
    except Exception:  # noqa: BLE001 - last line of defence: the child must keep serving
        log.exception("internal error while serving a connection; connection closed")
    return False


class Connection:
    """One web-server connection: reads records through one buffer, serves its requests."""

    def __init__(self, app: FastCGIApplication, sock: socket.socket,
                 stop_requested: Callable[[], bool] | None = None,
                 stop_fds: Sequence[Any] = ()):
        self.app = app
        self.sock = sock
        self.reader = RecordReader()
        self.stop_requested = stop_requested
        self.stop_fds = list(stop_fds)
        self.requests_served = 0
        self.failure: BaseException | None = None  # why the connection is unusable
        self.ended = False  # the web server closed it, or asked for no more requests
        # --read-timeout is armed only before a call that would block (see _arm_timeouts).
        self._timeouts_armed = app.socket_timeout is None

    # -- I/O ----------------------------------------------------------------------------

    def serve(self) -> None:
        """Serve requests until the web server is done with the connection."""
        self._configure_socket()
        while self._wait_for_next_request():
            record = self.read_record(between_requests=True)
            if record is None:
                return
            if record.request_id == NULL_REQUEST_ID:
                self.handle_management(record)
            elif record.type == BEGIN_REQUEST:
                if not self.serve_request(record):
                    return
            # Anything else belongs to no active request: ignored, as the spec says.

    def serve_available(self) -> None:
        """Serve requests while the web server has sent one; stop once idle between them.

        Sets ``ended`` when the connection is done (EOF, or a request without
        FCGI_KEEP_CONN); otherwise it is idle and open. The first request of a
        connection just accepted is waited for (nginx writes it right after
        connecting), up to --read-timeout, as ``serve()`` does.
        """
        self._configure_socket()
        record = self.read_record(between_requests=True)
        while record is not None:
            if record.request_id == NULL_REQUEST_ID:
                self.handle_management(record)
            elif record.type == BEGIN_REQUEST and not self.serve_request(record):
                break
            record = self._next_record_if_sent()
            if record is False:
                return  # idle between requests
        self.ended = True

    def _next_record_if_sent(self) -> Record | None | bool:
        """The next record if part of it is buffered already; False: idle between requests.

        Nothing is read from the socket to find out: the web server sends its
        next request only after it has read our response, so a recv() here
        would almost always come back empty. Whoever watches the idle
        connection sees the next request (or the close) arrive.
        """
        if not self.reader.buffered:
            return False
        return self.read_record(between_requests=True)

    def _configure_socket(self) -> None:
        if self.sock.gettimeout() is not None:
            self.sock.setblocking(True)

    def _arm_timeouts(self) -> None:
        """Kernel timeouts for --read-timeout, set on first need.

        Kernel timeouts keep each recv/send one system call (Python's own
        socket timeout would poll() before every one of them). Most requests
        never need them: the web server wrote the whole request before we
        accepted it, and the response fits the socket's buffer. Setting them
        on every connection would cost two system calls each.
        """
        value = self.app.socket_timeout
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, value)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, value)
        self._timeouts_armed = True

    def _recv(self) -> bytes:
        if not self._timeouts_armed:
            try:
                return self.sock.recv(RECV_SIZE, socket.MSG_DONTWAIT)
            except BlockingIOError:
                self._arm_timeouts()
        return self.sock.recv(RECV_SIZE)

    def read_record(self, between_requests: bool = False) -> Record | None:
        """The next record; None when the web server ends the connection between requests."""
        while (record := self.reader.next_record()) is None:
            try:
                data = self._recv()
            except BlockingIOError:
                if between_requests and not self.reader.buffered:
                    return self._idle_timeout()
                raise self.fail(PeerTimedOut(
                    f"web server sent nothing for {self.app.limits.read_timeout:g} s "
                    "in the middle of a request")) from None
            if not data:
                if between_requests and not self.reader.buffered:
                    return None
                where = "in the middle of a record" if self.reader.buffered \
                    else "before the request was complete"
                raise self.fail(PeerClosed(f"web server closed the connection {where}"))
            self.reader.feed(data)
        return record

    def _idle_timeout(self) -> None:
        if self.requests_served:
            log.debug("kept-open connection idle for %g s, closed", self.app.limits.read_timeout)
        else:
            log.info("web server connected but sent nothing for %g s; connection closed",
                     self.app.limits.read_timeout)
        return None

    def _wait_for_next_request(self) -> bool:
        """Between requests on a kept-open connection, notice a stop of the server.

        The connection is not closed for connections waiting elsewhere: nginx
        may be writing its next request (a POST with a body) at that moment,
        and fails it with 502 instead of retrying.
        """
        # The first request of a connection is always served: it was accepted.
        if self.stop_requested is None or not self.requests_served or self.reader.buffered:
            return True
        timeout = self.app.limits.read_timeout
        deadline = time.monotonic() + timeout if timeout > 0 else None
        watched = [self.sock, *self.stop_fds]
        # Ask at once, then whenever a stop fd wakes us (a signal, a message) and at
        # least every STOP_POLL_SECONDS: a stop that was noticed while the request
        # ran has already been read off those fds and will not wake us again.
        while not self.stop_requested():
            wait = STOP_POLL_SECONDS
            if deadline is not None:
                wait = min(wait, max(deadline - time.monotonic(), 0))
            readable, _, _ = select.select(watched, [], [], wait)
            if self.sock in readable or (deadline is not None and time.monotonic() >= deadline):
                return True  # read_record() reports data, EOF or the idle timeout
        log.debug("server stopping: kept-open connection closed between requests")
        return False

    def send(self, data: bytes) -> None:
        try:
            if not self._timeouts_armed:
                try:
                    sent = self.sock.send(data, socket.MSG_DONTWAIT)
                except BlockingIOError:
                    sent = 0
                if sent == len(data):
                    return
                data = memoryview(data)[sent:]
                self._arm_timeouts()
            self.sock.sendall(data)
        except OSError as exc:
            raise self._send_failed(exc) from None

    def send_pieces(self, pieces: list[bytes | memoryview]) -> None:
        """Send encoded records by scatter-gather: the data is never copied into one buffer."""
        views = [memoryview(piece).cast("B") for piece in pieces]
        first = 0  # views[:first] are sent
        try:
            if not self._timeouts_armed:
                self._arm_timeouts()  # a large response: two more system calls are nothing
            while first < len(views):
                sent = self.sock.sendmsg(views[first:first + MAX_IOV])
                while first < len(views) and sent >= len(views[first]):
                    sent -= len(views[first])
                    first += 1
                if sent:
                    views[first] = views[first][sent:]
        except OSError as exc:
            raise self._send_failed(exc) from None

    def _send_failed(self, exc: OSError) -> BaseException:
        """A send error as the connection reports it (BlockingIOError: SO_SNDTIMEO ran out)."""
        if isinstance(exc, BlockingIOError):
            exc = PeerTimedOut(f"web server accepted no response data for "
                               f"{self.app.limits.read_timeout:g} s")
        return self.fail(exc)

    def fail(self, exc: BaseException) -> BaseException:
        if self.failure is None:
            self.failure = exc
        return exc

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    # -- records outside a request ------------------------------------------------------

    def handle_management(self, record: Record) -> None:
        """Answer a management record (request id 0)."""
        if record.type == RecordType.GET_VALUES:
            self.send(encode_record(RecordType.GET_VALUES_RESULT, NULL_REQUEST_ID,
                                    self.app.get_values(record.content)))
        else:
            self.send(unknown_type(record.type))

    def serve_request(self, begin: Record) -> bool:
        """Serve the request ``begin`` opens; True if the connection carries on."""
        role, flags = parse_begin_request(begin.content)
        keep_conn = bool(flags & KEEP_CONN)
        if role != RESPONDER:
            # Answered as the specification asks, then the connection ends like any other
            # bad input: a web server configured for another role gets one log line per
            # connection, not one per request it keeps sending.
            log.warning("web server asked for FastCGI role %d; only the responder role is "
                        "served", role)
            self.send(end_request(begin.request_id, 0, ProtocolStatus.UNKNOWN_ROLE))
            return False
        request = Request(self, begin.request_id)
        request.run()
        self.requests_served += 1
        if self.failure is not None:
            raise self.failure
        return keep_conn and request.complete


class Request:
    """One FastCGI request in the responder role, from PARAMS to END_REQUEST."""

    def __init__(self, connection: Connection, request_id: int):
        self.connection = connection
        self.app = connection.app
        self.id = request_id
        self.params: dict[str, str] = {}
        self.content_length: int | None = None
        self.stdin_done = False
        self.body_bytes = 0
        self.aborted = False
        self.ended = False  # END_REQUEST sent
        self.complete = False  # ended, and every record of it read: the connection is reusable

    # -- reading ------------------------------------------------------------------------

    def next_record(self) -> Record:
        """The next record of this request; others on the connection are dealt with."""
        connection = self.connection
        while True:
            record = connection.read_record()
            if record.request_id == self.id:
                if record.type == ABORT_REQUEST:
                    self.aborted = True
                    raise RequestAborted(f"web server aborted request {self.id}")
                if record.type == BEGIN_REQUEST:
                    raise connection.fail(ProtocolError(
                        f"BEGIN_REQUEST for request {self.id}, which is still active"))
                return record
            if record.request_id == NULL_REQUEST_ID:
                connection.handle_management(record)
            elif record.type == BEGIN_REQUEST:
                connection.send(end_request(record.request_id, 0,
                                            ProtocolStatus.CANT_MPX_CONN))
            # Records of a refused or unknown request id are ignored.

    def read_params(self) -> dict[str, str]:
        limit = self.app.limits.max_params_bytes
        chunks, size = [], 0
        while True:
            record = self.next_record()
            if record.type != PARAMS:
                raise self.connection.fail(ProtocolError(
                    f"{record.describe()} before the end of its PARAMS"))
            if not record.content:
                return decode_pairs(b"".join(chunks))
            size += len(record.content)
            if limit and size > limit:
                raise self.connection.fail(ProtocolError(
                    f"PARAMS of request {self.id} exceed --max-params-bytes ({limit} bytes)"))
            chunks.append(record.content)

    def next_body_chunk(self) -> bytes:
        """The next piece of STDIN, b"" at its end (the source of wsgi.input)."""
        if self.stdin_done or self.aborted:
            return b""
        limit = self.body_limit
        while True:
            record = self.next_record()
            if record.type == DATA:
                continue  # the filter role's second stream; a responder has none
            if record.type != STDIN:
                raise self.connection.fail(ProtocolError(
                    f"{record.describe()} while reading STDIN"))
            if not record.content:
                self.stdin_done = True
                return b""
            self.body_bytes += len(record.content)
            if limit and self.body_bytes > limit:
                raise self.connection.fail(RequestBodyTooLarge(
                    f"request body exceeds --max-body-bytes ({self.app.limits.max_body_bytes} "
                    "bytes)"))
            return record.content

    @property
    def body_limit(self) -> int:
        """How much STDIN is accepted (0: no limit).

        --max-body-bytes, or the declared CONTENT_LENGTH when that is larger:
        a body refused with 413 is still read to its end, so that the web
        server can deliver the answer and reuse the connection.
        """
        limit = self.app.limits.max_body_bytes
        return limit and max(limit, self.content_length or 0)

    def finish_stdin(self) -> bool:
        """Read what is left of STDIN; True if the connection can carry another request."""
        try:
            while self.next_body_chunk():
                pass
        except RequestAborted:
            pass  # the web server gave up on a request that has ended anyway
        except PeerClosed:
            self.connection.failure = None  # the response was delivered; nothing to report
            return False
        return True

    # -- the request --------------------------------------------------------------------

    def run(self) -> None:
        try:
            self.params = self.read_params()
        except RequestAborted:
            self.end()
            self.complete = True
            return
        self.content_length, problem = self._check_body_length(
            self.params.get("CONTENT_LENGTH", ""))
        if problem is not None:
            self.emit(problem, final=True)
        else:
            self.run_application(self.content_length)
        if self.connection.failure is None:
            self.complete = self.finish_stdin()

    def _check_body_length(self, text: str) -> tuple[int | None, bytes | None]:
        """(CONTENT_LENGTH, None), or (CONTENT_LENGTH, a whole response to send instead)."""
        if not text.strip():
            return None, None
        try:
            length = int(text)
            if length < 0:
                raise ValueError
        except ValueError:
            log.warning("invalid CONTENT_LENGTH %r; answered 400", text[:40])
            return None, simple_response("400 Bad Request", "Invalid Content-Length")
        limit = self.app.limits.max_body_bytes
        if limit and length > limit:
            log.warning("request body of %d bytes refused: --max-body-bytes is %d",
                        length, limit)
            return length, simple_response("413 Content Too Large",
                                           f"Request body larger than {limit} bytes")
        return length, None

    def run_application(self, content_length: int | None) -> None:
        body = RequestBody(self.next_body_chunk, content_length)
        environ = build_environ(self.params, body=body, errors=sys.stderr,
                                multithread=self.app.multithreaded,
                                multiprocess=not self.app.multithreaded,
                                script_name=self.app.script_name)
        # Which request this is on its connection (1 without FCGI_KEEP_CONN).
        environ["safefcgi.connection_requests"] = self.connection.requests_served + 1
        writer = ResponseWriter(self.emit)
        observer = self.app.observer
        if observer is not None:
            observer.request_started(environ)
        try:
            run_application(self.app.application, environ, writer)
        except RequestAborted:
            log.info("web server aborted %s", self.describe())
        except Exception:  # noqa: BLE001 - any application error becomes a 500
            if self.connection.failure is None:
                self.application_failed(writer)
            # else: our own read or write failed inside the application; raised below.
        finally:
            if observer is not None:
                observer.request_finished()
        if self.connection.failure is not None:
            raise self.connection.failure
        self.end()

    def application_failed(self, writer: ResponseWriter) -> None:
        """Log the application's exception and answer 500 if the response has not started."""
        if self.ended:
            log.error("%s: the response's close() raised", self.describe(), exc_info=True)
        elif writer.headers_sent:
            log.error("%s raised after its response started; response cut short",
                      self.describe(), exc_info=True)
            # Without END_REQUEST the web server knows the response is incomplete.
            self.connection.fail(ResponseCutShort())
        else:
            log.error("%s raised %s", self.describe(), sys.exc_info()[0].__name__,
                      exc_info=True)
            self.emit(traceback_page() if self.app.debug else PLAIN_500, final=True)

    def describe(self) -> str:
        method = self.params.get("REQUEST_METHOD", "?")
        target = self.params.get("REQUEST_URI") or self.params.get("PATH_INFO", "?")
        return f"request {method} {target}"

    # -- writing ------------------------------------------------------------------------

    def emit(self, data: bytes, final: bool) -> None:
        """Send response bytes as STDOUT records; ``final`` adds the end of the request."""
        if self.ended or self.connection.failure is not None:
            return
        if self.aborted:
            if final:
                self.end()
            return
        if final:
            self.ended = True
        if len(data) <= MAX_CONTENT:
            # The common case, a block that fits one record: one bytes, one send.
            out = encode_record(STDOUT, self.id, data) if data else b""
            if final:
                out += stream_end_and_end_request(STDOUT, self.id)
            self.connection.send(out)
            return
        pieces = encode_stream(STDOUT, self.id, data)
        if final:
            pieces.append(stream_end_and_end_request(STDOUT, self.id))
        self.connection.send_pieces(pieces)

    def end(self) -> None:
        if not self.ended:
            self.ended = True
            self.connection.send(end_request(self.id))


def _timeval(seconds: float) -> bytes | None:
    """A struct timeval for SO_RCVTIMEO/SO_SNDTIMEO; None for no timeout."""
    if seconds <= 0:
        return None
    whole = int(seconds)
    return struct.pack("ll", whole, int((seconds - whole) * 1_000_000))
