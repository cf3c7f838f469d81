"""Every option safefcgi accepts, declared once, cast and validated before anything forks.

The table ``OPTIONS`` is the only place an option is declared: its default, its
runfcgi key, the methods it applies to and the version that added it. From it
come ``ServerConfig`` (one field per option), the FastCGI limits, the
``safefcgi run`` and ``manage.py runfcgi`` command lines, runfcgi's ``key=value``
words, the mode checks of ``validate`` and the options reference of the docs
(``option_reference()``). Adding an option is adding one entry.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from safefcgi.errors import ConfigError
from safefcgi.fastcgi.protocol import Limits
from safefcgi.process.peers import WEB_SERVER_ADDRS_ENV, parse_networks
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


def _wsgi_app(text: str) -> str:
    """``module:callable`` (or WSGI_APPLICATION's ``module.callable``): checked for shape here."""
    module, sep, name = str(text).partition(":")
    if not sep:
        module, _, name = str(text).rpartition(".")
    if not (module and name and all(part.isidentifier() for part in module.split("."))
            and name.isidentifier()):
        raise ValueError("expected MODULE:CALLABLE such as mysite.wsgi:application")
    return str(text)


def _text(text: str) -> str:
    if not str(text).strip():
        raise ValueError("must not be empty")
    return str(text)


def _show(value: Any) -> str:
    """A cast value as a user writes it: on/off, 30 rather than 30.0, lists comma separated."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (tuple, list)):
        return ",".join(_show(item) for item in value)
    return str(value)


def _show_octal(value: int | None) -> str:
    return "" if value is None else f"{value:03o}"


def _show_size(value: int) -> str:
    for suffix in ("G", "M", "K"):
        unit = SIZE_SUFFIXES[suffix.lower()]
        if value and value % unit == 0:
            return f"{value // unit}{suffix}"
    return str(value)


BOTH_METHODS = ("prefork", "threaded")
PREFORK = ("prefork",)
FIRST_VERSION = "0.1.0"
NEXT_VERSION = "0.2.0"


@dataclass(frozen=True)
class Option:
    """One option, declared once: the command line, runfcgi's words, the config object,
    validation and the documentation are all derived from it.
    """

    name: str
    cast: Callable[[Any], Any]
    default: Any  # the cast value; immutable, since every config shares it
    help: str
    flag: bool = False  # a boolean switch: --name / --no-name
    repeatable: bool = False  # may be given several times; collects a tuple
    runfcgi: str | None = None  # the key runfcgi knew it by; None for safefcgi's own options
    metavar: str | None = None
    modes: tuple[str, ...] = BOTH_METHODS  # the methods it applies to; refused under others
    since: str = FIRST_VERSION  # the version that added it
    shown: str | None = None  # the default as users read it, where the value says too little
    render: Callable[[Any], str] = _show  # a value as users write it
    env: str | None = None  # environment variable read when the option is not given

    def __post_init__(self) -> None:
        if isinstance(self.default, list):  # every config shares the default: keep it frozen
            object.__setattr__(self, "default", tuple(self.default))

    @property
    def dashed(self) -> str:
        """``--max-body-bytes``: the spelling of the command line."""
        return "--" + self.name.replace("_", "-")

    @property
    def shown_default(self) -> str:
        """The default as the help, the docs and ``--print-config`` show it."""
        return self.shown if self.shown is not None else self.render(self.default)


OPTIONS: tuple[Option, ...] = (
    Option("protocol", _protocol, "fcgi", "wire protocol; only fcgi is served (runfcgi "
           "also offered scgi and ajp)", runfcgi="protocol", metavar="fcgi"),
    Option("method", _method, "prefork", "prefork (a pool of processes; alias fork) or "
           "threaded (alias thread)", runfcgi="method", metavar="prefork|threaded"),
    Option("socket", _text, None, "unix socket path to listen on", runfcgi="socket",
           metavar="PATH"),
    Option("host", _text, None, "TCP address to listen on (with --port)", runfcgi="host",
           metavar="HOST"),
    Option("port", _port, None, "TCP port to listen on (with --host)", runfcgi="port",
           metavar="PORT"),
    Option("umask", _octal, None, "umask of the server and its children (so also of the "
           "unix socket file)", runfcgi="umask", metavar="OCTAL", shown="unchanged",
           render=_show_octal),
    Option("minspare", _int_at_least(0), 2, "fewest idle children (threads when threaded)",
           runfcgi="minspare", metavar="N"),
    Option("maxspare", _int_at_least(1), 5, "most idle children (threads when threaded)",
           runfcgi="maxspare", metavar="N"),
    Option("maxchildren", _int_at_least(1), 50, "most children in the pool",
           runfcgi="maxchildren", metavar="N"),
    Option("maxrequests", _int_at_least(0), 0,
           "requests a child serves before it is replaced; 0 means unlimited",
           runfcgi="maxrequests", metavar="N"),
    Option("maxthreads", _int_at_least(1), None, "most threads in threaded mode",
           metavar="N", modes=("threaded",), shown="maxchildren"),
    Option("daemonize", _bool, False, "detach from the terminal and run in the background",
           flag=True, runfcgi="daemonize"),
    Option("pidfile", _text, None, "write the parent's pid here; removed on exit",
           runfcgi="pidfile", metavar="PATH"),
    Option("workdir", _text, None, "change to this directory before serving",
           runfcgi="workdir", metavar="DIR", shown="unchanged"),
    Option("outlog", _text, None, "append standard output to this file", runfcgi="outlog",
           metavar="PATH"),
    Option("errlog", _text, None, "append standard error (the log) to this file",
           runfcgi="errlog", metavar="PATH"),
    Option("debug", _bool, False,
           "send tracebacks of crashing requests to the client (never in production)",
           flag=True, runfcgi="debug"),
    Option("wsgi_app", _wsgi_app, None,
           "the WSGI callable to serve, instead of the settings' WSGI_APPLICATION",
           metavar="MODULE:CALLABLE", since=NEXT_VERSION,
           shown="WSGI_APPLICATION, else Django's handler"),
    Option("pythonpath", _text, (), "directory prepended to sys.path",
           repeatable=True, metavar="DIR"),
    Option("lazy", _bool, False, "each child imports the project itself after fork, "
           "instead of the parent once before it (for projects that start threads at "
           "import); costs memory and start-up time per child", flag=True, modes=PREFORK,
           since="0.2.0"),
    Option("before_fork", _text, (), "dotted path of a callable run in the parent before "
           "every fork", repeatable=True, metavar="DOTTED.PATH", modes=PREFORK),
    Option("after_fork", _text, (), "dotted path of a callable run in each child right "
           "after fork", repeatable=True, metavar="DOTTED.PATH", modes=PREFORK),
    Option("child_exit", _text, (), "dotted path of a callable run in the parent with the "
           "pid and exit status of each child that exits", repeatable=True,
           metavar="DOTTED.PATH", modes=PREFORK, since="0.2.0"),
    Option("when_ready", _text, (), "dotted path of a callable run in the parent once its "
           "children accept requests", repeatable=True, metavar="DOTTED.PATH",
           modes=PREFORK, since="0.2.0"),
    Option("on_reload", _text, (), "dotted path of a callable run in the parent when "
           "SIGHUP asks for a reload", repeatable=True, metavar="DOTTED.PATH",
           modes=PREFORK, since="0.2.0"),
    # -- process management: signals, timeouts, privileges, socket access -------------
    Option("graceful_timeout", _seconds, 30.0,
           "seconds busy children get to finish on stop before they are killed",
           metavar="SECONDS"),
    Option("timeout", _seconds, 0.0,
           "kill a child busy on one request longer than this; 0 means never",
           metavar="SECONDS", modes=PREFORK),
    Option("max_child_rss", _int_at_least(0), 0,
           "a child whose resident memory passes this many MB finishes its request and "
           "is replaced; 0 means no limit", metavar="MB", modes=PREFORK, since="0.2.0"),
    Option("max_child_rss_kill", _int_at_least(0), 0,
           "a child whose resident memory passes this many MB is killed at once, "
           "request and all; 0 means no limit", metavar="MB", modes=PREFORK,
           since="0.2.0"),
    Option("maxrequests_jitter", _int_at_least(0), 0,
           "add random(0..N) to each child's maxrequests so children do not all restart "
           "together", metavar="N", modes=PREFORK),
    Option("user", _text, None, "run children as this user (name or uid)", metavar="USER"),
    Option("group", _text, None, "run children with this group", metavar="GROUP",
           shown="the user's group"),
    Option("allow_root", _bool, False, "let children run as root (refused otherwise)",
           flag=True),
    Option("socket_mode", _octal, None, "file mode of the unix socket, e.g. 0660",
           metavar="OCTAL", render=_show_octal),
    Option("socket_owner", _text, None, "owner of the unix socket: USER or USER:GROUP",
           metavar="USER[:GROUP]"),
    Option("allowed_clients", _client_list, None,
           "TCP peers allowed to connect: addresses or networks, comma separated",
           metavar="ADDR[,ADDR]", env=WEB_SERVER_ADDRS_ENV,
           shown=f"${WEB_SERVER_ADDRS_ENV}, else anyone"),
    # -- FastCGI input limits and WSGI paths (safefcgi.fastcgi) --
    Option("max_params_bytes", _size, 1024 ** 2,
           "most bytes of FastCGI params (CGI variables, HTTP headers) per request; "
           "more closes the connection; 0 means no limit", metavar="BYTES",
           render=_show_size),
    Option("max_body_bytes", _size, 1024 ** 3,
           "largest request body; a larger one is answered 413 without running Django; "
           "0 means no limit", metavar="BYTES", render=_show_size),
    Option("read_timeout", _seconds, 30.0,
           "seconds the web server may go silent (or stop reading) before its "
           "connection is closed; also the idle limit of kept-open connections; 0 waits "
           "forever", metavar="SECONDS"),
    Option("script_name", _mount_point, None,
           "URL prefix the site is mounted at (/ for the whole site): SCRIPT_NAME and "
           "PATH_INFO are then split there, whatever split the web server sent",
           metavar="PREFIX"),
    # -- operability: status and ping pages, slow log, access log, log format --------
    Option("status_path", _url_path, None,
           "answer this URL path with the pool's status (text; ?json, ?html, ?openmetrics, "
           "?full), before Django sees the request", metavar="PATH", modes=PREFORK),
    Option("status_listen", _loopback_address, None,
           "answer the status page from the master on this extra socket (a unix path or "
           "127.0.0.1:PORT), FastCGI like the main one: it answers while every child is busy",
           metavar="ADDRESS", modes=PREFORK, since="0.2.0"),
    Option("ping_path", _url_path, None,
           "answer this URL path with --ping-response, for load balancers", metavar="PATH"),
    Option("ping_response", _text, "pong", "what the ping path answers", metavar="TEXT"),
    Option("ping_drain", _seconds, 0.0,
           "on a graceful stop, answer the ping path 503 for this long (still serving "
           "every request) before refusing connections, so balancers drain the host first",
           metavar="SECONDS", modes=PREFORK),
    Option("slowlog_timeout", _seconds, 0.0,
           "write the Python stack of a request running longer than this to --slowlog "
           "(the request goes on); 0 means never", metavar="SECONDS", modes=PREFORK),
    Option("slowlog", _text, None,
           "file for --slowlog-timeout stacks", metavar="PATH", shown="the error log"),
    Option("access_log", _text, None,
           "append one line per request: common log format plus the time taken in "
           "microseconds", metavar="PATH"),
    Option("log_level", _choice("debug", "info", "warning", "error"), "info",
           "lowest level of safefcgi's own log lines", metavar="debug|info|warning|error"),
    Option("log_format", _choice("text", "json"), "text",
           "text, or one JSON object per line", metavar="text|json"),
)

OPTIONS_BY_NAME = {option.name: option for option in OPTIONS}

# Options of ``safefcgi run`` about the configuration itself: never part of one (not in
# ServerConfig, not in a config file, not runfcgi words).
CONFIG_FILE_OPTIONS: tuple[Option, ...] = (
    Option("config", _text, None, "read options from this TOML file (keys are option "
           "names; the command line overrides it)", metavar="FILE", since=NEXT_VERSION),
    Option("print_config", _bool, False, "print every effective value and where it came "
           "from, then exit", flag=True, since=NEXT_VERSION, shown=""),
    Option("check_config", _bool, False, "check the options and import the project as the "
           "server would, without serving; exit status 0 if it would start", flag=True,
           since=NEXT_VERSION, shown=""),
)


def _key(word: str) -> str:
    return word.strip().lower().replace("-", "_")


# Every word a key=value option may start with: runfcgi's keys, and every option's own
# name (with dashes or underscores), so that safefcgi's additions may be written so too.
KEY_WORDS: dict[str, Option] = {
    **{option.name: option for option in OPTIONS},
    **{_key(option.runfcgi): option for option in OPTIONS if option.runfcgi},
}


def takes_octal(option: Option) -> bool:
    """True for modes and masks (``022``), which only a string spells unambiguously."""
    return option.cast is _octal


def option_for_key(word: str) -> Option | None:
    """The option a ``key=value`` word or a config-file key names (dashes or underscores)."""
    return KEY_WORDS.get(_key(word))


@dataclass(frozen=True)
class OptionRow:
    """One row of the options reference, as the docs and README print it."""

    name: str  # --max-body-bytes
    metavar: str | None  # BYTES; None for a switch
    runfcgi: str | None  # the runfcgi key, None for safefcgi's own options
    default: str  # as shown to users; "" when unset
    help: str
    since: str
    modes: tuple[str, ...]  # the methods it applies to
    repeatable: bool
    env: str | None  # environment variable read when the option is not given
    in_config_file: bool  # False for --config and the options that look at a config
    runfcgi_default: str | None  # the default under manage.py runfcgi, for runfcgi keys


def option_reference() -> list[OptionRow]:
    """Every option of ``safefcgi run`` in table order, for generated documentation."""
    return [OptionRow(name=option.dashed, metavar=None if option.flag else option.metavar,
                      runfcgi=option.runfcgi, default=option.shown_default,
                      help=option.help, since=option.since, modes=option.modes,
                      repeatable=option.repeatable, env=option.env,
                      in_config_file=option in OPTIONS,
                      runfcgi_default=runfcgi_default(option) if option.runfcgi else None)
            for option in OPTIONS + CONFIG_FILE_OPTIONS]


def runfcgi_default(option: Option) -> str:
    """The option's default as ``manage.py runfcgi`` applies it, in runfcgi's words."""
    if option.name in RUNFCGI_DEFAULTS_SHOWN:
        return RUNFCGI_DEFAULTS_SHOWN[option.name]
    if isinstance(option.default, bool):
        return "true" if option.default else "false"
    return option.shown_default or "unset"


class _ConfigProperties:
    """What a config derives from its options (mixed into ServerConfig)."""

    settings_module: str
    socket: str | None
    host: str | None
    port: int | None
    maxthreads: int | None
    maxchildren: int

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


# A validated configuration, one field per option with the option's default; building
# one never touches the process. ``explicit`` names the options the user gave.
ServerConfig = dataclasses.make_dataclass(
    "ServerConfig",
    [("settings_module", str),
     *[(option.name, Any, field(default=option.default)) for option in OPTIONS],
     ("explicit", frozenset, field(default=frozenset(), compare=False))],
    bases=(_ConfigProperties,), frozen=True,
)
ServerConfig.__module__ = __name__  # make_dataclass takes module= only from Python 3.12


def protocol_limits(config: Any = None, **overrides: Any) -> Limits:
    """The FastCGI layer's limits, from ``config`` (or the table's defaults) and overrides."""
    return _section(Limits, config, overrides)


def _section(kind: type, config: Any, overrides: Mapping[str, Any]) -> Any:
    """Build ``kind``, a dataclass whose fields are options, from a config or the defaults."""
    values = {}
    for item in dataclasses.fields(kind):
        default = OPTIONS_BY_NAME[item.name].default
        values[item.name] = getattr(config, item.name) if config is not None else default
    return kind(**{**values, **overrides})


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
    _validate_modes(config)
    return _validate_operability_options(_validate_process_options(config))


def _validate_modes(config: ServerConfig) -> None:
    """An option set away from its default under a method it does not apply to is refused."""
    for option in OPTIONS:
        if config.method not in option.modes and getattr(config, option.name) != option.default:
            methods = " or ".join(f"--method={mode}" for mode in option.modes)
            raise ConfigError(f"{option.dashed} needs {methods}")


def _validate_process_options(config: ServerConfig) -> ServerConfig:
    for name in ("socket_mode", "socket_owner"):
        if getattr(config, name) is not None and config.socket is None:
            raise ConfigError(f"--{name.replace('_', '-')} applies to a unix socket: "
                              "give --socket too")
    if config.allowed_clients is not None and config.host is None:
        raise ConfigError("--allowed-clients applies to TCP (--host/--port); a unix "
                          "socket is governed by its file mode (--socket-mode)")
    if config.group is not None and config.user is None:
        raise ConfigError("--group needs --user")
    if config.maxrequests_jitter and not config.maxrequests:
        raise ConfigError("--maxrequests-jitter needs --maxrequests")
    if config.max_child_rss and config.max_child_rss_kill \
            and config.max_child_rss_kill <= config.max_child_rss:
        raise ConfigError(f"--max-child-rss-kill ({config.max_child_rss_kill} MB) must be "
                          f"above --max-child-rss ({config.max_child_rss} MB): children over "
                          "the soft limit get to finish their request")
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
    return config


# runfcgi's defaults where they differ from ours, as ``manage.py help runfcgi`` shows them.
RUNFCGI_DEFAULTS_SHOWN = {"daemonize": "true when socket/host/port is given, else false",
                          "workdir": "/ when daemonizing"}


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
