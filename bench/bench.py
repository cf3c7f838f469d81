"""Benchmark safefcgi against stock flup6, uWSGI (FastCGI) and gunicorn; see README.md.

Run it through ``bench/run``, which installs what is needed first.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import zlib
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # tests.support, safefcgi

import load  # noqa: E402
import measure  # noqa: E402
import report  # noqa: E402
import services  # noqa: E402
from load import View, lua_string  # noqa: E402
from services import Contender  # noqa: E402

log = logging.getLogger("bench")

RESULTS_DIR = REPO / "bench" / "results"
DISTURBED_CORES = 0.25  # other processes used more than a quarter of a core on average
MEMORY_WARMUP_REQUESTS = 10_000
BIG_UPLOAD = 100 * 1024 * 1024
UPLOAD_CHUNK = bytes(range(256)) * 256  # 64 KiB
SMALL_UPLOAD = 10 * 1024 * 1024


@dataclass(frozen=True)
class Plan:
    """How long and how often: the only difference between --quick and a full run."""

    mode: str
    repeats: int
    seconds: float
    warmup_seconds: float
    connections: int
    children: int
    concurrency_levels: tuple[int, ...]
    child_counts: tuple[int, ...]
    scale_seconds: float

    @classmethod
    def full(cls) -> Plan:
        return cls("full", repeats=5, seconds=6, warmup_seconds=2, connections=16, children=2,
                   concurrency_levels=(1, 4, 16, 64, 256), child_counts=(1, 2, 4, 8),
                   scale_seconds=4)

    @classmethod
    def quick(cls) -> Plan:
        return cls("quick", repeats=2, seconds=2, warmup_seconds=1, connections=16,
                   children=2, concurrency_levels=(1, 16, 256), child_counts=(1, 2, 4),
                   scale_seconds=2)


def upload_crc(size: int) -> int:
    crc, left = 0, size
    while left:
        piece = UPLOAD_CHUNK[:left]
        crc = zlib.crc32(piece, crc)
        left -= len(piece)
    return crc


def django_views() -> list[View]:
    upload_body = ('wrk.method = "POST"\n'
                   'wrk.headers["Content-Type"] = "application/octet-stream"\n'
                   f"wrk.body = string.rep({lua_string('x')}, {SMALL_UPLOAD})\n")
    return [
        View("hello", "/bench/hello", lua_string("Hello from the benchmark\n")),
        View("db", "/bench/db?token=bench42", lua_string("bench42")),
        View("big", "/bench/big",
             "(function() local s = {} for i = 0, 255 do s[#s + 1] = string.char(i) end "
             "return string.rep(table.concat(s), 4096) end)()", connections=8),
        View("upload10m", "/bench/upload",
             lua_string(f"{SMALL_UPLOAD} {zlib.crc32(b'x' * SMALL_UPLOAD)}"),
             setup_lua=upload_body, connections=4),
    ]


PLAIN_VIEW = View("plain", "/bench/hello", lua_string("Hello from plain WSGI\n"))


def build_contenders(base: Path, env: dict, children: int, plain: bool,
                     prefix: str = "") -> list[Contender]:
    prefix = prefix or ("plain-" if plain else "")
    sock = base / "sock"
    sock.mkdir(exist_ok=True)

    def path(name: str) -> Path:
        return sock / f"{prefix}{name}.sock"

    return [
        services.safefcgi("safefcgi", path("safefcgi"), children, env, plain=plain),
        services.safefcgi("safefcgi-keepconn8", path("safefcgi-kc8"), children, env,
                          plain=plain, keepalive=8),
        services.safefcgi("safefcgi-keepconn32", path("safefcgi-kc32"), children, env,
                          plain=plain, keepalive=32),
        services.safefcgi("safefcgi-threaded", path("safefcgi-thr"), children, env,
                          plain=plain, threaded=True),
        services.flup("flup6", path("flup6"), children, env, plain=plain),
        services.uwsgi("uwsgi", path("uwsgi"), children, env, plain=plain),
        services.gunicorn("gunicorn", path("gunicorn"), children, env, plain=plain),
        services.gunicorn("gunicorn-uwsgi", path("gunicorn-uwsgi"), children, env, plain=plain,
                          protocol="uwsgi"),
    ]


class Bench:
    def __init__(self, plan: Plan, base: Path, only: set[str] | None):
        self.plan = plan
        self.base = base
        self.only = only
        self.logs = base / "logs"
        self.logs.mkdir()
        self.scripts = base / "lua"
        self.scripts.mkdir()
        self.runs: list[dict] = []
        self.served: dict[str, int] = {}
        self.watch = measure.LoadWatch(os.getpid())

    # -- one measured load ------------------------------------------------------------

    def measure(self, contender: Contender, view: View, seconds: float,
                connections: int | None = None) -> dict:
        connections = connections or view.connections or self.plan.connections
        cpu_before = measure.tree_cpu_seconds(contender.pid)
        self.watch.start()
        result = load.run_wrk(contender.url, view, seconds, connections, self.scripts)
        foreign = self.watch.stop()
        cpu = measure.tree_cpu_seconds(contender.pid) - cpu_before
        self.served[contender.name] = self.served.get(contender.name, 0) + result.requests
        run = {
            "view": view.name, "contender": contender.name, "connections": connections,
            "requests": result.requests, "seconds": round(result.seconds, 3),
            "rps": round(result.rps, 1), "p50_us": result.p50_us, "p99_us": result.p99_us,
            "max_us": result.max_us,
            "cpu_us_per_request": round(cpu / result.requests * 1e6, 1) if result.requests
            else None,
            "errors": result.errors, "bad_responses": result.bad,
            "socket_errors": result.socket_errors, "first_bad": result.first_bad,
            "foreign_cores": round(foreign, 3), "disturbed": foreign > DISTURBED_CORES,
        }
        log.info("%-10s %-18s c=%-3d %8.0f req/s  p99 %6.1f ms  cpu %6.1f us/req  "
                 "errors %d%s", view.name, contender.name, connections, result.rps,
                 result.p99_us / 1000, run["cpu_us_per_request"] or 0, result.errors,
                 f"  DISTURBED ({foreign:.2f} cores)" if run["disturbed"] else "")
        if result.first_bad:
            log.warning("  first bad response: %s", result.first_bad)
        return run

    def throughput(self, contenders: list[Contender], views: list[View]) -> None:
        """Interleaved repeats: every contender once per round, starting elsewhere each round."""
        for view in views:
            for contender in contenders:
                load.run_wrk(contender.url, view, self.plan.warmup_seconds,
                             view.connections or self.plan.connections, self.scripts)
            for round_number in range(self.plan.repeats):
                shift = round_number % len(contenders)
                for contender in contenders[shift:] + contenders[:shift]:
                    run = self.measure(contender, view, self.plan.seconds)
                    run["round"] = round_number
                    self.runs.append(run)

    # -- memory -----------------------------------------------------------------------

    def memory(self, contenders: list[Contender], views: list[View]) -> dict:
        """USS/PSS per worker and per tree of fresh servers after 10,000 requests each.

        Fresh, so that what earlier loads left (buffers of the 1 MiB and 10 MiB
        views) does not count: this is a site serving small pages and queries.
        """
        out = {}
        for contender in contenders:
            served = 0
            for _ in range(40):
                if served >= MEMORY_WARMUP_REQUESTS:
                    break
                for view in views:
                    served += load.run_wrk(contender.url, view, 1, self.plan.connections,
                                           self.scripts).requests
            self.served[contender.name] = served
            workers = measure.children_of(contender.pid) or [contender.pid]
            per_worker = [measure.memory(pid) for pid in workers]
            tree = sum((measure.memory(pid) for pid in measure.tree(contender.pid)),
                       measure.Memory(0, 0, 0))
            out[contender.name] = {
                "requests_served": self.served.get(contender.name, 0),
                "workers": len(workers),
                "worker_uss_kib": [m.uss for m in per_worker],
                "worker_pss_kib": [m.pss for m in per_worker],
                "worker_rss_kib": [m.rss for m in per_worker],
                "worker_uss_kib_mean": round(statistics.mean(m.uss for m in per_worker)),
                "worker_pss_kib_mean": round(statistics.mean(m.pss for m in per_worker)),
                "tree_uss_kib": tree.uss, "tree_pss_kib": tree.pss, "tree_rss_kib": tree.rss,
            }
            log.info("memory %-18s worker USS %6d KiB PSS %6d KiB; tree PSS %6d KiB",
                     contender.name, out[contender.name]["worker_uss_kib_mean"],
                     out[contender.name]["worker_pss_kib_mean"], tree.pss)
        return out

    def upload_peak(self, contenders: list[Contender]) -> dict:
        """Peak RSS growth of the worker that serves one 100 MB upload (fresh servers)."""
        expected = f"{BIG_UPLOAD} {upload_crc(BIG_UPLOAD)}".encode()
        out = {}
        for contender in contenders:
            workers = measure.children_of(contender.pid) or [contender.pid]
            before = {}
            for pid in workers:
                before[pid] = measure.status_kib(pid, "VmRSS")
                measure.reset_peak_rss(pid)
            status, body = services.upload(contender.port, "/bench/upload", BIG_UPLOAD,
                                           UPLOAD_CHUNK)
            growth = max(measure.status_kib(pid, "VmHWM") - before[pid] for pid in workers
                         if pid in before)
            out[contender.name] = {"upload_bytes": BIG_UPLOAD, "peak_rss_growth_kib": growth,
                                   "correct": status == 200 and body == expected,
                                   "response": f"{status} {body[:60]!r}"}
            log.info("100 MB upload %-18s peak RSS growth %7d KiB  %s", contender.name, growth,
                     "ok" if out[contender.name]["correct"] else f"WRONG: {status} {body[:60]!r}")
        return out

    # -- scale ------------------------------------------------------------------------

    def concurrency(self, contenders: list[Contender], view: View) -> list[dict]:
        runs = []
        for level in self.plan.concurrency_levels:
            for contender in contenders:
                run = self.measure(contender, view, self.plan.scale_seconds, connections=level)
                runs.append(run)
        return runs

    def children(self, env: dict, view: View) -> list[dict]:
        """Throughput with 1..8 children: each count is its own short-lived server."""
        runs = []
        for count in self.plan.child_counts:
            for make in (services.safefcgi, services.flup, services.uwsgi):
                name = make.__name__.replace("flup", "flup6")
                contender = make(name, self.base / "sock" / f"scale-{name}.sock", count, env)
                with ExitStack() as stack:
                    contender.start(self.logs)
                    stack.callback(contender.stop)
                    contender.wait_for_socket()
                    nginx = services.Nginx(self.base / "scale")
                    nginx.start([contender])
                    stack.callback(nginx.stop)
                    load.run_wrk(contender.url, view, self.plan.warmup_seconds,
                                 self.plan.connections, self.scripts)
                    run = self.measure(contender, view, self.plan.scale_seconds)
                    run["children"] = count
                    runs.append(run)
                    contender.port = 0
        return runs


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few minutes instead of ~20")
    parser.add_argument("--only", help="comma-separated phases: throughput,plain,memory,"
                        "upload,concurrency,children (default: all)")
    parser.add_argument("--repeats", type=int, help="override the number of rounds")
    parser.add_argument("--seconds", type=float, help="override the length of each load")
    parser.add_argument("--no-readme", action="store_true",
                        help="do not rewrite the results section of bench/README.md")
    return parser.parse_args(argv)


PHASES = ("throughput", "plain", "memory", "upload", "concurrency", "children")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    plan = Plan.quick() if args.quick else Plan.full()
    overrides = {k: v for k, v in (("repeats", args.repeats), ("seconds", args.seconds)) if v}
    plan = dataclasses.replace(plan, **overrides)
    phases = set(args.only.split(",")) if args.only else set(PHASES)
    unknown = phases - set(PHASES)
    if unknown:
        print(f"bench: unknown phase(s): {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    base = Path(tempfile.mkdtemp(prefix="sfbench-"))
    base.chmod(0o755)  # PostgreSQL runs as its own user and must reach its directory
    started = time.time()
    watch = measure.LoadWatch(os.getpid())
    watch.start()
    time.sleep(2)
    idle_foreign = watch.stop()
    log.info("plan %s; other load before starting: %.2f cores; work dir %s", plan.mode,
             idle_foreign, base)
    bench = Bench(plan, base, phases)
    results: dict = {"plan": dataclasses.asdict(plan), "phases": sorted(phases)}
    with ExitStack() as stack:
        postgres = services.start_postgres(base)
        stack.callback(postgres.stop)
        env = postgres.django_env()
        groups = []
        if phases & {"throughput", "concurrency"}:
            groups.append((False, django_views()))
        if "plain" in phases:
            groups.append((True, [PLAIN_VIEW]))
        for plain, views in groups:
            with ExitStack() as group:
                contenders = build_contenders(base, env, plan.children, plain)
                for contender in contenders:
                    contender.start(bench.logs)
                    group.callback(contender.stop)
                for contender in contenders:
                    contender.wait_for_socket()
                nginx = services.Nginx(base / ("nginx-plain" if plain else "nginx-django"))
                nginx.start(contenders)
                group.callback(nginx.stop)
                if plain or "throughput" in phases:
                    bench.throughput(contenders, views)
                if plain:
                    continue
                by_name = {c.name: c for c in contenders}
                if "concurrency" in phases:
                    results["concurrency"] = bench.concurrency(
                        [by_name[n] for n in ("safefcgi", "safefcgi-keepconn32", "flup6",
                                              "uwsgi")], views[0])
        if phases & {"memory", "upload"}:
            with ExitStack() as group:
                fresh = [c for c in build_contenders(base, env, plan.children, plain=False,
                                                     prefix="fresh-")
                         if not c.keepalive and c.name != "gunicorn-uwsgi"]
                # --lazy: what children importing the project themselves cost.
                fresh.insert(1, services.safefcgi("safefcgi-lazy",
                                                  base / "sock" / "fresh-safefcgi-lazy.sock",
                                                  plan.children, env, lazy=True))
                for contender in fresh:
                    contender.start(bench.logs)
                    group.callback(contender.stop)
                for contender in fresh:
                    contender.wait_for_socket()
                nginx = services.Nginx(base / "nginx-fresh")
                nginx.start(fresh)
                group.callback(nginx.stop)
                if "memory" in phases:
                    results["memory"] = bench.memory(fresh, django_views()[:2])
                if "upload" in phases:
                    results["upload_100mb"] = bench.upload_peak(fresh)
        if "children" in phases:
            results["children"] = bench.children(env, django_views()[0])
    results["runs"] = bench.runs
    # A run of some phases, or with shorter loads, must not pass for the latest full one.
    complete = phases == set(PHASES) and not overrides
    mode = plan.mode if complete else "partial"
    results["meta"] = {
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(started)),
        "minutes": round((time.time() - started) / 60, 1),
        "mode": mode, "machine": measure.machine_description(),
        "python": platform.python_version(), "idle_foreign_cores": round(idle_foreign, 3),
        "disturbed_threshold_cores": DISTURBED_CORES, "versions": report.versions(),
        "git": report.git_revision(REPO),
    }
    results["summary"] = report.summarise(bench.runs)
    results["targets"] = report.targets(results)
    shutil.rmtree(base, ignore_errors=True)  # kept only when the run failed, for its logs
    paths = report.write(results, RESULTS_DIR, update_readme=complete and not args.no_readme)
    print(report.text(results))
    for path in paths:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
