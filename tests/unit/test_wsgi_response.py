"""The WSGI response side: headers, start_response/write, close(), one send per block."""

import pytest

from safefcgi.fastcgi.wsgi import ResponseWriter, encode_head, is_buffered, run_application


class Sends:
    """Stands in for the connection: records every emit(data, final) call."""

    def __init__(self):
        self.calls = []

    def __call__(self, data, final):
        self.calls.append((bytes(data), final))


def test_latin1_header_values_are_sent_as_latin1():
    # flup6 encoded headers as ASCII and crashed on this valid header.
    head = encode_head("200 OK", [("Content-Disposition", "attachment; filename=café.txt")])
    assert b"filename=caf\xe9.txt" in head
    assert head.startswith(b"Status: 200 OK\r\n") and head.endswith(b"\r\n\r\n")


def test_status_line_is_passed_through_verbatim():
    head = encode_head("299 Quite Unusual Reason", [])
    assert head == b"Status: 299 Quite Unusual Reason\r\n\r\n"


def test_header_value_outside_latin1_is_refused():
    with pytest.raises(UnicodeEncodeError):
        encode_head("200 OK", [("X-Name", "日本")])


@pytest.mark.parametrize("header", [("X-Evil", "a\r\nSet-Cookie: x=1"), ("X:Evil", "a")])
def test_header_injection_is_refused(header):
    with pytest.raises(ValueError):
        encode_head("200 OK", [header])


@pytest.mark.parametrize("status", ["OK", "2000", b"200 OK", "20 OK"])
def test_malformed_status_is_refused(status):
    with pytest.raises(ValueError):
        encode_head(status, [])


def test_headers_travel_with_the_first_body_block():
    sends = Sends()
    writer = ResponseWriter(sends)
    writer.start_response("200 OK", [("Content-Type", "text/plain")])
    writer.write(b"hello")
    writer.write(b" world")
    writer.finish()
    assert sends.calls == [(b"Status: 200 OK\r\nContent-Type: text/plain\r\n\r\nhello", False),
                           (b" world", False), (b"", True)]


def test_an_empty_body_still_sends_the_headers_with_the_end():
    sends = Sends()
    writer = ResponseWriter(sends)
    writer.start_response("204 No Content", [])
    writer.finish()
    assert sends.calls == [(b"Status: 204 No Content\r\n\r\n", True)]


def test_start_response_twice_needs_exc_info():
    writer = ResponseWriter(Sends())
    writer.start_response("200 OK", [])
    with pytest.raises(AssertionError):
        writer.start_response("500 Internal Server Error", [])
    writer.start_response("500 Internal Server Error", [], exc_info=(None, None, None))


def test_exc_info_after_headers_were_sent_reraises():
    writer = ResponseWriter(Sends())
    writer.start_response("200 OK", [])
    writer.write(b"partial")
    error = ValueError("late failure")
    with pytest.raises(ValueError, match="late failure"):
        writer.start_response("500 Internal Server Error", [], (ValueError, error, None))


def test_write_before_start_response_is_an_error():
    with pytest.raises(AssertionError):
        ResponseWriter(Sends()).write(b"x")


def test_str_body_is_refused():
    writer = ResponseWriter(Sends())
    writer.start_response("200 OK", [])
    with pytest.raises(TypeError):
        writer.write("text")


class ClosingResult:
    """A streaming result that records close()."""

    def __init__(self, blocks, fail_at=None):
        self.blocks = blocks
        self.fail_at = fail_at
        self.closed = False

    def __iter__(self):
        for index, block in enumerate(self.blocks):
            if index == self.fail_at:
                raise RuntimeError("generator failed")
            yield block

    def close(self):
        self.closed = True


def test_a_buffered_result_ends_with_its_last_block_in_one_send():
    sends = Sends()

    def app(environ, start_response):
        start_response("200 OK", [("Content-Length", "5")])
        return [b"hello"]

    run_application(app, {}, ResponseWriter(sends))
    assert sends.calls == [(b"Status: 200 OK\r\nContent-Length: 5\r\n\r\nhello", True)]


def test_a_streaming_result_sends_each_block_before_asking_for_the_next():
    sends = Sends()
    result = ClosingResult([b"a", b"b"])
    seen_before_next = []

    def app(environ, start_response):
        start_response("200 OK", [])
        for block in result:
            seen_before_next.append(len(sends.calls))
            yield block

    run_application(app, {}, ResponseWriter(sends))
    assert seen_before_next == [0, 1]  # block n was sent before block n+1 was produced
    assert [final for _, final in sends.calls] == [False, False, True]


def test_close_is_called_when_iteration_fails():
    result = ClosingResult([b"a", b"b"], fail_at=1)

    def app(environ, start_response):
        start_response("200 OK", [])
        return result

    with pytest.raises(RuntimeError):
        run_application(app, {}, ResponseWriter(Sends()))
    assert result.closed


def test_write_callable_output_comes_before_the_iterable():
    sends = Sends()

    def app(environ, start_response):
        write = start_response("200 OK", [])
        write(b"from write ")
        return [b"from iterable"]

    run_application(app, {}, ResponseWriter(sends))
    assert b"".join(data for data, _ in sends.calls).endswith(b"from write from iterable")


class DjangoLike:
    def __init__(self, streaming):
        self.streaming = streaming

    def __iter__(self):
        return iter([b"x"])


def test_only_results_that_say_they_are_in_memory_count_as_buffered():
    assert is_buffered([b"x"]) and is_buffered((b"x",))
    assert is_buffered(DjangoLike(streaming=False))
    assert not is_buffered(DjangoLike(streaming=True))
    assert not is_buffered(iter([b"x"]))
