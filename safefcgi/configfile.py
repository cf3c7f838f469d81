"""``safefcgi run --config FILE``: the options of one site in a TOML file.

Each top-level key is an option's name, spelt with dashes or underscores (or
runfcgi's key), and ``settings_module`` names the project. A repeatable option
takes a list. The command line overrides the file, and the file overrides the
environment variables some options fall back on. A mistake is one line naming
the file, the line and the key.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from safefcgi.config import (
    OPTIONS,
    Option,
    ServerConfig,
    build_config,
    option_for_key,
    takes_octal,
)
from safefcgi.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser, from PyPI
    import tomli as tomllib

SETTINGS_KEY = "settings_module"
SETTINGS_ENV = "DJANGO_SETTINGS_MODULE"
COMMAND_LINE = "command line"
DEFAULT = "default"


@dataclass(frozen=True)
class FileOptions:
    """What a config file gave: raw option values, as the command line would give them."""

    path: str
    raw: dict[str, Any] = field(default_factory=dict)
    settings_module: str | None = None


def read_config_file(path: str) -> FileOptions:
    """Read and check ``path``; every key is cast here, so errors can name their line."""
    try:
        with open(path, "rb") as stream:
            text = stream.read().decode("utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    raw: dict[str, Any] = {}
    settings_module = None
    for key, value in document.items():
        where = f"{path}:{_line_of(text, key)}"
        if key.replace("-", "_").lower() == SETTINGS_KEY:
            if not isinstance(value, str) or not value.strip():
                raise ConfigError(f"{where}: '{key}' must be a dotted path such as "
                                  "\"mysite.settings\"")
            settings_module = value
            continue
        if isinstance(value, dict):
            raise ConfigError(f"{where}: '{key}' is a table; options are top-level keys")
        option = option_for_key(key)
        if option is None:
            raise ConfigError(f"{where}: unknown option '{key}'")
        if option.name in raw:
            raise ConfigError(f"{where}: option '{key}' is given twice")
        raw[option.name] = _checked_value(option, key, value, where)
    return FileOptions(path, raw, settings_module)


def _checked_value(option: Option, key: str, value: Any, where: str) -> Any:
    try:
        given = _as_raw(option, value)
    except ValueError as exc:
        raise ConfigError(f"{where}: option '{key}': {exc}") from None
    for item in given if option.repeatable else [given]:
        try:
            option.cast(item)
        except ValueError as exc:
            raise ConfigError(f"{where}: bad value {item!r} for option '{key}': {exc}") \
                from None
    return given


def _as_raw(option: Option, value: Any) -> Any:
    """A TOML value as the string the command line would have given (a list if repeatable)."""
    if option.repeatable:
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
            raise ValueError("expected a string or a list of strings")
        return items
    if isinstance(value, list):
        raise ValueError("expected one value, not a list")
    if option.flag:
        if not isinstance(value, bool):
            raise ValueError("expected true or false (unquoted)")
        return "true" if value else "false"
    if isinstance(value, bool):
        raise ValueError("expected a value, not true or false")
    if takes_octal(option) and not isinstance(value, str):
        # TOML reads 0o022 and 18 alike: only a string keeps the octal digits
        raise ValueError('expected a quoted octal number such as "022"')
    if isinstance(value, (str, int, float)):
        return str(value)
    raise ValueError("expected a string or a number")


def _line_of(text: str, key: str) -> int | str:
    """The line a top-level key (or table header) is on; tomllib does not say."""
    quoted = rf"(?:{re.escape(key)}|\"{re.escape(key)}\"|'{re.escape(key)}')"
    for pattern in (rf"^[ \t]*{quoted}[ \t]*[=.]", rf"^[ \t]*\[+[ \t]*{quoted}[ \t]*[\].]"):
        match = re.search(pattern, text, re.M)
        if match:
            return text.count("\n", 0, match.start()) + 1
    return "?"


@dataclass(frozen=True)
class Resolved:
    """A config and where each value came from, for ``--print-config``."""

    config: ServerConfig
    sources: dict[str, str]


def resolve(cli_raw: Mapping[str, Any], cli_settings: str | None,
            config_path: str | None, environ: Mapping[str, str] | None = None) -> Resolved:
    """Merge, lowest first: defaults, environment, the config file, the command line."""
    environ = os.environ if environ is None else environ
    sources: dict[str, str] = {}
    raw: dict[str, Any] = {}
    file = read_config_file(config_path) if config_path else None
    if file is not None:
        raw.update(file.raw)
        sources.update(dict.fromkeys(file.raw, f"file {file.path}"))
    raw.update(cli_raw)
    sources.update(dict.fromkeys(cli_raw, COMMAND_LINE))
    if cli_settings:
        settings_module, sources[SETTINGS_KEY] = cli_settings, COMMAND_LINE
    elif file is not None and file.settings_module:
        settings_module, sources[SETTINGS_KEY] = file.settings_module, f"file {file.path}"
    else:
        settings_module = environ.get(SETTINGS_ENV, "")
        sources[SETTINGS_KEY] = f"environment {SETTINGS_ENV}"
    config = build_config(settings_module, raw)
    for option in OPTIONS:
        if option.name not in sources:
            sources[option.name] = _unset_source(option, config, environ)
    return Resolved(config, sources)


def _unset_source(option: Option, config: ServerConfig, environ: Mapping[str, str]) -> str:
    if option.env and environ.get(option.env):
        return f"environment {option.env}"
    if getattr(config, option.name) != option.default:
        return f"{DEFAULT}, fitted to maxchildren"  # _fit_spares_to_pool
    return DEFAULT


def format_effective(resolved: Resolved, environ: Mapping[str, str] | None = None) -> str:
    """Every effective value as TOML, each with its source: a valid config file itself."""
    environ = os.environ if environ is None else environ
    config, sources = resolved.config, resolved.sources
    settings = json.dumps(config.settings_module, ensure_ascii=False)
    lines = [f"{SETTINGS_KEY} = {settings}  # {sources[SETTINGS_KEY]}"]
    for option in OPTIONS:
        source = sources[option.name]
        value = getattr(config, option.name)
        if option.env and source.startswith("environment"):
            value = environ[option.env]  # as given: the server checks it when it starts
        text = _as_toml(option, value)
        if text is None:
            shown = f" ({option.shown_default})" if option.shown_default else ""
            lines.append(f"# {option.name.replace('_', '-')}: unset{shown}  # {source}")
        else:
            lines.append(f"{option.name.replace('_', '-')} = {text}  # {source}")
    return "\n".join(lines) + "\n"


def _as_toml(option: Option, value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if option.repeatable:
        return "[" + ", ".join(json.dumps(item, ensure_ascii=False) for item in value) + "]"
    shown = option.render(value)
    if isinstance(value, (int, float)) and shown == str(value).removesuffix(".0"):
        return shown  # a plain number; sizes ("1M") and modes ("022") stay strings
    return json.dumps(shown, ensure_ascii=False)
