"""A WSGI application without Django: what is left is the server's own cost."""

BODY = b"Hello from plain WSGI\n"
HEADERS = [("Content-Type", "text/plain"), ("Content-Length", str(len(BODY)))]


def application(environ, start_response):
    start_response("200 OK", list(HEADERS))
    return [BODY]
