#!/usr/bin/env python
"""The fixture project's manage.py, as a Django project would have it."""

import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "fixturesite_settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
