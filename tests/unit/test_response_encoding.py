"""The WSGI response side of the protocol adapter (pure logic, no sockets)."""

import pytest

from safefcgi.protocol import _encode_head, _ResponseWriter


class RecordingStream:
    def __init__(self):
        self.writes = []

    def write(self, data):
        self.writes.append(data)


def test_latin1_header_values_are_sent_as_latin1():
    # flup6 encoded headers as ASCII and crashed on this valid header.
    head = _encode_head("200 OK", [("Content-Disposition", "attachment; filename=café.txt")])
    assert b"filename=caf\xe9.txt" in head
    assert head.startswith(b"Status: 200 OK\r\n") and head.endswith(b"\r\n\r\n")


def test_header_value_outside_latin1_is_refused():
    with pytest.raises(UnicodeEncodeError):
        _encode_head("200 OK", [("X-Name", "日本")])


@pytest.mark.parametrize("status", ["OK", "2000", b"200 OK"])
def test_malformed_status_is_refused(status):
    with pytest.raises(ValueError):
        _encode_head(status, [])


def test_headers_travel_with_the_first_body_chunk():
    stream = RecordingStream()
    writer = _ResponseWriter(stream)
    writer.start_response("200 OK", [("Content-Type", "text/plain")])
    writer.write(b"hello")
    writer.write(b" world")
    writer.finish()
    assert stream.writes == [b"Status: 200 OK\r\nContent-Type: text/plain\r\n\r\nhello",
                             b" world"]


def test_an_empty_body_still_sends_the_headers():
    stream = RecordingStream()
    writer = _ResponseWriter(stream)
    writer.start_response("204 No Content", [])
    writer.finish()
    assert stream.writes == [b"Status: 204 No Content\r\n\r\n"]


def test_start_response_twice_needs_exc_info():
    writer = _ResponseWriter(RecordingStream())
    writer.start_response("200 OK", [])
    with pytest.raises(AssertionError):
        writer.start_response("500 Internal Server Error", [])
    writer.start_response("500 Internal Server Error", [], exc_info=(None, None, None))


def test_exc_info_after_headers_were_sent_reraises():
    writer = _ResponseWriter(RecordingStream())
    writer.start_response("200 OK", [])
    writer.write(b"partial")
    error = ValueError("late failure")
    with pytest.raises(ValueError, match="late failure"):
        writer.start_response("500 Internal Server Error", [], (ValueError, error, None))
