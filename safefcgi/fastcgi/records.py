"""FastCGI 1.0 records: framing, name-value pairs and the fixed message bodies.

Pure byte handling with no sockets, so every rule of the specification can be
pinned by unit and property tests. ``RecordReader`` works on whole buffers:
the caller feeds it whatever one ``recv()`` returned and takes out every
complete record, so a burst of small records costs one system call.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Iterable, Iterator, Mapping
from enum import IntEnum
from typing import NamedTuple

VERSION_1 = 1
HEADER = struct.Struct("!BBHHBx")
HEADER_LEN = HEADER.size
MAX_CONTENT = 65535  # contentLength is a 16-bit field
NULL_REQUEST_ID = 0  # management records
KEEP_CONN = 1  # the only flag of FCGI_BEGIN_REQUEST

_BEGIN_BODY = struct.Struct("!HB5x")
_END_BODY = struct.Struct("!LB3x")
_UNKNOWN_TYPE_BODY = struct.Struct("!B7x")
_LONG_LENGTH = struct.Struct("!L")
_PADDING = bytes(8)


class RecordType(IntEnum):
    BEGIN_REQUEST = 1
    ABORT_REQUEST = 2
    END_REQUEST = 3
    PARAMS = 4
    STDIN = 5
    STDOUT = 6
    STDERR = 7
    DATA = 8
    GET_VALUES = 9
    GET_VALUES_RESULT = 10
    UNKNOWN_TYPE = 11


class Role(IntEnum):
    RESPONDER = 1
    AUTHORIZER = 2
    FILTER = 3


class ProtocolStatus(IntEnum):
    REQUEST_COMPLETE = 0
    CANT_MPX_CONN = 1
    OVERLOADED = 2
    UNKNOWN_ROLE = 3


class ProtocolError(ValueError):
    """The peer's bytes are not a valid FastCGI stream; the message names the problem."""


class Record(NamedTuple):
    """One record as received: its type (an int, maybe unknown), request id and content.

    A NamedTuple rather than a frozen dataclass: a request makes several, and
    a tuple is built in a fraction of the time.
    """

    type: int
    request_id: int
    content: bytes

    def describe(self) -> str:
        try:
            name = RecordType(self.type).name
        except ValueError:
            name = f"type {self.type}"
        return f"{name} record for request {self.request_id}"


# Record(...) runs a Python-level __new__; tuple.__new__ builds the same object in C.
_new_record = tuple.__new__


class RecordReader:
    """Cuts a byte stream into records.

    Holds at most one incomplete record plus whatever the last ``feed()``
    brought, so memory stays bounded whatever the peer claims.
    """

    def __init__(self) -> None:
        # What one recv() brought, read from ``_position`` on. Usually it holds
        # whole records, so the received bytes are used as they are, uncopied.
        self._data = b""
        self._position = 0

    def feed(self, data: bytes) -> None:
        if self._position < len(self._data):
            self._data = self._data[self._position:] + data  # an incomplete record
        else:
            self._data = bytes(data)
        self._position = 0

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as records."""
        return len(self._data) - self._position

    def next_record(self) -> Record | None:
        """The next complete record, or None until more bytes are fed."""
        data, start = self._data, self._position
        if len(data) - start < HEADER_LEN:
            return None
        version, kind, request_id, length, padding = HEADER.unpack_from(data, start)
        if version != VERSION_1:
            raise ProtocolError(f"unsupported FastCGI version {version} (expected 1)")
        content_start = start + HEADER_LEN
        end = content_start + length + padding
        if len(data) < end:
            return None
        self._position = end
        return _new_record(Record, (kind, request_id, data[content_start:content_start + length]))

    def records(self) -> Iterator[Record]:
        """Every complete record buffered so far."""
        while (record := self.next_record()) is not None:
            yield record


# -- encoding ---------------------------------------------------------------------------


def encode_record(kind: int, request_id: int, content: bytes = b"") -> bytes:
    """One record, padded to a multiple of 8 bytes as the specification recommends."""
    if len(content) > MAX_CONTENT:
        raise ValueError(f"record content of {len(content)} bytes exceeds {MAX_CONTENT}")
    padding = -len(content) & 7
    return HEADER.pack(VERSION_1, kind, request_id, len(content), padding) + content \
        + _PADDING[:padding]


def encode_stream(kind: int, request_id: int, data: bytes | memoryview) -> list[bytes]:
    """Records carrying ``data`` (none for empty data), each as full as allowed.

    Returns the pieces (header, content, padding) ready for one ``b"".join``
    or one scatter-gather send; slices of a memoryview are not copied here.
    """
    view = memoryview(data)
    pieces = []
    for start in range(0, len(view), MAX_CONTENT):
        chunk = view[start:start + MAX_CONTENT]
        padding = -len(chunk) & 7
        pieces.append(HEADER.pack(VERSION_1, kind, request_id, len(chunk), padding))
        pieces.append(chunk)
        if padding:
            pieces.append(_PADDING[:padding])
    return pieces


def encode_stream_end(kind: int, request_id: int) -> bytes:
    """The empty record that closes a stream."""
    return HEADER.pack(VERSION_1, kind, request_id, 0, 0)


@functools.lru_cache(maxsize=64)
def stream_end_and_end_request(kind: int, request_id: int) -> bytes:
    """The empty record closing a stream plus END_REQUEST (complete, status 0).

    The same bytes end nearly every response (request id 1): built once.
    """
    return encode_stream_end(kind, request_id) + end_request(request_id)


def encode_length(length: int) -> bytes:
    if length < 0x80:
        return bytes((length,))
    if length > 0x7FFFFFFF:
        raise ValueError(f"name or value of {length} bytes is too long for FastCGI")
    return _LONG_LENGTH.pack(length | 0x80000000)


def encode_pairs(pairs: Mapping[str | bytes, str | bytes] | Iterable[tuple]) -> bytes:
    """Name-value pairs; str is sent as latin-1, as CGI variables are bytes."""
    items = pairs.items() if isinstance(pairs, Mapping) else pairs
    out = bytearray()
    for name, value in items:
        name_bytes = name.encode("latin-1") if isinstance(name, str) else bytes(name)
        value_bytes = value.encode("latin-1") if isinstance(value, str) else bytes(value)
        out += encode_length(len(name_bytes)) + encode_length(len(value_bytes))
        out += name_bytes + value_bytes
    return bytes(out)


def begin_request_body(role: int, flags: int) -> bytes:
    return _BEGIN_BODY.pack(role, flags)


def end_request(request_id: int, app_status: int = 0,
                protocol_status: int = ProtocolStatus.REQUEST_COMPLETE) -> bytes:
    """A whole FCGI_END_REQUEST record."""
    return encode_record(RecordType.END_REQUEST, request_id,
                         _END_BODY.pack(app_status & 0xFFFFFFFF, protocol_status))


def unknown_type(kind: int) -> bytes:
    """A whole FCGI_UNKNOWN_TYPE record answering a management record of type ``kind``."""
    return encode_record(RecordType.UNKNOWN_TYPE, NULL_REQUEST_ID, _UNKNOWN_TYPE_BODY.pack(kind))


# -- decoding ---------------------------------------------------------------------------


def parse_begin_request(content: bytes) -> tuple[int, int]:
    """(role, flags) of an FCGI_BEGIN_REQUEST body."""
    if len(content) != _BEGIN_BODY.size:
        raise ProtocolError(f"BEGIN_REQUEST body of {len(content)} bytes (expected 8)")
    return _BEGIN_BODY.unpack(content)


def parse_end_request(content: bytes) -> tuple[int, int]:
    """(app_status, protocol_status) of an FCGI_END_REQUEST body."""
    if len(content) != _END_BODY.size:
        raise ProtocolError(f"END_REQUEST body of {len(content)} bytes (expected 8)")
    return _END_BODY.unpack(content)


def decode_pairs(data: bytes) -> dict[str, str]:
    """Decode a whole name-value stream in one pass; later duplicates win.

    Names and values become str by latin-1 ("bytes as str"), which is what
    PEP 3333 asks for and never fails. A pair may span records, so this runs
    on the joined stream, not per record.

    The stream is decoded once: latin-1 maps each byte to one character, so
    byte offsets are string offsets and each name and value is a slice.
    """
    text = data.decode("latin-1")
    pairs: dict[str, str] = {}
    position, end = 0, len(data)
    try:
        while position < end:
            # One-byte lengths (< 128) are the rule: read them inline. Reading past
            # the end raises IndexError, which is cheaper than checking every time.
            name_length = data[position]
            if name_length < 0x80:
                position += 1
            else:
                name_length, position = _decode_length(data, position, end)
            value_length = data[position]
            if value_length < 0x80:
                position += 1
            else:
                value_length, position = _decode_length(data, position, end)
            name_end = position + name_length
            value_end = name_end + value_length
            if value_end > end:
                raise ProtocolError(
                    f"name-value pair of {name_length}+{value_length} bytes runs past the "
                    f"end of its stream ({end - position} bytes left)")
            pairs[text[position:name_end]] = text[name_end:value_end]
            position = value_end
    except IndexError:
        raise ProtocolError(
            "name-value stream ends between a name length and its value length") from None
    return pairs


def _decode_length(data: bytes, position: int, end: int) -> tuple[int, int]:
    if position >= end:
        raise ProtocolError("name-value stream ends between a name length and its value length")
    first = data[position]
    if not first & 0x80:
        return first, position + 1
    if position + 4 > end:
        raise ProtocolError("name-value stream ends inside a 4-byte length")
    return _LONG_LENGTH.unpack_from(data, position)[0] & 0x7FFFFFFF, position + 4
