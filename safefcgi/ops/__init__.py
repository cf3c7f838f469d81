"""Operator tools on the request path: the status and ping pages, the access and slow logs.

operability.py turns the operability options into wrappers around the application and the
log files the master opens before the first fork.
"""
