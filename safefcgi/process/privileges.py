"""Who the children run as: --user/--group, and the refusal to serve as root.

The parent binds the socket first (a path under /run needs root), then each
child drops to the configured user right after fork, before any hook or
request runs. The parent keeps its identity: it has to reopen log files,
re-execute itself on reload and remove the socket and pid file on exit,
and it never serves a request.
"""

from __future__ import annotations

import grp
import logging
import os
import pwd
from dataclasses import dataclass

from safefcgi.errors import ConfigError, SafeFCGIError

log = logging.getLogger("safefcgi.privileges")

ROOT_UID = 0


@dataclass(frozen=True)
class Identity:
    """A resolved user and group, with the user's supplementary groups."""

    user: str
    uid: int
    gid: int
    groups: tuple[int, ...]

    def describe(self) -> str:
        return f"{self.user} (uid {self.uid}, gid {self.gid})"


def _lookup_user(name: str) -> pwd.struct_passwd:
    try:
        return pwd.getpwuid(int(name)) if name.isdigit() else pwd.getpwnam(name)
    except KeyError:
        raise ConfigError(f"unknown user {name!r}") from None


def _lookup_group(name: str) -> int:
    try:
        return grp.getgrgid(int(name)).gr_gid if name.isdigit() else grp.getgrnam(name).gr_gid
    except KeyError:
        raise ConfigError(f"unknown group {name!r}") from None


def resolve_identity(user: str, group: str | None = None) -> Identity:
    """Look the names up now, so a typo fails before anything starts."""
    entry = _lookup_user(user)
    gid = _lookup_group(group) if group is not None else entry.pw_gid
    groups = tuple(sorted(set(os.getgrouplist(entry.pw_name, gid))))
    return Identity(entry.pw_name, entry.pw_uid, gid, groups)


def resolve_owner(spec: str) -> tuple[int, int]:
    """``USER`` or ``USER:GROUP`` (either part may be numeric) as (uid, gid); -1 keeps."""
    user, _, group = spec.partition(":")
    uid = _lookup_user(user).pw_uid if user else -1
    gid = _lookup_group(group) if group else -1
    return uid, gid


def children_identity(user: str | None, group: str | None,
                      allow_root: bool) -> Identity | None:
    """The identity children switch to, or None to stay as we are.

    Refuses (SafeFCGIError) to let children serve requests as root unless
    the operator said so with --allow-root.
    """
    identity = resolve_identity(user, group) if user is not None else None
    if identity is None:
        if os.geteuid() == ROOT_UID and not allow_root:
            raise SafeFCGIError("refusing to serve requests as root: give --user (and "
                                "--group) for the children, or --allow-root")
        return None
    if identity.uid == ROOT_UID and not allow_root:
        raise SafeFCGIError(f"--user {user} is root: give another user, or --allow-root")
    if os.geteuid() != ROOT_UID and identity.uid != os.geteuid():
        raise SafeFCGIError(f"--user {user} needs root to switch to; safefcgi runs as uid "
                            f"{os.geteuid()}")
    return identity


def drop_privileges(identity: Identity | None) -> None:
    """Become ``identity`` for good (groups first: after setuid they cannot change)."""
    if identity is None or (os.geteuid() == identity.uid and os.getegid() == identity.gid):
        return
    os.setgroups(list(identity.groups))
    os.setgid(identity.gid)
    os.setuid(identity.uid)
