"""Benchmark of the flash-sale hot path, every scenario measured in one run.

    python -m loadtests.bench [--tickets 10000] [--buyers 256] [--concurrency 64]
                              [--duration 6] [--backlog 20000] [--runs 1] [--out docs/benchmarks]
                              [--baseline df71965 | --no-baseline] [--crowd 2000 | --skip-crowd]
                              [--skip-stage-profiles] [--skip-scale-out]
                              [--scale-out-engines redis/single,rabbitmq/cluster,...]

Creates its own PostgreSQL database (`bench_ticketing`, dropped and recreated, migrated)
and uses Redis database 10 (FLUSHDB of that number only). Starts the API as production
does (`python -m core.serve`, granian, 2 workers) and a Celery worker (2 processes) as
subprocesses on free loopback ports, logs buyers in once through POST /login/, then
measures in each run:

  ref.  bare WSGI app on the same server (its ceiling) and GET /health/ (the framework floor)
  a.  floor        authenticated GET /events/<id>/ (req/s, latency)
  a'. accept       purchases that are all accepted (event too big to sell out)
  p.  poll         GET /orders/<id>/ by its owner, every order pending / every order confirmed
  b.  sale         flash sale of --tickets, 1-4 per request, demand >> stock, clients that
                   start before the opening and poll their orders honouring Retry-After
  c.  flood        purchases once nothing is left (sold_out path)
  d.  naive        the same sale, then its sold-out flood, against a naive design (commit in
                   the request under select_for_update; loadtests/naive, a second API server)
  f.  crowd        the sale again with --crowd keep-alive connections; every request answered?
and, with --baseline COMMIT (default df71965), the same floor, accept, poll and flood against
that commit's API (a temporary git worktree served by its own server, gunicorn at df71965,
on the same database, Redis DB and signing key), each right after the current one.
After the runs: e. scale-out (draining --backlog pending orders with 1, 2, 4 processes;
with --scale-out-engines also on RabbitMQ and/or a three-node Redis Cluster)
and the stage profile of each hot endpoint (`python -m loadtests.inprocess`, in-process).

Load comes from `loadtests.loadgen` (gevent + geventhttpclient) in a process of its own.
Every scenario ends with the invariants (nothing oversold, nothing lost or pending, the
Redis gate equal to total - sold); a broken one stops the run with exit status 2.
Writes results.json, report.md and PNG charts to --out (profiles.md with --profile).
`--runs 3` with the defaults takes about 12-15 minutes on 2 cores (most of it the three sales of each run).
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
DEFAULTS = {
    "tickets": 10_000,
    "buyers": 256,
    "concurrency": 64,
    "duration": 6.0,
    "backlog": 20_000,
    "runs": 1,
}
BASELINE = "df71965"  # the commit before issue 9's hot-path work (served by gunicorn sync)
# The endpoints `python -m loadtests.inprocess` knows, profiled by stage after the runs.
PROFILED_ENDPOINTS = ("health", "event_read", "sold_out", "accept", "poll_pending", "poll_final")
INPROCESS_DB = "bench_inprocess"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--tickets", type=int, default=DEFAULTS["tickets"], help="tickets of the flash sale"
    )
    parser.add_argument(
        "--buyers", type=int, default=DEFAULTS["buyers"], help="distinct buyers (each logs in once)"
    )
    parser.add_argument(
        "--concurrency", type=int, default=DEFAULTS["concurrency"], help="concurrent clients"
    )
    parser.add_argument(
        "--duration",
        type=float,
        default=DEFAULTS["duration"],
        help="seconds of each timed scenario (references, floor, accept, polls, floods)",
    )
    parser.add_argument(
        "--backlog",
        type=int,
        default=DEFAULTS["backlog"],
        help="pending orders per scale-out drain",
    )
    parser.add_argument(
        "--runs", type=int, default=DEFAULTS["runs"], help="repeat scenarios a-d; medians reported"
    )
    parser.add_argument(
        "--sale-timeout", type=float, default=60.0, help="upper bound of a sale, seconds"
    )
    parser.add_argument(
        "--max-requests", type=int, default=500_000, help="upper bound of requests per scenario"
    )
    parser.add_argument(
        "--api-workers",
        type=int,
        default=2,
        help="server workers of the API (and of the naive, bare and baseline ones)",
    )
    parser.add_argument(
        "--baseline",
        default=BASELINE,
        help="commit whose API is measured side by side (its own server, same data)",
    )
    parser.add_argument(
        "--no-baseline",
        dest="baseline",
        action="store_const",
        const=None,
        help="skip the side-by-side measurement of --baseline",
    )
    parser.add_argument(
        "--crowd", type=int, default=2000, help="keep-alive connections of the flash crowd"
    )
    parser.add_argument("--skip-crowd", dest="crowd", action="store_const", const=0)
    parser.add_argument(
        "--skip-stage-profiles",
        action="store_true",
        help="skip the in-process stage profiles of the hot endpoints",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="py-spy the API and worker processes during the accept and sale scenarios",
    )
    parser.add_argument("--skip-scale-out", action="store_true")
    parser.add_argument(
        "--scale-out-engines",
        type=_engines,
        default=(("redis", "single"),),
        metavar="BROKER/TOPOLOGY,...",
        help="series of the scale-out section: broker redis|rabbitmq, Redis topology "
        "single|cluster (a three-node cluster started for the run), e.g. "
        "redis/single,redis/cluster,rabbitmq/single,rabbitmq/cluster (default redis/single)",
    )
    parser.add_argument(
        "--keep-db",
        action="store_true",
        help="leave bench_ticketing for inspection (the stage profiles reuse Redis DB 10 after the "
        "runs: add --skip-stage-profiles to keep its state too)",
    )
    parser.add_argument("--out", type=Path, default=OUT)
    return parser.parse_args(argv)


def _engines(text: str) -> tuple[tuple[str, str], ...]:
    pairs = tuple(tuple(item.strip().split("/")) for item in text.split(",") if item.strip())
    for pair in pairs:
        if (
            len(pair) != 2
            or pair[0] not in ("redis", "rabbitmq")
            or pair[1]
            not in (
                "single",
                "cluster",
            )
        ):
            raise argparse.ArgumentTypeError(f"not BROKER/TOPOLOGY: {'/'.join(pair)}")
    return pairs


def command_line(argv: list[str]) -> str:
    return " ".join(["python -m loadtests.bench", *(shlex.quote(a) for a in argv)])


def code_version() -> dict:
    """The commit measured, and product files changed in the work tree (read-only git)."""
    import subprocess

    from loadtests.stack import ROOT

    def git(*words: str) -> str:
        return subprocess.run(["git", *words], cwd=ROOT, capture_output=True, text=True).stdout

    status = git("status", "--porcelain", "--", "core", "api", "workers", "gunicorn.conf.py")
    return {
        "commit": git("rev-parse", "--short", "HEAD").strip(),
        "uncommitted_product_files": [line[3:] for line in status.splitlines() if line.strip()],
    }


def setup(args, work_dir: Path):
    """Database, Redis DB, Django in this process, the stack and the buyers' tokens."""
    from loadtests import stack as st

    busy = st.busy_cores_before("benchmark")
    from loadtests.rlimit import raise_open_files_limit

    raise_open_files_limit(args.crowd + 1024)  # inherited by the servers started below
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
    print(
        f"{len(tokens)} buyers logged in in {time.monotonic() - started:.1f} s; api {api_url}",
        flush=True,
    )
    return Context(
        args=args,
        stack=stack,
        meter=meter,
        api_url=api_url,
        tokens=tokens,
        buyer_ids=prepare.user_ids(names),
        work_dir=work_dir,
        busy_before=round(busy, 2),
    )


def baseline_start(ctx, tree: Path) -> None:
    """Serve the --baseline commit from `tree` (its own server) once its drain task is ours."""
    from loadtests import stack as st

    problem = baseline_check(tree)
    if problem:
        raise RuntimeError(f"baseline {ctx.args.baseline} cannot share this stack: {problem}")
    ctx.baseline_url = ctx.stack.start_baseline_api(
        "baseline-api", tree=tree, port=st.free_port(), workers=ctx.args.api_workers
    )
    ctx.baseline_commit = ctx.args.baseline
    print(f"baseline {ctx.args.baseline} api {ctx.baseline_url} (from {tree})", flush=True)


def baseline_check(tree: Path) -> str | None:
    """Why the current worker could not drain what the baseline API queues (None: it can).

    The baseline publishes `event_orders_commit` by name to its own route; the current
    worker must register that name and consume that queue."""
    from workers.celery import app
    from workers.tasks import event_orders_commit_task

    name = event_orders_commit_task.name
    tasks_text = (tree / "workers" / "tasks.py").read_text()
    celery_text = (tree / "workers" / "celery.py").read_text()
    if f'"{name}"' not in tasks_text:
        return f"the baseline's workers/tasks.py has no task named {name}"
    route = (app.conf.task_routes or {}).get(name) or {}
    queue = route.get("queue") if isinstance(route, dict) else None
    if queue and f'"{queue}"' not in celery_text and f"'{queue}'" not in celery_text:
        return f"the baseline routes {name} elsewhere than the queue {queue!r} the worker consumes"
    return None


def run_once(ctx, run: dict) -> None:
    """Run every per-run scenario, filling `run` as they finish (a failure leaves what was measured).

    Each baseline measurement follows the current one at once, so both see the same machine."""
    from loadtests import scenarios as sc

    base = ctx.baseline_url
    baseline = run["baseline"] = {"commit": ctx.baseline_commit} if base else {}
    run["bare"] = sc.scenario_bare(ctx)
    run["health"] = sc.scenario_health(ctx)
    run["floor"] = sc.scenario_floor(ctx)
    if base:
        baseline["floor"] = sc.scenario_floor(ctx, run["floor"]["event_id"], base_url=base)
    run["accept"] = sc.scenario_accept(ctx)
    if base:
        baseline["accept"] = sc.scenario_accept(ctx, base_url=base)
    orders = sc.poll_orders_prepare(ctx)
    for status, name in (("pending", "poll_pending"), ("confirmed", "poll_final")):
        run[name] = sc.scenario_poll(ctx, orders, status)
        if base:
            baseline[name] = sc.scenario_poll(ctx, orders, status, base_url=base)
    run["sale"] = sc.scenario_sale(ctx)
    run["flood"] = sc.scenario_flood(ctx, run["sale"]["event_id"])
    if base:
        baseline["flood"] = sc.scenario_flood(ctx, run["sale"]["event_id"], base_url=base)
    run["naive"] = sc.scenario_naive(ctx)
    if ctx.args.crowd:
        run["crowd"] = sc.scenario_crowd(ctx, ctx.args.crowd)
    run["_complete"] = True


def stage_profiles(out_dir: Path, requests: int = 600) -> dict:
    """Per endpoint: in-process CPU µs per request and self time by stage, from the lead's
    `python -m loadtests.inprocess --only E --profile E`, run on a database of the benchmark's
    own (its module constants are pointed at it, where they exist) so that no other run's
    database is dropped. A failure is recorded per endpoint, not raised."""
    import subprocess

    from loadtests import stack as st
    from loadtests.analysis import parse_stage_profile

    runner = (
        "import sys, loadtests.inprocess as m\n"
        f"db, url = {INPROCESS_DB!r}, {st.REDIS_URL!r}\n"
        "if hasattr(m, 'DB_NAME'): m.DB_NAME = db\n"
        "if hasattr(m, 'REDIS_URL'): m.REDIS_URL = url\n"
        "env = getattr(m, 'ENV', None)\n"
        "if isinstance(env, dict): env.update(DATABASE_URL=f'postgres://postgres@127.0.0.1:5432/{db}', "
        "REDIS_URL=url, CELERY_BROKER_URL=url)\n"
        "sys.exit(m.main(sys.argv[1:]))\n"
    )
    found = {}
    for endpoint in PROFILED_ENDPOINTS:
        args = ["--only", endpoint, "--profile", endpoint, "--requests", str(requests)]
        try:
            env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
            done = subprocess.run(
                [sys.executable, "-c", runner, *args],
                check=False,
                cwd=st.ROOT,
                capture_output=True,
                text=True,
                timeout=300,
                env=env,
            )
        except subprocess.TimeoutExpired:
            found[endpoint] = {"error": "timed out after 300 s"}
            continue
        (out_dir / f"inprocess-{endpoint}.log").write_text(done.stdout + done.stderr)
        parsed = parse_stage_profile(done.stdout)
        entry = {
            "cpu_us_per_request": parsed["cpu_us_per_request"].get(endpoint),
            "stages": parsed["stages"],
        }
        if done.returncode or not parsed["stages"]:
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
            entry["error"] = f"exit {done.returncode}: {tail[0][:200]}"
        found[endpoint] = entry
        print(
            f"stage profile {endpoint}: {entry.get('cpu_us_per_request')} us/request"
            f"{' (' + entry['error'] + ')' if 'error' in entry else ''}",
            flush=True,
        )
    st.database_drop(INPROCESS_DB)
    return found


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
    runs, scale_out, failure, ctx, invariant_broken, tree, profiles = (
        [],
        {},
        None,
        None,
        False,
        None,
        {},
    )
    try:
        ctx = setup(args, work_dir)
        if args.baseline:
            tree = st.baseline_tree_add(args.baseline)
            baseline_start(ctx, tree)
        for index in range(args.runs):
            print(f"--- run {index + 1}/{args.runs}", flush=True)
            runs.append({})
            run_once(ctx, runs[-1])
        if not args.skip_scale_out:
            print("--- scale-out", flush=True)
            scale_out = scenarios.scenario_scale_out(ctx, engines=args.scale_out_engines)
    except scenarios.InvariantError as exc:
        failure, invariant_broken = f"INVARIANT BROKEN: {exc}", True
    except Exception:
        failure = "BENCHMARK FAILED:\n" + traceback.format_exc()
    finally:
        if ctx is not None:
            ctx.stack.stop_all()
            ctx.meter.stop()
        if tree is not None:
            st.baseline_tree_remove(tree)
    if not args.skip_stage_profiles and failure is None:
        print("--- stage profiles (in-process)", flush=True)
        profiles = stage_profiles(work_dir)
    complete = [run for run in runs if run.get("_complete")]
    results = {
        "command": command_line(argv),
        "args": {k: str(v) for k, v in vars(args).items()},
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "code": version,
        "wall_seconds": round(time.monotonic() - started, 1),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "busy_cores_before_start": ctx.busy_before if ctx else None,
        },
        "runs": [{k: _public(v) for k, v in run.items()} for run in runs],
        "summary": summarize(complete) if complete else {},
        "scale_out": scale_out,
        "stage_profiles": profiles,
        "baseline": {"commit": args.baseline, "server": "gunicorn sync (its gunicorn.conf.py)"}
        if args.baseline
        else None,
        "peak_rss_mb": sorted(ctx.meter.peak_rss.values(), key=lambda e: e["name"]) if ctx else [],
        "failure": failure,
        "invariant_broken": invariant_broken,
        "logs": str(work_dir),
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
        print(
            f"\n{banner}\n{failure}\n(logs of the servers: {work_dir})\n{banner}",
            file=sys.stderr,
            flush=True,
        )
        return 2
    return 0


def _public(value):
    if isinstance(value, dict):
        return {k: _public(v) for k, v in value.items() if not k.startswith("_")}
    return value


if __name__ == "__main__":
    sys.exit(main())
