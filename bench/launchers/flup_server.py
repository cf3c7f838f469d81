"""Stock flup6 prefork, started the way ``manage.py runfcgi method=prefork`` did.

``--app MODULE:NAME`` serves a plain WSGI application instead of Django.
"""

import argparse
import importlib
import os


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settings", help="Django settings module")
    parser.add_argument("--app", help="MODULE:NAME of a plain WSGI application")
    parser.add_argument("--socket", required=True)
    parser.add_argument("--children", type=int, default=2)
    args = parser.parse_args()
    if args.app:
        module, name = args.app.split(":")
        application = getattr(importlib.import_module(module), name)
    else:
        os.environ["DJANGO_SETTINGS_MODULE"] = args.settings
        import django
        from django.core.wsgi import get_wsgi_application
        from django.urls import get_resolver

        django.setup()
        application = get_wsgi_application()
        get_resolver().url_patterns  # noqa: B018 - as runfcgi's checks did

    from flup.server.fcgi_fork import WSGIServer

    WSGIServer(application, bindAddress=args.socket, minSpare=args.children,
               maxSpare=args.children, maxChildren=args.children, debug=False).run()


if __name__ == "__main__":
    main()
