"""wrk, with a Lua script that checks the status and body of every response.

A response that is not 200 with exactly the expected body counts as an error
and the first one is kept for the report, so a fast but wrong server cannot
win. wrk's own socket errors (connect, read, write, timeout) are added.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

WRK_TIMEOUT_SECONDS = 10
MARKER = "BENCH-RESULT "

# %(setup)s sets wrk.method/body/headers; %(expected)s is a Lua expression.
LUA_TEMPLATE = r"""
%(setup)s
local expected = %(expected)s
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  checked = 0
  bad = 0
  first_bad = ""
end

function response(status, headers, body)
  checked = checked + 1
  if status ~= 200 or body ~= expected then
    bad = bad + 1
    if first_bad == "" then
      first_bad = status .. " " .. string.sub(body or "", 1, 120)
    end
  end
end

local function quote(text)
  return '"' .. string.gsub(text, '[%%c"\\]', function(c)
    return string.format("\\u%%04x", string.byte(c)) end) .. '"'
end

function done(summary, latency, requests)
  local checked_all, bad_all, first = 0, 0, ""
  for _, thread in ipairs(threads) do
    checked_all = checked_all + thread:get("checked")
    bad_all = bad_all + thread:get("bad")
    if first == "" then first = thread:get("first_bad") end
  end
  local e = summary.errors
  io.write("%(marker)s" .. string.format(
    '{"requests":%%d,"duration_us":%%d,"checked":%%d,"bad":%%d,"first_bad":%%s,' ..
    '"socket_errors":%%d,"p50_us":%%d,"p90_us":%%d,"p99_us":%%d,"max_us":%%d}',
    summary.requests, summary.duration, checked_all, bad_all, quote(first),
    e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max)
    .. "\n")
end
"""


@dataclass(frozen=True)
class View:
    """A URL and the one response body that counts as correct."""

    name: str
    path: str
    expected_lua: str  # Lua expression of the expected body
    setup_lua: str = ""
    connections: int | None = None  # None: the run's default

    def script(self) -> str:
        return LUA_TEMPLATE % {"setup": self.setup_lua, "expected": self.expected_lua,
                               "marker": MARKER}


@dataclass(frozen=True)
class LoadResult:
    requests: int
    seconds: float
    checked: int
    bad: int
    first_bad: str
    socket_errors: int
    p50_us: int
    p90_us: int
    p99_us: int
    max_us: int

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def errors(self) -> int:
        return self.bad + self.socket_errors


def run_wrk(url: str, view: View, seconds: float, connections: int, script_dir: Path,
            threads: int = 1) -> LoadResult:
    """One bounded wrk run against ``url + view.path``."""
    script = script_dir / f"{view.name}.lua"
    if not script.exists():
        script.write_text(view.script())
    connections = max(connections, threads)
    argv = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{max(seconds, 1):.0f}s",
            f"--timeout={WRK_TIMEOUT_SECONDS}s", "-s", str(script), url + view.path]
    completed = subprocess.run(argv, capture_output=True, text=True,
                               timeout=seconds + WRK_TIMEOUT_SECONDS + 30)
    for line in completed.stdout.splitlines():
        if line.startswith(MARKER):
            data = json.loads(line[len(MARKER):])
            return LoadResult(
                requests=data["requests"], seconds=data["duration_us"] / 1e6,
                checked=data["checked"], bad=data["bad"], first_bad=data["first_bad"],
                socket_errors=data["socket_errors"], p50_us=data["p50_us"],
                p90_us=data["p90_us"], p99_us=data["p99_us"], max_us=data["max_us"])
    raise RuntimeError(f"wrk gave no result (exit {completed.returncode}): "
                       f"{completed.stderr.strip() or completed.stdout.strip()}")


def lua_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
