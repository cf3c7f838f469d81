"""Turn the runs into medians, ratios, targets, a table, an SVG chart and README.md."""

from __future__ import annotations

import importlib.metadata
import json
import statistics
import subprocess
import time
from collections import defaultdict
from pathlib import Path
from xml.sax.saxutils import escape

README_START = "<!-- results: written by bench/run -->"
README_END = "<!-- end of results -->"
KEPT = ("safefcgi-keepconn8", "safefcgi-keepconn32")  # nginx keepalive 8 and 32
CONTENDER_ORDER = ("safefcgi", "safefcgi-lazy", *KEPT, "safefcgi-threaded", "flup6", "uwsgi",
                   "gunicorn", "gunicorn-uwsgi")
VIEW_ORDER = ("plain", "hello", "db", "big", "upload10m")
COLOURS = {"safefcgi": "#1b6ac9", "safefcgi-lazy": "#0d3f7a", "safefcgi-keepconn8": "#3f86d9",
           "safefcgi-keepconn32": "#5aa0e6", "safefcgi-threaded": "#9cc6f0",
           "flup6": "#d9822b", "uwsgi": "#3a9b53", "gunicorn": "#8e5fb5",
           "gunicorn-uwsgi": "#b796d4"}


def versions() -> dict:
    out = {}
    for name in ("safefcgi", "flup6", "uWSGI", "gunicorn", "Django", "psycopg2-binary"):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    for command in (["nginx", "-v"], ["wrk", "-v"]):
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=10)
            out[command[0]] = (done.stderr or done.stdout).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.TimeoutExpired):
            out[command[0]] = None
    return out


def git_revision(repo: Path) -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(repo), "describe", "--always", "--dirty"],
                              capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() or None


# -- summary ------------------------------------------------------------------------------


def summarise(runs: list[dict]) -> dict:
    """view -> contender -> medians and spread of the measured rounds (not scale runs)."""
    grouped: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for run in runs:
        if "round" in run:
            grouped[run["view"], run["contender"]].append(run)
    summary: dict[str, dict[str, dict]] = defaultdict(dict)
    for (view, contender), group in grouped.items():
        rps = [r["rps"] for r in group]
        cpu = [r["cpu_us_per_request"] for r in group if r["cpu_us_per_request"] is not None]
        median = statistics.median(rps)
        summary[view][contender] = {
            "rounds": len(group), "rps_median": round(median, 1),
            "rps_min": min(rps), "rps_max": max(rps),
            "spread_pct": round((max(rps) - min(rps)) / median * 100, 1) if median else None,
            "p50_us": statistics.median(r["p50_us"] for r in group),
            "p99_us": statistics.median(r["p99_us"] for r in group),
            "cpu_us_per_request": round(statistics.median(cpu), 1) if cpu else None,
            "errors": sum(r["errors"] for r in group),
            "requests": sum(r["requests"] for r in group),
            "disturbed_rounds": sum(1 for r in group if r["disturbed"]),
        }
    for rows in summary.values():
        for name, row in rows.items():
            for baseline in ("flup6", "uwsgi", "safefcgi"):
                base = rows.get(baseline, {}).get("rps_median")
                row[f"x_{baseline}"] = round(row["rps_median"] / base, 2) if base else None
            base_p99 = rows.get("safefcgi", {}).get("p99_us")
            row["p99_x_safefcgi"] = round(row["p99_us"] / base_p99, 2) if base_p99 else None
            del name
    return dict(summary)


def _get(summary: dict, view: str, contender: str, key: str):
    return summary.get(view, {}).get(contender, {}).get(key)


def targets(results: dict) -> list[dict]:
    """The project's goals, each with the measured value and met / missed."""
    summary = results.get("summary", {})
    out = []

    def add(name: str, value, goal: str, met) -> None:
        out.append({"target": name, "measured": value, "goal": goal,
                    "met": None if value is None else bool(met)})

    def at_least(name: str, view: str, contender: str, key: str, goal: float) -> None:
        value = _get(summary, view, contender, key)
        add(name, value, f">= {goal}x", value is not None and value >= goal)

    cpu = _get(summary, "plain", "safefcgi", "cpu_us_per_request")
    add("server overhead, plain WSGI (CPU us/request, prefork)", cpu, "<= 40",
        cpu is not None and cpu <= 40)
    at_least("Django /hello, safefcgi vs uWSGI fastcgi", "hello", "safefcgi", "x_uwsgi", 1.0)
    at_least("/db, safefcgi vs flup6", "db", "safefcgi", "x_flup6", 1.5)
    for kept in KEPT:
        for view in ("hello", "db"):
            at_least(f"/{view}, {kept} vs one connection per request", view, kept,
                     "x_safefcgi", 1.15)
            value = _get(summary, view, kept, "p99_x_safefcgi")
            add(f"/{view}, {kept} p99 vs one connection per request", value, "<= 1.5x",
                value is not None and value <= 1.5)
        at_least(f"Django /hello, {kept} vs uWSGI fastcgi", "hello", kept, "x_uwsgi", 1.1)
        ours = _get(summary, "hello", kept, "rps_median")
        theirs = _get(summary, "hello", "gunicorn-uwsgi", "rps_median")
        ratio = round(ours / theirs, 2) if ours and theirs else None
        add(f"Django /hello, {kept} vs gunicorn uwsgi protocol", ratio, "> 1.0x",
            ratio is not None and ratio > 1.0)
        at_least(f"/db, {kept} vs uWSGI fastcgi", "db", kept, "x_uwsgi", 1.0)
        errors = sum(r["errors"] for r in results.get("runs", []) if r["contender"] == kept)
        add(f"{kept}: failed responses, all runs", errors, "0", errors == 0)
    memory = results.get("memory", {})
    ours = memory.get("safefcgi", {}).get("worker_uss_kib_mean")
    theirs = memory.get("flup6", {}).get("worker_uss_kib_mean")
    below = round((1 - ours / theirs) * 100, 1) if ours and theirs else None
    add("per-child USS below flup6's (%)", below, ">= 30", below is not None and below >= 30)
    upload = results.get("upload_100mb", {}).get("safefcgi", {})
    growth = upload.get("peak_rss_growth_kib")
    add("100 MB upload, peak child RSS growth (MiB)",
        None if growth is None else round(growth / 1024, 1), "< 20",
        growth is not None and growth < 20 * 1024 and upload.get("correct"))
    errors = sum(r["errors"] for r in results.get("runs", []))
    add("wrong or failed responses, all runs", errors, "0", errors == 0)
    return out


# -- text ---------------------------------------------------------------------------------


def _fmt(value, pattern: str = "{:.0f}", missing: str = "-") -> str:
    return missing if value is None else pattern.format(value)


def _ordered(mapping: dict, order: tuple[str, ...]) -> list[str]:
    return [k for k in order if k in mapping] + sorted(k for k in mapping if k not in order)


def markdown_table(headers: list[str], aligns: str, rows: list[list]) -> str:
    """A Markdown table; ``aligns`` has one letter per column: l(eft) or r(ight)."""
    rule = "".join("---|" if a == "l" else "--:|" for a in aligns)
    lines = ["| " + " | ".join(headers) + " |", "|" + rule]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def table(results: dict) -> str:
    """The main table, as Markdown."""
    summary = results.get("summary", {})
    rows = []
    for view in _ordered(summary, VIEW_ORDER):
        for name, row in ((n, summary[view][n]) for n in _ordered(summary[view],
                                                                  CONTENDER_ORDER)):
            rows.append([
                view, name, _fmt(row["rps_median"]), f"±{_fmt(row['spread_pct'])}%",
                _fmt(row["p50_us"] / 1000, "{:.2f}"), _fmt(row["p99_us"] / 1000, "{:.2f}"),
                _fmt(row["cpu_us_per_request"]), _fmt(row.get("x_safefcgi"), "{:.2f}"),
                _fmt(row["x_flup6"], "{:.2f}"), _fmt(row["x_uwsgi"], "{:.2f}"), row["errors"],
                f"{row['disturbed_rounds']}/{row['rounds']}"])
    return markdown_table(["view", "server", "req/s (median)", "spread", "p50 ms", "p99 ms",
                           "CPU µs/req", "× safefcgi", "× flup6", "× uWSGI", "errors",
                           "disturbed"], "llrrrrrrrrrr", rows)


def memory_table(results: dict) -> str:
    memory = results.get("memory")
    if not memory:
        return ""
    rows = [[name, row["workers"], row["requests_served"],
             f"{row['worker_uss_kib_mean'] / 1024:.1f}",
             f"{row['worker_pss_kib_mean'] / 1024:.1f}",
             f"{row['tree_pss_kib'] / 1024:.1f}", f"{row['tree_uss_kib'] / 1024:.1f}"]
            for name, row in ((n, memory[n]) for n in _ordered(memory, CONTENDER_ORDER))]
    return markdown_table(["server", "workers", "requests served", "USS per worker MiB",
                           "PSS per worker MiB", "tree PSS MiB", "tree USS MiB"],
                          "lrrrrrr", rows)


def upload_table(results: dict) -> str:
    upload = results.get("upload_100mb")
    if not upload:
        return ""
    rows = [[name, f"{row['peak_rss_growth_kib'] / 1024:.1f}",
             "correct" if row["correct"] else "WRONG " + row["response"]]
            for name, row in ((n, upload[n]) for n in _ordered(upload, CONTENDER_ORDER))]
    return markdown_table(["server", "peak RSS growth MiB (100 MiB upload)", "response"],
                          "lrl", rows)


def scale_table(runs: list[dict] | None, key: str, title: str) -> str:
    if not runs:
        return ""
    levels = sorted({r[key] for r in runs})
    names = _ordered({r["contender"]: 1 for r in runs}, CONTENDER_ORDER)
    cell = {(r["contender"], r[key]): r for r in runs}

    def measured(run: dict | None) -> str:
        if run is None:
            return "-"
        errors = f" ({run['errors']} err)" if run["errors"] else ""
        return f"{run['rps']:.0f} / {run['p99_us'] / 1000:.1f}{errors}"

    rows = [[name, *(measured(cell.get((name, level))) for level in levels)] for name in names]
    return markdown_table([title, *map(str, levels)], "l" + "r" * len(levels), rows)


def targets_table(results: dict) -> str:
    verdicts = {True: "met", False: "**missed**", None: "not measured"}
    rows = [[row["target"], row["goal"], _fmt(row["measured"], "{}"), verdicts[row["met"]]]
            for row in results.get("targets", [])]
    return markdown_table(["target", "goal", "measured", ""], "llrl", rows)


def machine_line(results: dict) -> str:
    meta = results["meta"]
    machine = meta["machine"]
    v = meta["versions"]
    return (f"{meta['mode']} run of {meta['started']} ({meta['minutes']} min, git "
            f"{meta['git']}) on {machine['cpu']}, {machine['cores']} cores, "
            f"{machine['memory_gib']} GiB, {machine['kernel']}; Python {meta['python']}, "
            f"Django {v.get('Django')}, flup6 {v.get('flup6')}, uWSGI {v.get('uWSGI')}, "
            f"gunicorn {v.get('gunicorn')}, {v.get('nginx')}, {v.get('wrk')}. "
            f"Other load before the run: {meta['idle_foreign_cores']:.2f} cores; a round is "
            f"flagged disturbed when processes outside the benchmark used more than "
            f"{meta['disturbed_threshold_cores']} of a core during it.")


def text(results: dict) -> str:
    parts = [machine_line(results), "", table(results), "", targets_table(results)]
    for title, body in (
        ("Memory after warm-up", memory_table(results)),
        ("100 MiB upload", upload_table(results)),
        ("Concurrency (Django /hello): req/s / p99 ms",
         scale_table(results.get("concurrency"), "connections", "server \\ connections")),
        ("Children (Django /hello, 16 connections): req/s / p99 ms",
         scale_table(results.get("children"), "children", "server \\ children")),
    ):
        if body:
            parts += ["", f"**{title}**", "", body]
    return "\n".join(parts)


# -- chart --------------------------------------------------------------------------------


def chart(results: dict) -> str:
    """An SVG with two panels per view: req/s and p99 latency, one bar per server."""
    summary = results.get("summary", {})
    views = _ordered(summary, VIEW_ORDER)
    bar, gap, label_w, panel_w = 14, 10, 130, 300
    names = CONTENDER_ORDER
    block = len(names) * bar + gap + 22
    height = 60 + block * len(views) + 40
    width = label_w + 2 * panel_w + 120
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'font-family="sans-serif" font-size="11">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="10" y="20" font-size="14" font-weight="bold">'
           f'{escape(results["meta"]["mode"])} run, {escape(results["meta"]["started"])}: '
           f'median req/s (longer is better) and p99 latency (shorter is better)</text>']
    y = 50
    for view in views:
        rows = summary[view]
        top_rps = max((r["rps_median"] for r in rows.values()), default=1) or 1
        top_p99 = max((r["p99_us"] for r in rows.values()), default=1) or 1
        out.append(f'<text x="10" y="{y + 10}" font-weight="bold">{escape(view)}</text>')
        y += 16
        for name in names:
            row = rows.get(name)
            if row is None:
                continue
            colour = COLOURS.get(name, "#777")
            out.append(f'<text x="{label_w - 6}" y="{y + bar - 3}" text-anchor="end">'
                       f'{escape(name)}</text>')
            w = row["rps_median"] / top_rps * (panel_w - 60)
            out.append(f'<rect x="{label_w}" y="{y}" width="{w:.1f}" height="{bar - 2}" '
                       f'fill="{colour}"/>')
            out.append(f'<text x="{label_w + w + 4:.1f}" y="{y + bar - 3}">'
                       f'{row["rps_median"]:.0f}/s</text>')
            x2 = label_w + panel_w + 40
            w = row["p99_us"] / top_p99 * (panel_w - 60)
            out.append(f'<rect x="{x2}" y="{y}" width="{w:.1f}" height="{bar - 2}" '
                       f'fill="{colour}" opacity="0.6"/>')
            out.append(f'<text x="{x2 + w + 4:.1f}" y="{y + bar - 3}">'
                       f'{row["p99_us"] / 1000:.1f} ms</text>')
            y += bar
        y += gap
    out.append(f'<text x="{label_w}" y="{y + 14}">requests per second</text>')
    out.append(f'<text x="{label_w + panel_w + 40}" y="{y + 14}">p99 latency</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


# -- files --------------------------------------------------------------------------------


def write(results: dict, directory: Path, update_readme: bool = True) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    mode = results["meta"]["mode"]
    json_path = directory / f"{stamp}-{mode}.json"
    json_path.write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")
    svg_path = directory / f"{stamp}-{mode}.svg"
    svg_path.write_text(chart(results))
    latest_json = directory / f"latest-{mode}.json"
    latest_json.write_text(json_path.read_text())
    latest_svg = directory / f"latest-{mode}.svg"
    latest_svg.write_text(svg_path.read_text())
    paths = [json_path, svg_path, latest_json, latest_svg]
    if update_readme:
        readme = directory.parent / "README.md"
        paths.append(readme)
        section = (f"{README_START}\n\n{text(results)}\n\n![chart](results/{latest_svg.name})"
                   f"\n\n{README_END}")
        content = readme.read_text() if readme.exists() else f"{README_START}\n{README_END}\n"
        head, _, rest = content.partition(README_START)
        _, _, tail = rest.partition(README_END)
        readme.write_text(head + section + tail)
    return paths
