"""Sphinx extension: the parts of the docs that are read from safefcgi's code.

``safefcgi-options``        the options reference, from the option table and the
                            ``safefcgi run`` parser (every spelling ``--help`` shows)
``safefcgi-runfcgi-keys``   every runfcgi key and what it became
``safefcgi-error``          one documented error message; the build warns (and so
                            fails under ``-W``) when a message in the code has no
                            entry, or an entry names a message the code lost
``safefcgi-bench-results``  the latest results table of bench/README.md
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).parent))

import safefcgi_messages  # noqa: E402

from safefcgi import cli, config  # noqa: E402

logger = logging.getLogger(__name__)

BENCH_README = REPO / "bench" / "README.md"
RESULTS_START = "<!-- results: written by bench/run -->"
RESULTS_END = "<!-- end of results -->"


class _RstDirective(SphinxDirective):
    """A directive that writes reStructuredText and parses it in place."""

    def render(self, lines: list[str]) -> list[nodes.Node]:
        container = nodes.container()
        self.state.nested_parse(StringList(lines, source=self.get_source_info()[0]),
                                self.content_offset, container)
        return container.children


# -- options --------------------------------------------------------------------------


def run_parser_actions() -> dict[str, argparse.Action]:
    """The ``safefcgi run`` parser's actions by destination."""
    parser = cli.make_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    run = subparsers.choices["run"]
    return {action.dest: action for action in run._actions}


def spellings(action: argparse.Action) -> list[str]:
    """The option strings as ``--help`` shows them, each with its metavar."""
    if action.nargs == 0:
        return list(action.option_strings)
    metavar = action.metavar or action.dest.upper()
    return [f"{name} {metavar}" for name in action.option_strings]


def _dest(row: config.OptionRow) -> str:
    return row.name.removeprefix("--").replace("-", "_")


def option_lines(row: config.OptionRow, action: argparse.Action) -> list[str]:
    names = spellings(action)
    details = [f"Default: ``{row.default}``." if row.default else "Default: unset."]
    if row.env:
        details.append(f"Otherwise read from ``{row.env}``.")
    if len(names) > 1:
        details.append("Also spelled " + ", ".join(f"``{n}``" for n in names[1:]) + ".")
    if row.runfcgi:
        details.append(f"runfcgi: ``{row.runfcgi}=``.")
    if row.repeatable:
        details.append("Repeatable.")
    if row.modes != config.BOTH_METHODS:
        details.append(" or ".join(row.modes).capitalize() + " only.")
    if not row.in_config_file:
        details.append("Command line only.")
    details.append(f"Since {row.since}.")
    return [f".. option:: {names[0]}", "", "   " + row.help[0].upper() + row.help[1:] + ".",
            "", "   " + " ".join(details), ""]


class OptionsDirective(_RstDirective):
    """Every option of the table, in the table's order, with the run parser's spellings."""

    def run(self) -> list[nodes.Node]:
        actions = run_parser_actions()
        rows = config.option_reference()
        lines = [".. program:: safefcgi run", ""]
        for row in rows:
            lines += option_lines(row, actions[_dest(row)])
        documented = {_dest(row) for row in rows}
        others = [a for dest, a in actions.items() if dest not in documented and a.option_strings
                  and a.help != argparse.SUPPRESS]
        if others:
            lines += [".. rubric:: Besides the option table", ""]
            for action in others:
                lines += [f".. option:: {', '.join(spellings(action))}", "",
                          f"   {action.help}", ""]
        return self.render(lines)


class RunfcgiKeysDirective(_RstDirective):
    """runfcgi's key=value vocabulary: each key, its safefcgi option, both defaults."""

    def run(self) -> list[nodes.Node]:
        lines = [".. list-table::", "   :header-rows: 1", "",
                 "   * - runfcgi key", "     - ``safefcgi run``",
                 "     - default under ``manage.py runfcgi``",
                 "     - default under ``safefcgi run``", "     - meaning"]
        for row in config.option_reference():
            if not row.runfcgi:
                continue
            link = f":option:`{row.name} <safefcgi run {row.name}>`"
            lines += [f"   * - ``{row.runfcgi}=``", f"     - {link}",
                      f"     - {row.runfcgi_default or 'unset'}",
                      f"     - {row.default or 'unset'}", f"     - {row.help}"]
        return self.render(lines)


# -- error messages -------------------------------------------------------------------


def code_messages() -> dict[str, list[safefcgi_messages.Message]]:
    return safefcgi_messages.collect(REPO / "safefcgi")


class ErrorDirective(_RstDirective):
    """One or more messages (one per line of the argument), then what causes them."""

    required_arguments = 1
    final_argument_whitespace = True
    has_content = True

    def run(self) -> list[nodes.Node]:
        known = code_messages()
        texts = [line.strip() for line in self.arguments[0].splitlines() if line.strip()]
        if not hasattr(self.env, "safefcgi_errors"):
            self.env.safefcgi_errors = {}
        lines = []
        for text in texts:
            self.env.safefcgi_errors[text] = self.env.docname
            lines += [".. rst-class:: safefcgi-error", "", f"   ``{text}``{origin(known, text)}",
                      ""]
        target = nodes.target("", "", ids=[nodes.make_id("error " + texts[0])])
        body = nodes.block_quote(classes=["safefcgi-error-body"])
        self.state.nested_parse(self.content, self.content_offset, body)
        return [target, *self.render(lines), body]


def origin(known: dict[str, list[safefcgi_messages.Message]], text: str) -> str:
    """How a message reaches the user and where the code says it."""
    found = known.get(text)
    if not found:
        return ""
    status = found[0].exit_status
    if found[0].kind == "log":
        how = "logged"
    elif found[0].kind == "ValueError":
        how = "the reason of a bad value"
    elif status is not None:
        how = f"exit status {status}"
    else:
        how = "printed"
    places = ", ".join(sorted({f"safefcgi/{m.path}" for m in found}))
    return f" ({how}; ``{places}``)"


def purge_errors(app, env, docname: str) -> None:
    store = getattr(env, "safefcgi_errors", {})
    for text in [t for t, doc in store.items() if doc == docname]:
        del store[text]


def merge_errors(app, env, docnames, other) -> None:
    env.safefcgi_errors = {**getattr(env, "safefcgi_errors", {}),
                           **getattr(other, "safefcgi_errors", {})}


def check_errors(app, env) -> None:
    """Every message of the code documented once; no entry for a message the code lost."""
    documented = getattr(env, "safefcgi_errors", {})
    if not documented:
        return  # a partial build without the troubleshooting page
    known = code_messages()
    for text, found in sorted(known.items()):
        if text not in documented:
            message = found[0]
            logger.warning("error message not documented: %r (%s:%d)",
                           text, message.path, message.line)
    for text, docname in sorted(documented.items()):
        if text not in known:
            logger.warning("documented error message not in the code: %r", text,
                           location=docname)


# -- benchmark results ----------------------------------------------------------------


def _rst_inline(text: str) -> str:
    """Markdown inline code and escapes to reStructuredText."""
    text = text.replace("\\", "\\\\")
    return re.sub(r"`([^`]+)`", r"``\1``", text)


def _table(rows: list[str]) -> list[str]:
    cells = [[_rst_inline(c.strip()) for c in row.strip().strip("|").split("|")]
             for row in rows if not re.fullmatch(r"\|[-:| ]+\|", row.strip())]
    lines = [".. list-table::", "   :header-rows: 1", ""]
    for row in cells:
        lines.append(f"   * - {row[0] or ' '}")
        lines += [f"     - {cell or ' '}" for cell in row[1:]]
    return lines + [""]


def bench_results_lines(readme: Path = BENCH_README) -> list[str]:
    """The results section of bench/README.md as reStructuredText."""
    text = readme.read_text()
    section = text.split(RESULTS_START, 1)[1].split(RESULTS_END, 1)[0]
    lines: list[str] = []
    table: list[str] = []
    for line in section.splitlines() + [""]:
        if line.startswith("|"):
            table.append(line)
            continue
        if table:
            lines += _table(table)
            table = []
        image = re.fullmatch(r"!\[(.*)\]\((.*)\)", line.strip())
        if image:
            lines += [f".. image:: /../bench/{image.group(2)}", f"   :alt: {image.group(1)}",
                      ""]
        else:
            lines.append(_rst_inline(line))
    return lines


class BenchResultsDirective(_RstDirective):
    def run(self) -> list[nodes.Node]:
        self.env.note_dependency(str(BENCH_README))
        return self.render(bench_results_lines())


def setup(app):
    app.add_directive("safefcgi-options", OptionsDirective)
    app.add_directive("safefcgi-runfcgi-keys", RunfcgiKeysDirective)
    app.add_directive("safefcgi-error", ErrorDirective)
    app.add_directive("safefcgi-bench-results", BenchResultsDirective)
    app.connect("env-purge-doc", purge_errors)
    app.connect("env-merge-info", merge_errors)
    app.connect("env-check-consistency", check_errors)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
