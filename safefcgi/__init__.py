"""safefcgi: a FastCGI prefork server for Django that never shares a database connection."""

__version__ = "0.2.0"
