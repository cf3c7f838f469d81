"""The FastCGI and WSGI layer: records, one web-server connection, the WSGI side, a client.

Nothing here knows about processes or Django: a connection handler gets a socket and a
WSGI application and serves every request on it. Process management decides who calls it.
"""
