"""Every option safefcgi accepts, cast and validated once, before anything forks.

The table ``OPTIONS`` is the single source of truth: the ``safefcgi run``
command line, runfcgi's ``key=value`` spelling and the ``manage.py runfcgi``
command all feed raw strings through it and get the same ``ServerConfig``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from safefcgi.errors import ConfigError
from safefcgi.process.peers import parse_networks
from safefcgi.process.privileges import resolve_identity, resolve_owner

Method = Literal["prefork", "threaded"]

METHOD_ALIASES = {
    "prefork": "prefork", "fork": "prefork", "threaded": "threaded", "thread": "threaded",
}
TRUE_WORDS = frozenset({"1", "true", "yes", "on", "t"})  # "t"/"f": runfcgi took them
FALSE_WORDS = frozenset({"0", "false", "no", "off", "f"})


def _method(text: str) -> str:
    try:
        return METHOD_ALIASES[text.lower()]
    except KeyError:
        raise ValueError("expected prefork or threaded") from None


def _protocol(text: str) -> str:
    if text.lower() != "fcgi":
        raise ValueError(f"only fcgi is served; {text} (a protocol runfcgi also offered) is not")
    return "fcgi"


def _bool(text: str | bool) -> bool:
    if isinstance(text, bool):
        return text
    word = text.lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ValueError("expected true or false")


def _int_at_least(minimum: int) -> Callable[[str], int]:
    def cast(text: str) -> int:
        try:
            value = int(text)
        except (TypeError, ValueError):
            raise ValueError("expected a whole number") from None
        if value < minimum:
            raise ValueError(f"must be at least {minimum}")
        return value

    return cast


def _port(text: str) -> int:
    value = _int_at_least(1)(text)
    if value > 65535:
        raise ValueError("must be at most 65535")
    return value


def _octal(text: str) -> int:
    try:
        value = int(str(text), 8)
    except ValueError:
        raise ValueError("expected an octal number such as 022") from None
    if not 0 <= value <= 0o777:
        raise ValueError("must be between 000 and 777")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise ValueError("expected a number of seconds") from None
    if value < 0:
        raise ValueError("must not be negative")
    return value


def _client_list(text: str) -> tuple[str, ...]:
    """``ADDR[,ADDR]``: each an IPv4/IPv6 address or a CIDR network; checked once here."""
    entries = tuple(item.strip() for item in str(text).split(",") if item.strip())
    if not entries:
        raise ValueError("expected addresses such as 127.0.0.1,::1 or 10.0.0.0/8")
    parse_networks(entries)
    return entries


SIZE_SUFFIXES = {"": 1, "k": 1024, "m": 1024 ** 2, "g": 1024 ** 3}


def _size(text: str) -> int:
    """A byte count, with an optional K, M or G suffix (powers of 1024)."""
    word = str(text).strip().lower().removesuffix("b")
    number, suffix = (word[:-1], word[-1]) if word[-1:] in SIZE_SUFFIXES else (word, "")
    try:
        value = int(number)
    except ValueError:
        raise ValueError("expected a number of bytes such as 1048576 or 1M") from None
    if value < 0:
        raise ValueError("must not be negative")
    return value * SIZE_SUFFIXES[suffix]


def _mount_point(text: str) -> str:
    if not str(text).startswith("/"):
        raise ValueError("expected a URL path starting with / (just / for the whole site)")
    return str(text).rstrip("/")


def _url_path(text: str) -> str:
    if not str(text).startswith("/") or any(c in str(text) for c in "?# "):
        raise ValueError("expected a URL path such as /fcgi-status (no query string)")
    return str(text)


LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})


def listen_address(text: str) -> str | tuple[str, int]:
    """A unix socket path (it has a /) or HOST:PORT, [IPV6]:PORT."""
    if "/" in text:
        return text
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise ValueError("expected a unix socket path (with a /) or HOST:PORT")
    return host.strip("[]"), _port(port)


def _loopback_address(text: str) -> str:
    """--status-listen: a unix path, or a TCP port on loopback only (it needs no web server
    to be read, so it must not be reachable from other hosts)."""
    address = listen_address(str(text))
    if isinstance(address, tuple) and address[0] not in LOOPBACK_NAMES \
            and not address[0].startswith("127."):
        raise ValueError("a TCP status socket listens on loopback only (127.0.0.1:PORT or "
                         "[::1]:PORT); use a unix socket path for anything else")
    return str(text)


def _choice(*words: str) -> Callable[[str], str]:
    def cast(text: str) -> str:
        if str(text).lower() not in words:
            raise ValueError("expected " + " or ".join(words))
        return str(text).lower()

    return cast


def _text(text: str) -> str:
    if not str(text).strip():
        raise ValueError("must not be empty")
    return str(text)


@dataclass(frozen=True)
class Option:
    """One option: its name, how to cast a raw value, its default and its help."""

    name: str
    cast: Callable[[Any], Any]
    default: Any
    help: str
    flag: bool = False  # a boolean switch: --name / --no-name
    repeatable: bool = False  # may be given several times; collects a list
    runfcgi: bool = True  # part of runfcgi's key=value vocabulary
    metavar: str | None = None


OPTIONS: tuple[Option, ...] = (
    Option("protocol", _protocol, "fcgi", "wire protocol; only fcgi is served", metavar="fcgi"),
    Option("method", _method, "prefork", "prefork (a pool of processes) or threaded",
           metavar="prefork|threaded"),
    Option("socket", _text, None, "unix socket path to listen on", metavar="PATH"),
    Option("host", _text, None, "TCP address to listen on (with --port)", metavar="HOST"),
    Option("port", _port, None, "TCP port to listen on (with --host)", metavar="PORT"),
    Option("umask", _octal, None, "umask of the server and its children (so also of the "
           "unix socket file)", metavar="OCTAL"),
    Option("minspare", _int_at_least(0), 2, "fewest idle children (threads when threaded)",
           metavar="N"),
    Option("maxspare", _int_at_least(1), 5, "most idle children (threads when threaded)",
           metavar="N"),
    Option("maxchildren", _int_at_least(1), 50, "most children in the pool", metavar="N"),
    Option("maxrequests", _int_at_least(0), 0,
           "requests a child serves before it is replaced; 0 means unlimited", metavar="N"),
    Option("maxthreads", _int_at_least(1), None,
           "most threads in threaded mode (default: maxchildren)", metavar="N"),
    Option("daemonize", _bool, False, "detach from the terminal and run in the background",
           flag=True),
    Option("pidfile", _text, None, "write the parent's pid here; removed on exit",
           metavar="PATH"),
    Option("workdir", _text, None, "change to this directory before serving", metavar="DIR"),
    Option("outlog", _text, None, "append standard output to this file", metavar="PATH"),
    Option("errlog", _text, None, "append standard error (the log) to this file",
           metavar="PATH"),
    Option("debug", _bool, False,
           "send tracebacks of crashing requests to the client (never in production)",
           flag=True),
    Option("pythonpath", _text, [], "directory prepended to sys.path (repeatable)",
           repeatable=True, runfcgi=False, metavar="DIR"),
    Option("lazy", _bool, False, "each child imports the project itself after fork, "
           "instead of the parent once before it (for projects that start threads at "
           "import); costs memory and start-up time per child", flag=True, runfcgi=False),
    Option("before_fork", _text, [], "dotted path of a callable run in the parent before "
           "every fork (repeatable)", repeatable=True, runfcgi=False, metavar="DOTTED.PATH"),
    Option("after_fork", _text, [], "dotted path of a callable run in each child right "
           "after fork (repeatable)", repeatable=True, runfcgi=False, metavar="DOTTED.PATH"),
    Option("child_exit", _text, [], "dotted path of a callable run in the parent with the "
           "pid and exit status of each child that exits (repeatable)", repeatable=True,
           runfcgi=False, metavar="DOTTED.PATH"),
    Option("when_ready", _text, [], "dotted path of a callable run in the parent once its "
           "children accept requests (repeatable)", repeatable=True, runfcgi=False,
           metavar="DOTTED.PATH"),
    Option("on_reload", _text, [], "dotted path of a callable run in the parent when "
           "SIGHUP asks for a reload (repeatable)", repeatable=True, runfcgi=False,
           metavar="DOTTED.PATH"),
    # -- process management: signals, timeouts, privileges, socket access -------------
    Option("graceful_timeout", _seconds, 30.0,
           "seconds busy children get to finish on stop before they are killed",
           runfcgi=False, metavar="SECONDS"),
    Option("timeout", _seconds, 0.0,
           "kill a child busy on one request longer than this; 0 means never",
           runfcgi=False, metavar="SECONDS"),
    Option("max_child_rss", _int_at_least(0), 0,
           "a child whose resident memory passes this many MB finishes its request and "
           "is replaced; 0 means no limit", runfcgi=False, metavar="MB"),
    Option("max_child_rss_kill", _int_at_least(0), 0,
           "a child whose resident memory passes this many MB is killed at once, "
           "request and all; 0 means no limit", runfcgi=False, metavar="MB"),
    Option("maxrequests_jitter", _int_at_least(0), 0,
           "add random(0..N) to each child's maxrequests so children do not all restart "
           "together", runfcgi=False, metavar="N"),
    Option("user", _text, None, "run children as this user (name or uid)", runfcgi=False,
           metavar="USER"),
    Option("group", _text, None, "run children with this group (default: the user's group)",
           runfcgi=False, metavar="GROUP"),
    Option("allow_root", _bool, False, "let children run as root (refused otherwise)",
           flag=True, runfcgi=False),
    Option("socket_mode", _octal, None, "file mode of the unix socket, e.g. 0660",
           runfcgi=False, metavar="OCTAL"),
    Option("socket_owner", _text, None, "owner of the unix socket: USER or USER:GROUP",
           runfcgi=False, metavar="USER[:GROUP]"),
    Option("allowed_clients", _client_list, None,
           "TCP peers allowed to connect: addresses or networks, comma separated "
           "(default: FCGI_WEB_SERVER_ADDRS, else anyone)", runfcgi=False,
           metavar="ADDR[,ADDR]"),
    # -- FastCGI input limits and WSGI paths (safefcgi.protocol) --
    Option("max_params_bytes", _size, 1024 ** 2,
           "most bytes of FastCGI params (CGI variables, HTTP headers) per request; "
           "more closes the connection; 0 means no limit", runfcgi=False, metavar="BYTES"),
    Option("max_body_bytes", _size, 1024 ** 3,
           "largest request body; a larger one is answered 413 without running Django; "
           "0 means no limit", runfcgi=False, metavar="BYTES"),
    Option("read_timeout", _seconds, 30.0,
           "seconds the web server may go silent (or stop reading) before its "
           "connection is closed; also the idle limit of kept-open connections; 0 waits "
           "forever", runfcgi=False, metavar="SECONDS"),
    Option("script_name", _mount_point, None,
           "URL prefix the site is mounted at (/ for the whole site): SCRIPT_NAME and "
           "PATH_INFO are then split there, whatever split the web server sent",
           runfcgi=False, metavar="PREFIX"),
    # -- operability: status and ping pages, slow log, access log, log format --------
    Option("status_path", _url_path, None,
           "answer this URL path with the pool's status (text; ?json, ?html, ?openmetrics, "
           "?full), "
           "before Django sees the request", runfcgi=False, metavar="PATH"),
    Option("status_listen", _loopback_address, None,
           "answer the status page from the master on this extra socket (a unix path or "
           "127.0.0.1:PORT), FastCGI like the main one: it answers while every child is busy",
           runfcgi=False, metavar="ADDRESS"),
    Option("ping_path", _url_path, None,
           "answer this URL path with --ping-response, for load balancers", runfcgi=False,
           metavar="PATH"),
    Option("ping_response", _text, "pong", "what the ping path answers", runfcgi=False,
           metavar="TEXT"),
    Option("ping_drain", _seconds, 0.0,
           "on a graceful stop, answer the ping path 503 for this long (still serving "
           "every request) before refusing connections, so balancers drain the host first",
           runfcgi=False, metavar="SECONDS"),
    Option("slowlog_timeout", _seconds, 0.0,
           "write the Python stack of a request running longer than this to --slowlog "
           "(the request goes on); 0 means never", runfcgi=False, metavar="SECONDS"),
    Option("slowlog", _text, None,
           "file for --slowlog-timeout stacks (default: the error log)", runfcgi=False,
           metavar="PATH"),
    Option("access_log", _text, None,
           "append one line per request: common log format plus the time taken in "
           "microseconds", runfcgi=False, metavar="PATH"),
    Option("log_level", _choice("debug", "info", "warning", "error"), "info",
           "lowest level of safefcgi's own log lines", runfcgi=False,
           metavar="debug|info|warning|error"),
    Option("log_format", _choice("text", "json"), "text",
           "text, or one JSON object per line", runfcgi=False, metavar="text|json"),
)

OPTIONS_BY_NAME = {option.name: option for option in OPTIONS}


@dataclass(frozen=True)
class ServerConfig:
    """A validated configuration; building one never touches the process."""

    settings_module: str
    method: Method = "prefork"
    protocol: str = "fcgi"
    socket: str | None = None
    host: str | None = None
    port: int | None = None
    umask: int | None = None
    minspare: int = 2
    maxspare: int = 5
    maxchildren: int = 50
    maxrequests: int = 0
    maxthreads: int | None = None
    daemonize: bool = False
    pidfile: str | None = None
    workdir: str | None = None
    outlog: str | None = None
    errlog: str | None = None
    debug: bool = False
    pythonpath: tuple[str, ...] = ()
    lazy: bool = False
    before_fork: tuple[str, ...] = ()
    after_fork: tuple[str, ...] = ()
    child_exit: tuple[str, ...] = ()
    when_ready: tuple[str, ...] = ()
    on_reload: tuple[str, ...] = ()
    graceful_timeout: float = 30.0
    timeout: float = 0.0
    maxrequests_jitter: int = 0
    max_child_rss: int = 0
    max_child_rss_kill: int = 0
    user: str | None = None
    group: str | None = None
    allow_root: bool = False
    socket_mode: int | None = None
    socket_owner: str | None = None
    allowed_clients: tuple[str, ...] | None = None
    max_params_bytes: int = 1024 ** 2
    max_body_bytes: int = 1024 ** 3
    read_timeout: float = 30.0
    script_name: str | None = None
    status_path: str | None = None
    status_listen: str | None = None
    ping_path: str | None = None
    ping_response: str = "pong"
    ping_drain: float = 0.0
    slowlog_timeout: float = 0.0
    slowlog: str | None = None
    access_log: str | None = None
    log_level: str = "info"
    log_format: str = "text"
    explicit: frozenset[str] = field(default=frozenset(), compare=False)

    @property
    def address(self) -> str | tuple[str, int] | None:
        """The bind address: a unix path, a (host, port) pair, or None for fd 0."""
        if self.socket is not None:
            return self.socket
        if self.host is not None:
            return (self.host, self.port)
        return None

    @property
    def thread_limit(self) -> int:
        return self.maxthreads if self.maxthreads is not None else self.maxchildren


def cast_option(name: str, raw: Any) -> Any:
    """Cast one raw value; a bad one becomes a ConfigError naming the option."""
    option = OPTIONS_BY_NAME.get(name)
    if option is None:
        raise ConfigError(f"unknown option '{name}'")
    try:
        return option.cast(raw)
    except ValueError as exc:
        raise ConfigError(f"bad value {raw!r} for option '{name}': {exc}") from None


def build_config(settings_module: str, raw: Mapping[str, Any]) -> ServerConfig:
    """Cast every given value through the table, apply defaults, validate the whole.

    ``raw`` holds only what the user gave (strings, or lists of strings for
    repeatable options); anything absent takes its default.
    """
    if not settings_module or settings_module.startswith("-"):
        raise ConfigError("missing SETTINGS_MODULE (a dotted path such as mysite.settings; "
                          "DJANGO_SETTINGS_MODULE is used when set)")
    values: dict[str, Any] = {}
    for name, given in raw.items():
        option = OPTIONS_BY_NAME.get(name)
        if option is None:
            raise ConfigError(f"unknown option '{name}'")
        if option.repeatable:
            items = [given] if isinstance(given, str) else list(given)
            values[name] = tuple(cast_option(name, item) for item in items)
        else:
            values[name] = cast_option(name, given)
    config = ServerConfig(settings_module=settings_module, explicit=frozenset(raw), **values)
    return validate(_fit_spares_to_pool(config))


def _fit_spares_to_pool(config: ServerConfig) -> ServerConfig:
    """Shrink the *default* spare limits to a small pool the user asked for.

    ``--maxchildren 4`` alone must work although the default maxspare is 5;
    spare limits the user set explicitly are left for validate() to judge.
    """
    changes: dict[str, int] = {}
    if "maxspare" not in config.explicit and config.maxspare > config.maxchildren:
        changes["maxspare"] = config.maxchildren
    maxspare = changes.get("maxspare", config.maxspare)
    if "minspare" not in config.explicit and config.minspare > maxspare:
        changes["minspare"] = maxspare
    return dataclasses.replace(config, **changes) if changes else config


def validate(config: ServerConfig) -> ServerConfig:
    """Reject conflicting options with a sentence a user understands."""
    if config.socket is not None and (config.host is not None or config.port is not None):
        raise ConfigError("give either --socket or --host/--port, not both")
    if (config.host is None) != (config.port is None):
        raise ConfigError("--host and --port go together: give both")
    if config.minspare > config.maxspare:
        raise ConfigError(
            f"minspare ({config.minspare}) must not exceed maxspare ({config.maxspare})"
        )
    if config.maxspare > config.maxchildren:
        raise ConfigError(
            f"maxspare ({config.maxspare}) must not exceed maxchildren ({config.maxchildren})"
        )
    if config.method == "threaded" and (config.before_fork or config.after_fork):
        raise ConfigError("fork hooks need --method=prefork (threaded mode never forks)")
    if config.method == "threaded":
        for name in ("lazy", "child_exit", "when_ready", "on_reload"):
            if getattr(config, name):
                raise ConfigError(f"--{name.replace('_', '-')} needs --method=prefork "
                                  "(threaded mode has no master and no children)")
    return _validate_operability_options(_validate_process_options(config))


def _validate_process_options(config: ServerConfig) -> ServerConfig:
    for name in ("socket_mode", "socket_owner"):
        if getattr(config, name) is not None and config.socket is None:
            raise ConfigError(f"--{name.replace('_', '-')} applies to a unix socket: "
                              "give --socket too")
    if config.allowed_clients is not None and config.host is None:
        raise ConfigError("--allowed-clients applies to TCP (--host/--port); a unix "
                          "socket is governed by its file mode (--socket-mode)")
    if config.method == "threaded":
        for name in ("timeout", "maxrequests_jitter", "max_child_rss", "max_child_rss_kill"):
            if getattr(config, name):
                raise ConfigError(f"--{name.replace('_', '-')} needs --method=prefork")
    if config.max_child_rss and config.max_child_rss_kill \
            and config.max_child_rss_kill <= config.max_child_rss:
        raise ConfigError(f"--max-child-rss-kill ({config.max_child_rss_kill} MB) must be "
                          f"above --max-child-rss ({config.max_child_rss} MB): children over "
                          "the soft limit get to finish their request")
    if config.group is not None and config.user is None:
        raise ConfigError("--group needs --user")
    if config.maxrequests_jitter and not config.maxrequests:
        raise ConfigError("--maxrequests-jitter needs --maxrequests")
    if config.user is not None:
        resolve_identity(config.user, config.group)  # unknown names fail here, once
    if config.socket_owner is not None:
        resolve_owner(config.socket_owner)
    return config


def _validate_operability_options(config: ServerConfig) -> ServerConfig:
    if config.status_listen is not None \
            and listen_address(config.status_listen) == config.address:
        raise ConfigError("--status-listen needs an address of its own, not the main socket's")
    if config.status_path is not None and config.status_path == config.ping_path:
        raise ConfigError("--status-path and --ping-path must differ")
    if config.slowlog is not None and not config.slowlog_timeout:
        raise ConfigError("--slowlog needs --slowlog-timeout (how long is slow)")
    if config.ping_drain and config.ping_path is None:
        raise ConfigError("--ping-drain needs --ping-path (balancers must see the drain)")
    if config.method == "threaded":
        for name in ("status_path", "status_listen", "slowlog_timeout", "ping_drain"):
            if getattr(config, name):
                raise ConfigError(f"--{name.replace('_', '-')} needs --method=prefork")
    return config


def apply_runfcgi_defaults(raw: dict[str, Any]) -> dict[str, Any]:
    """runfcgi's own defaults, for ``manage.py runfcgi``: where they differ from ours.

    runfcgi daemonized whenever it was given a socket or host/port (and then
    changed to ``/``); ``safefcgi run`` stays in the foreground unless asked.
    """
    raw = dict(raw)
    if "daemonize" not in raw:
        raw["daemonize"] = "true" if ("socket" in raw or "host" in raw or "port" in raw) \
            else "false"
    if _bool(raw["daemonize"]) and "workdir" not in raw:
        raw["workdir"] = "/"
    return raw
