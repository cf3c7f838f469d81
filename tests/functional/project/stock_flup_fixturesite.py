"""The fixture project on stock flup6 prefork, to show which protocol tests flup fails.

    PROTOCOL_TESTS_SERVER=flup pytest tests/functional/test_protocol_conformance.py
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ["DJANGO_SETTINGS_MODULE"] = "fixturesite_settings"

import django  # noqa: E402
from django.core.wsgi import get_wsgi_application  # noqa: E402

django.setup()
application = get_wsgi_application()

from flup.server.fcgi_fork import WSGIServer  # noqa: E402

WSGIServer(application, bindAddress=sys.argv[1], minSpare=1, maxSpare=1, maxChildren=1,
           debug=False).run()
