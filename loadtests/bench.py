"""Benchmark of the flash-sale purchase path, every scenario measured in one run.

    python -m loadtests.bench [--tickets 10000] [--buyers 256] [--concurrency 64]
                              [--duration 8] [--backlog 20000] [--runs 1] [--out docs/benchmarks]

Creates its own PostgreSQL database (`bench_ticketing`, dropped and recreated, migrated)
and uses Redis database 10 (FLUSHDB of that number only). Starts gunicorn (2 workers,
the product's gunicorn.conf.py) and a Celery worker (2 processes) as subprocesses on
free loopback ports, logs buyers in once through POST /login/, then measures:

  a. floor       authenticated GET /events/<id>/ (req/s, latency)
  a'. accept     purchases that are all accepted (event too big to sell out)
  b. sale        flash sale of --tickets, 1-4 per request, demand >> stock, clients that
                 start before the opening and poll their orders honouring Retry-After
  c. flood       purchases once nothing is left (sold_out path)
  d. naive       the same sale against a naive design (commit in the request under
                 select_for_update; loadtests/naive, a second gunicorn)
  e. scale-out   draining a backlog of --backlog pending orders with 1, 2, 4 processes

Load comes from `loadtests.loadgen` (gevent + geventhttpclient) in a process of its own.
Every scenario ends with the invariants (nothing oversold, nothing lost or pending, the
Redis gate equal to total - sold); a broken one stops the run with exit status 2.
Writes results.json, report.md and PNG charts to --out (profiles.md with --profile).
Defaults take about 90 s on 2 cores (a slower purchase path makes the sales longer;
--sale-timeout bounds each).
"""
from __future__ import annotations

import argparse
import os
import platform
import shlex
import statistics
import sys
import time
import traceback
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "docs" / "benchmarks"
DEFAULTS = {"tickets": 10_000, "buyers": 256, "concurrency": 64, "duration": 8.0, "backlog": 20_000, "runs": 1}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tickets", type=int, default=DEFAULTS["tickets"], help="tickets of the flash sale")
    parser.add_argument("--buyers", type=int, default=DEFAULTS["buyers"], help="distinct buyers (each logs in once)")
    parser.add_argument("--concurrency", type=int, default=DEFAULTS["concurrency"], help="concurrent clients")
    parser.add_argument("--duration", type=float, default=DEFAULTS["duration"],
                        help="seconds of each timed scenario (floor, accept, flood)")
    parser.add_argument("--backlog", type=int, default=DEFAULTS["backlog"], help="pending orders per scale-out drain")
    parser.add_argument("--runs", type=int, default=DEFAULTS["runs"], help="repeat scenarios a-d; medians reported")
    parser.add_argument("--sale-timeout", type=float, default=60.0, help="upper bound of a sale, seconds")
    parser.add_argument("--max-requests", type=int, default=500_000, help="upper bound of requests per scenario")
    parser.add_argument("--api-workers", type=int, default=2, help="gunicorn workers of the API (and of the naive one)")
    parser.add_argument("--profile", action="store_true",
                        help="py-spy the API and worker processes during the accept and sale scenarios")
    parser.add_argument("--skip-scale-out", action="store_true")
    parser.add_argument("--keep-db", action="store_true", help="leave bench_ticketing for inspection")
    parser.add_argument("--out", type=Path, default=OUT)
    return parser.parse_args(argv)


def command_line(argv: list[str]) -> str:
    return " ".join(["python -m loadtests.bench", *(shlex.quote(a) for a in argv)])


def code_version() -> dict:
    """The commit measured, and product files changed in the work tree (read-only git)."""
    import subprocess

    from loadtests.stack import ROOT

    def git(*words: str) -> str:
        return subprocess.run(["git", *words], cwd=ROOT, capture_output=True, text=True).stdout

    status = git("status", "--porcelain", "--", "core", "api", "workers", "gunicorn.conf.py")
    return {"commit": git("rev-parse", "--short", "HEAD").strip(),
            "uncommitted_product_files": [line[3:] for line in status.splitlines() if line.strip()]}


def setup(args, work_dir: Path):
    """Database, Redis DB, Django in this process, the stack and the buyers' tokens."""
    import psutil

    from loadtests import stack as st

    busy = psutil.cpu_percent(interval=1.0) * (os.cpu_count() or 1) / 100
    if busy > 0.3:
        print(f"WARNING: the machine is already busy ({busy:.1f} cores) before the benchmark: "
              "figures will be lower and noisier (see the `other` CPU column)", flush=True)
    env = st.bench_env(str(work_dir / "metrics"))
    (work_dir / "metrics").mkdir()
    os.environ.update(env)
    st.database_recreate()
    st.redis_flush()
    from loadtests import prepare

    prepare.setup_django()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    stack = st.Stack(env, work_dir)
    meter = st.Meter(stack)
    meter.start()
    api_url = stack.start_api("api", port=st.free_port(), workers=args.api_workers)
    stack.start_worker("worker", concurrency=2)
    names = prepare.users_prepare(prefix=prepare.BUYER_PREFIX, count=args.buyers)
    from loadtests.driver import Context, login_all

    started = time.monotonic()
    tokens = login_all(api_url, names, prepare.PASSWORD)
    print(f"{len(tokens)} buyers logged in in {time.monotonic() - started:.1f} s; api {api_url}", flush=True)
    return Context(args=args, stack=stack, meter=meter, api_url=api_url, tokens=tokens,
                   buyer_ids=prepare.user_ids(names), work_dir=work_dir, busy_before=round(busy, 2))


def run_once(ctx, run: dict) -> None:
    """Run scenarios a-d, filling `run` as they finish (a failure leaves what was measured)."""
    from loadtests import scenarios as sc

    run["floor"] = sc.scenario_floor(ctx)
    run["accept"] = sc.scenario_accept(ctx)
    run["sale"] = sc.scenario_sale(ctx)
    run["flood"] = sc.scenario_flood(ctx, run["sale"]["event_id"])
    run["naive"] = sc.scenario_naive(ctx)


def summarize(runs: list[dict]) -> dict:
    """Median over runs of every number; a key some runs lack (an outcome that happened in
    one run only) takes the median of the runs that have it."""
    def walk(values: list):
        present = [v for v in values if v is not None]
        if not present:
            return None
        first = present[0]
        if isinstance(first, dict):
            dicts = [v for v in present if isinstance(v, dict)]
            keys = dict.fromkeys(k for d in dicts for k in d if not k.startswith("_"))
            return {k: walk([d.get(k) for d in dicts]) for k in keys}
        numbers = [v for v in present if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if len(present) > 1 and len(numbers) == len(present) and len(set(numbers)) > 1:
            return round(statistics.median(numbers), 3)
        return first

    return walk(runs)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    from loadtests import report, scenarios
    from loadtests import stack as st

    work_dir = st.tmp_dir("bench-ticketing-")
    version = code_version()
    started = time.monotonic()
    runs, scale_out, failure, ctx, invariant_broken = [], {}, None, None, False
    try:
        ctx = setup(args, work_dir)
        for index in range(args.runs):
            print(f"--- run {index + 1}/{args.runs}", flush=True)
            runs.append({})
            run_once(ctx, runs[-1])
        if not args.skip_scale_out:
            print("--- scale-out", flush=True)
            scale_out = scenarios.scenario_scale_out(ctx)
    except scenarios.InvariantError as exc:
        failure, invariant_broken = f"INVARIANT BROKEN: {exc}", True
    except Exception:
        failure = "BENCHMARK FAILED:\n" + traceback.format_exc()
    finally:
        if ctx is not None:
            ctx.stack.stop_all()
            ctx.meter.stop()
    complete = [run for run in runs if "naive" in run]
    results = {
        "command": command_line(argv), "args": {k: str(v) for k, v in vars(args).items()},
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "code": version,
        "wall_seconds": round(time.monotonic() - started, 1),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
                    "busy_cores_before_start": ctx.busy_before if ctx else None},
        "runs": [{k: _public(v) for k, v in run.items()} for run in runs],
        "summary": summarize(complete) if complete else {},
        "scale_out": scale_out,
        "peak_rss_mb": sorted(ctx.meter.peak_rss.values(), key=lambda e: e["name"]) if ctx else [],
        "failure": failure, "invariant_broken": invariant_broken, "logs": str(work_dir),
    }
    report.write(results, complete[-1] if complete else None, args.out)
    if ctx is not None and ctx.profiles:
        from loadtests import profiling

        (args.out / "profiles.md").write_text(profiling.markdown(ctx.profiles, results["command"]))
    if not args.keep_db:
        st.database_drop()
        st.redis_flush()
    print(report.console_summary(results), flush=True)
    if failure:
        banner = "!" * 78
        print(f"\n{banner}\n{failure}\n(logs of the servers: {work_dir})\n{banner}", file=sys.stderr, flush=True)
        return 2
    return 0


def _public(value):
    if isinstance(value, dict):
        return {k: _public(v) for k, v in value.items() if not k.startswith("_")}
    return value


if __name__ == "__main__":
    sys.exit(main())
