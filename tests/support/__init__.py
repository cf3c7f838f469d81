"""What the tests share: processes, waits, ports, servers under test, web servers, databases.

One module per kind of thing, imported by the test modules of every tier; a
``conftest.py`` holds fixtures only. Nothing here is collected as a test.
"""
