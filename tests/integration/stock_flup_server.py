"""Serve a Django project with stock flup6 the way ``manage.py runfcgi method=prefork`` did.

This is the baseline the integration tests compare safefcgi against: the
master sets Django up, builds the WSGI handler and loads the URLconf (runfcgi
ran the system checks, which import it) before flup forks its children, so any
database connection opened on the way is inherited by every child.
"""

import argparse
import os
import sys


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("settings", help="Django settings module, e.g. mysite.settings")
    parser.add_argument("--pythonpath", help="directory to put first on sys.path")
    parser.add_argument("--socket", required=True, help="unix socket to listen on")
    # runfcgi's defaults, except maxchildren which the tests keep small.
    parser.add_argument("--minspare", type=int, default=2)
    parser.add_argument("--maxspare", type=int, default=5)
    parser.add_argument("--maxchildren", type=int, default=50)
    parser.add_argument("--maxrequests", type=int, default=0)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.pythonpath:
        sys.path.insert(0, args.pythonpath)
    os.environ["DJANGO_SETTINGS_MODULE"] = args.settings

    import django
    from django.core.wsgi import get_wsgi_application
    from django.urls import get_resolver

    django.setup()
    application = get_wsgi_application()
    get_resolver().url_patterns  # noqa: B018 -- imports the URLconf, as the checks did

    from flup.server.fcgi_fork import WSGIServer

    WSGIServer(
        application,
        bindAddress=args.socket,
        minSpare=args.minspare,
        maxSpare=args.maxspare,
        maxChildren=args.maxchildren,
        maxRequests=args.maxrequests,
        debug=False,
    ).run()


if __name__ == "__main__":
    main()
