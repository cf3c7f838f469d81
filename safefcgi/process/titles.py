"""Process titles, so ``ps`` and ``top`` tell master, idle and busy children apart.

setproctitle is an optional extra (``pip install safefcgi[titles]``); without
it every function here does nothing. A busy child shows the method and the
path of its request but never the query string: anyone on the machine can
read process titles, and query strings carry tokens.
"""

from __future__ import annotations

try:
    from setproctitle import setproctitle as _setproctitle
except ImportError:  # the extra is not installed: titles stay as exec left them
    _setproctitle = None

TITLE_LIMIT = 200  # characters of a busy child's request shown

MASTER = "safefcgi: master [{settings}]"
CHILD_IDLE = "safefcgi: child idle"
CHILD_BUSY = "safefcgi: child busy {method} {path}"


def available() -> bool:
    return _setproctitle is not None


def set_title(title: str) -> None:
    if _setproctitle is not None:
        _setproctitle(title)


def master(settings_module: str) -> None:
    set_title(MASTER.format(settings=settings_module))


def child_idle() -> None:
    set_title(CHILD_IDLE)


def child_busy(method: str, uri: str) -> None:
    if _setproctitle is not None:
        path = uri.partition("?")[0]
        _setproctitle(CHILD_BUSY.format(method=method, path=path)[:TITLE_LIMIT])
