"""The documentation site builds without a warning and covers what the code offers.

The options reference, the runfcgi key table and the list of error messages
are generated from the code; these tests read the built HTML, so a generator
that drops an option, a key or a message fails here.
"""

from __future__ import annotations

import html
import re
import subprocess
import sys
from pathlib import Path

import pytest

from safefcgi.config import OPTIONS

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "docs" / "_ext"))

import safefcgi_messages  # noqa: E402


@pytest.fixture(scope="module")
def built_html(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The site built once, as bin/docs builds it: warnings are errors."""
    out = tmp_path_factory.mktemp("html")
    result = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
         "-d", str(out / ".doctrees"), str(REPO / "docs"), str(out)],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return out


def page_text(built: Path, name: str) -> str:
    """A built page as plain text, the way a reader (or a search) sees it."""
    markup = (built / name).read_text()
    return html.unescape(re.sub(r"<[^>]+>", "", markup))


def run_help_options() -> set[str]:
    result = subprocess.run([sys.executable, "-m", "safefcgi", "run", "--help"],
                            capture_output=True, text=True, timeout=30, check=True)
    options_part = result.stdout.split("\noptions:", 1)[1]
    return set(re.findall(r"(?<![\w-])--[A-Za-z][\w-]*", options_part)) - {"--help"}


def test_every_option_of_run_help_is_in_the_options_reference(built_html):
    listed = run_help_options()
    text = page_text(built_html, "options.html")

    assert len(listed) >= len(OPTIONS), listed
    missing = sorted(option for option in listed
                     if not re.search(re.escape(option) + r"(?![\w-])", text))
    assert missing == []


def test_every_error_message_of_the_code_is_on_the_troubleshooting_page(built_html):
    messages = safefcgi_messages.collect(REPO / "safefcgi")
    text = page_text(built_html, "troubleshooting.html")

    assert "socket path … is taken: a running server is listening on it" in messages
    missing = sorted(message for message in messages if message not in text)
    assert missing == []


def test_every_runfcgi_key_is_on_the_migration_page(built_html):
    text = page_text(built_html, "migrating.html")
    keys = [option.runfcgi for option in OPTIONS if option.runfcgi]

    assert "maxchildren" in keys
    assert [key for key in keys if f"{key}=" not in text] == []


def test_benchmark_page_shows_the_latest_results_table_and_chart(built_html):
    readme = (REPO / "bench" / "README.md").read_text()
    first_row = next(line for line in readme.split("<!-- results: written by bench/run -->")[1]
                     .splitlines() if line.startswith("| plain |"))
    cells = [cell.strip() for cell in first_row.strip("|").split("|")]
    text = page_text(built_html, "benchmark.html")

    assert all(cell in text for cell in cells), cells
    chart = re.search(r"!\[chart\]\(results/([^)]+)\)", readme).group(1)  # full or quick run
    assert (built_html / "_images" / chart).is_file()
