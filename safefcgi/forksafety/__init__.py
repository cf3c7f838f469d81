"""Fork safety: what runs around each fork so no child inherits a connection of the parent.

The Django lifecycle (lifecycle.py) loads the project once in the parent and closes what it
opened before the first fork; hooks.py runs it and the user's own hooks in order; the
doctor (``safefcgi check``) reports what a fork would hand to every child. The only layer,
with ``management/``, that imports Django at module level.
"""
