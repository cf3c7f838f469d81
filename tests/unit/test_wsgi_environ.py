"""The PEP 3333 environ built from what real web servers send, and wsgi.input."""

import io
import sys
import warnings
from wsgiref.validate import WSGIWarning, check_environ

import pytest
from hypothesis import given
from hypothesis import strategies as st

from safefcgi.fastcgi.wsgi import RequestBody, build_environ

# Params as captured from the web servers on this machine, trimmed to what matters.
NGINX_STOCK_FASTCGI_PARAMS = {
    "QUERY_STRING": "q=%C3%A9", "REQUEST_METHOD": "GET", "CONTENT_TYPE": "",
    "CONTENT_LENGTH": "", "SCRIPT_NAME": "/caf\xc3\xa9/x/y",
    "REQUEST_URI": "/caf%C3%A9/x%2Fy?q=%C3%A9", "DOCUMENT_URI": "/caf\xc3\xa9/x/y",
    "SERVER_PROTOCOL": "HTTP/1.1", "REQUEST_SCHEME": "http", "SERVER_PORT": "8080",
    "SERVER_NAME": "", "HTTP_HOST": "127.0.0.1",
}
NGINX_POST = {
    **NGINX_STOCK_FASTCGI_PARAMS, "REQUEST_METHOD": "POST", "CONTENT_LENGTH": "3",
    "CONTENT_TYPE": "application/x-www-form-urlencoded", "HTTP_CONTENT_LENGTH": "3",
    "HTTP_CONTENT_TYPE": "application/x-www-form-urlencoded",
}
LIGHTTPD_FIX_ROOT = {
    "SCRIPT_NAME": "", "PATH_INFO": "/caf\xc3\xa9/x/y", "QUERY_STRING": "q=%C3%A9",
    "REQUEST_URI": "/caf%C3%A9/x%2Fy?q=%C3%A9", "REQUEST_METHOD": "GET",
    "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "8080", "SERVER_PROTOCOL": "HTTP/1.1",
}
# lighttpd with "/" as the prefix and no fix-root-scriptname: it takes the
# first path segment for a script name.
LIGHTTPD_ROOT_UNFIXED = {
    **LIGHTTPD_FIX_ROOT, "SCRIPT_NAME": "/caf\xc3\xa9", "PATH_INFO": "/x/y",
}
LIGHTTPD_ROOT_UNFIXED_SLASH = {
    **LIGHTTPD_FIX_ROOT, "SCRIPT_NAME": "/", "REQUEST_URI": "/", "QUERY_STRING": "",
}
del LIGHTTPD_ROOT_UNFIXED_SLASH["PATH_INFO"]
LIGHTTPD_MOUNTED_AT_APP = {
    **LIGHTTPD_FIX_ROOT, "SCRIPT_NAME": "/app", "PATH_INFO": "/x/y",
    "REQUEST_URI": "/app/x/y?z=1", "QUERY_STRING": "z=1",
}
CGI_FCGI_MINIMAL = {"REQUEST_METHOD": "GET", "REQUEST_URI": "/caf%C3%A9/?a=1"}


def environ_for(params, script_name=None, body=b""):
    return build_environ(dict(params), body=RequestBody(iter([body, b""]).__next__),
                         errors=sys.stderr, multithread=False, multiprocess=True,
                         script_name=script_name)


def paths(environ):
    return environ["SCRIPT_NAME"], environ["PATH_INFO"], environ["QUERY_STRING"]


@pytest.mark.parametrize("params", [
    NGINX_STOCK_FASTCGI_PARAMS, NGINX_POST, LIGHTTPD_FIX_ROOT, LIGHTTPD_ROOT_UNFIXED,
    LIGHTTPD_ROOT_UNFIXED_SLASH, LIGHTTPD_MOUNTED_AT_APP, CGI_FCGI_MINIMAL, {},
], ids=["nginx-stock", "nginx-post", "lighttpd-fix-root", "lighttpd-unfixed",
        "lighttpd-unfixed-slash", "lighttpd-prefix", "cgi-fcgi", "nothing"])
@pytest.mark.parametrize("script_name", [None, ""])
def test_environ_passes_wsgiref_validate(params, script_name):
    with warnings.catch_warnings():
        warnings.simplefilter("error", WSGIWarning)
        check_environ(environ_for(params, script_name))


def test_nginx_stock_params_put_the_whole_path_in_path_info():
    # fastcgi_params sets SCRIPT_NAME to the path and no PATH_INFO at all.
    assert paths(environ_for(NGINX_STOCK_FASTCGI_PARAMS)) == ("", "/caf\xc3\xa9/x/y",
                                                              "q=%C3%A9")


def test_lighttpd_fix_root_scriptname_is_taken_as_sent():
    assert paths(environ_for(LIGHTTPD_FIX_ROOT)) == ("", "/caf\xc3\xa9/x/y", "q=%C3%A9")


def test_lighttpd_root_without_fix_root_scriptname_needs_the_mount_point():
    # Indistinguishable from a site mounted at /café: the operator says which.
    assert paths(environ_for(LIGHTTPD_ROOT_UNFIXED))[:2] == ("/caf\xc3\xa9", "/x/y")
    assert paths(environ_for(LIGHTTPD_ROOT_UNFIXED, script_name=""))[:2] == \
        ("", "/caf\xc3\xa9/x/y")


def test_lighttpd_root_request_without_fix_root_scriptname_is_path_slash():
    # SCRIPT_NAME "/" is not allowed by PEP 3333; it is the path.
    assert paths(environ_for(LIGHTTPD_ROOT_UNFIXED_SLASH))[:2] == ("", "/")


def test_a_prefix_mount_keeps_the_web_servers_split():
    assert paths(environ_for(LIGHTTPD_MOUNTED_AT_APP))[:2] == ("/app", "/x/y")
    assert paths(environ_for(LIGHTTPD_MOUNTED_AT_APP, "/app"))[:2] == ("/app", "/x/y")


def test_the_mount_point_itself_is_script_name_with_an_empty_path():
    params = {**LIGHTTPD_MOUNTED_AT_APP, "PATH_INFO": "", "REQUEST_URI": "/app"}
    assert paths(environ_for(params, "/app"))[:2] == ("/app", "")


def test_a_path_outside_the_mount_point_is_passed_whole():
    params = {**LIGHTTPD_FIX_ROOT, "PATH_INFO": "/application/x"}
    assert paths(environ_for(params, "/app"))[:2] == ("", "/application/x")


def test_request_uri_is_the_fallback_for_path_and_query():
    assert paths(environ_for(CGI_FCGI_MINIMAL)) == ("", "/caf\xc3\xa9/", "a=1")


def test_no_path_at_all_is_slash():
    environ = environ_for({})
    assert paths(environ) == ("", "/", "")
    assert environ["SERVER_NAME"] == "localhost" and environ["SERVER_PORT"] == "80"


def test_nginx_duplicated_content_headers_are_dropped():
    environ = environ_for(NGINX_POST)
    assert "HTTP_CONTENT_LENGTH" not in environ and "HTTP_CONTENT_TYPE" not in environ
    assert environ["CONTENT_LENGTH"] == "3"


@pytest.mark.parametrize("params, scheme", [
    ({"HTTPS": "on"}, "https"), ({"HTTPS": "ON"}, "https"), ({"HTTPS": "1"}, "https"),
    ({"HTTPS": "off"}, "http"), ({"HTTPS": ""}, "http"), ({}, "http"),
    ({"REQUEST_SCHEME": "https"}, "https"), ({"HTTPS": "off", "REQUEST_SCHEME": "https"}, "http"),
])
def test_url_scheme_follows_https(params, scheme):
    assert environ_for(params)["wsgi.url_scheme"] == scheme


def test_wsgi_keys():
    environ = environ_for({})
    assert environ["wsgi.version"] == (1, 0)
    assert environ["wsgi.multiprocess"] is True and environ["wsgi.multithread"] is False
    assert environ["wsgi.run_once"] is False and environ["wsgi.input_terminated"] is True


# -- wsgi.input ---------------------------------------------------------------------------


class Source:
    """Hands out chunks like the connection does, counting how many were taken."""

    def __init__(self, chunks):
        self.chunks = [c for c in chunks if c] + [b""]
        self.taken = 0

    def __call__(self):
        if self.taken >= len(self.chunks):
            raise AssertionError("read past the end of the stream")
        chunk = self.chunks[self.taken]
        self.taken += 1
        return chunk


chunk_lists = st.lists(st.binary(max_size=50), max_size=12)


@given(chunk_lists, st.lists(st.integers(-1, 40), min_size=1, max_size=30))
def test_read_returns_the_body_in_order_whatever_the_sizes(chunks, sizes):
    body = RequestBody(Source(chunks))
    out = b"".join(body.read(size) for size in sizes) + body.read()
    assert out == b"".join(chunks)
    assert body.read(10) == b"" and body.read() == b""


@given(chunk_lists, st.integers(0, 700))
def test_reading_stops_at_content_length(chunks, length):
    body = RequestBody(Source(chunks), length)
    assert body.read() == b"".join(chunks)[:length]


@given(st.lists(st.binary(max_size=30), max_size=10), st.integers(-1, 12))
def test_readline_and_iteration_split_lines_like_a_file(chunks, size):
    data = b"".join(chunks)
    assert list(RequestBody(Source(chunks))) == io.BytesIO(data).readlines()
    body, reference = RequestBody(Source(chunks)), io.BytesIO(data)
    for _ in range(len(data) + 2):
        assert body.readline(size) == reference.readline(size)


@pytest.mark.parametrize("hint", [-1, 0, 1, 2, 3, 5, 100])
def test_readlines_honours_the_hint_like_a_file(hint):
    data = b"a\nbb\nccc\n"
    body, reference = RequestBody(Source([data[:4], data[4:]])), io.BytesIO(data)
    assert body.readlines(hint) == reference.readlines(hint)
    assert body.readlines() == reference.readlines()


def test_only_what_is_asked_for_is_pulled_from_the_connection():
    source = Source([b"x" * 100] * 1000)
    body = RequestBody(source)
    body.read(150)
    assert source.taken == 2  # 100 000 bytes available, two chunks read


def test_a_zero_content_length_never_touches_the_connection():
    source = Source([b"unexpected"])
    assert RequestBody(source, 0).read() == b""
    assert source.taken == 0
