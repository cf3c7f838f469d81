"""``safefcgi run`` serving benchsite.plain instead of a Django project.

safefcgi serves Django projects only; to measure its own overhead, this
launcher hands it a plain WSGI application in place of the project's. Every
other part (master, children, fork hooks, protocol) is the real one.
Usage: safefcgi_plain.py [safefcgi run options] (settings: benchsite.plain_settings)
"""

import sys

from safefcgi import cli
from safefcgi.forksafety import lifecycle


def load_plain_application(settings_module: str, wsgi_app: str | None = None):
    import django

    lifecycle.os.environ["DJANGO_SETTINGS_MODULE"] = settings_module
    django.setup()
    from benchsite.plain import application

    return application


if __name__ == "__main__":
    lifecycle.load_application = load_plain_application
    sys.exit(cli.main(["run", "benchsite.plain_settings", *sys.argv[1:]]))
