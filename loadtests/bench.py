"""Benchmark of the flash-sale hot path, every scenario measured in one run (`make bench`).

A database and Redis DB of its own (--database, --redis-db: dropped, flushed), the API
as production serves it and a Celery worker on free loopback ports (loadtests/stack.py),
buyers logged in once; then in each run (loadtests/scenarios.py), every scenario ending
with the invariants (a broken one: exit status 2):

  ref. bare WSGI app (the server's ceiling) and GET /health/ (the framework's floor)
  a.  floor   authenticated GET /events/<id>/      a'. accept   purchases all accepted
  p.  poll    GET /orders/<id>/, pending and final  b.  sale     flash sale of --tickets
  c.  flood   purchases once sold out               d.  naive    the sale on loadtests/naive
  f.  crowd   the sale with --crowd connections
with --baseline COMMIT (the goals file's by default) the same a, a', p and c against
that commit served from a temporary git worktree, each right after the current one.
After the runs: e. scale-out (backlog drains) and in-process stage profiles. Writes
results.json, report.md (goals from --goals) and PNG charts to --out; how to read them:
docs/load-testing.md. --room-crowd and --waitlist then run loadtests.crowd and
loadtests.waitlist_bench, each on a stack of its own.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

from loadtests import report
from loadtests.stack import ROOT, free_port

DATABASE, REDIS_DB = "bench_ticketing", 10
BASELINE_SERVER = "gunicorn sync (its gunicorn.conf.py)"
# The endpoints `python -m loadtests.inprocess` knows, profiled by stage after the runs.
PROFILED_ENDPOINTS = ("health", "event_read", "sold_out", "accept", "poll_pending", "poll_final")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add = parser.add_argument
    add("--tickets", type=int, default=10_000, help="tickets of the flash sale")
    add("--buyers", type=int, default=256, help="distinct buyers (each logs in once)")
    add("--concurrency", type=int, default=64, help="concurrent clients")
    add("--duration", type=float, default=6.0, help="seconds of each timed steady scenario")
    add("--backlog", type=int, default=20_000, help="pending orders per scale-out drain")
    add("--runs", type=int, default=1, help="repeat scenarios a-d; medians reported")
    add("--sale-timeout", type=float, default=60.0, help="upper bound of a sale, seconds")
    add("--max-requests", type=int, default=500_000, help="upper bound of requests per scenario")
    add("--api-workers", type=int, default=2, help="server workers of every API server")
    add("--goals", type=Path, default=report.GOALS, help="goals, targets and baseline (TOML)")
    add("--baseline", help="commit whose API is measured side by side (default: the goals file's)")
    add("--no-baseline", dest="baseline", action="store_const", const="", help="no baseline")
    add("--crowd", type=int, default=2000, help="keep-alive connections of the flash crowd")
    add("--skip-crowd", dest="crowd", action="store_const", const=0)
    add("--room-crowd", action="store_true", help="then python -m loadtests.crowd (crowd.md)")
    add("--waitlist", action="store_true", help="then python -m loadtests.waitlist_bench")
    add("--skip-stage-profiles", action="store_true", help="no in-process stage profiles")
    add("--profile", action="store_true", help="py-spy the API and worker during accept and sale")
    add("--skip-scale-out", action="store_true")
    add(
        "--scale-out-engines", type=_engines, default=(("redis", "single"),),
        metavar="BROKER/TOPOLOGY,...",
        help="series of the scale-out section: broker redis|rabbitmq, Redis topology "
        "single|cluster (a three-node cluster started for the run), e.g. "
        "redis/single,redis/cluster,rabbitmq/single,rabbitmq/cluster (default redis/single)",
    )  # fmt: skip
    add("--database", default=DATABASE, help="dropped and recreated (NAME_inprocess too)")
    add("--redis-db", type=int, default=REDIS_DB, help="Redis database number (FLUSHDB)")
    add("--keep-db", action="store_true", help="leave the database and Redis DB for inspection")
    add("--out", type=Path, default=ROOT / "docs" / "benchmarks")
    args = parser.parse_args(argv)
    if args.baseline is None:
        args.baseline = report.goals_load(args.goals).get("baseline", {}).get("commit", "")
    return args


def _engines(text: str) -> tuple[tuple[str, str], ...]:
    pairs = tuple(tuple(item.strip().split("/")) for item in text.split(",") if item.strip())
    known = {(b, t) for b in ("redis", "rabbitmq") for t in ("single", "cluster")}
    for pair in pairs:
        if pair not in known:
            raise argparse.ArgumentTypeError(f"not BROKER/TOPOLOGY: {'/'.join(pair)}")
    return pairs


def git(*words: str, check: bool = False) -> str:
    done = subprocess.run(["git", *words], cwd=ROOT, capture_output=True, text=True, check=check)
    return done.stdout


def code_version() -> dict:
    """The commit measured, and product files changed in the work tree (read-only git)."""
    status = git("status", "--porcelain", "--", "core", "api", "workers", "gunicorn.conf.py")
    return {
        "commit": git("rev-parse", "--short", "HEAD").strip(),
        "uncommitted_product_files": [line[3:] for line in status.splitlines() if line.strip()],
    }


def setup(args, work_dir: Path):
    """Database, Redis DB, Django in this process, the stack and the buyers' tokens."""
    from loadtests import prepare, stack
    from loadtests.clients import raise_open_files_limit
    from loadtests.scenarios import Context, login_all

    busy = stack.busy_cores_before("benchmark")
    raise_open_files_limit(args.crowd + 1024)  # inherited by the servers started below
    processes = stack.stack_prepare(args.database, args.redis_db, work_dir)
    meter = stack.Meter(processes)
    meter.start()
    try:
        api_url = processes.start_api(workers=args.api_workers)
        processes.start_worker(concurrency=2, args=["--without-heartbeat"])
        names = prepare.users_prepare(prefix=prepare.BUYER_PREFIX, count=args.buyers)
        started = time.monotonic()
        tokens = login_all(api_url, names, prepare.PASSWORD)
    except BaseException:  # nothing is left running: main() has no context to stop yet
        processes.stop_all()
        meter.stop()
        raise
    print(f"{len(tokens)} buyers logged in in {time.monotonic() - started:.1f} s; api {api_url}")
    ids = prepare.user_ids(names)
    return busy, Context(args, processes, meter, args.database, api_url, tokens, ids, work_dir)


def baseline_tree(commit: str) -> Path:
    """Check `commit` out in a temporary detached git worktree; return its directory."""
    tree = Path(tempfile.mkdtemp(prefix=f"bench-baseline-{commit}-")) / "tree"
    git("worktree", "add", "--detach", str(tree), commit, check=True)
    return tree


def baseline_start(ctx, commit: str, tree: Path) -> None:
    """Serve `commit`, checked out in `tree`, with that commit's own gunicorn and
    gunicorn.conf.py, on this stack's database, Redis DB and signing key (the same tokens
    work), once its drain task is checked to be ours."""
    problem = baseline_check(tree)
    if problem:
        raise RuntimeError(f"baseline {commit} cannot share this stack: {problem}")
    port, metrics = free_port(), ctx.work_dir / "metrics-baseline-api"
    metrics.mkdir()  # its metric files apart from the current API's
    command = [str(Path(sys.executable).parent / "gunicorn"), "core.wsgi:application"]
    command += ["--config", "gunicorn.conf.py", "--bind", f"127.0.0.1:{port}"]
    env = {"PROMETHEUS_MULTIPROC_DIR": str(metrics)}
    ctx.stack.start("baseline-api", [*command, "--workers", str(ctx.args.api_workers)], env, tree)
    from tests.live import answers

    ctx.baseline_url = f"http://127.0.0.1:{port}"
    ctx.stack.wait_until(lambda: answers(ctx.baseline_url + "/health/"), "baseline to answer")
    print(f"baseline {commit} api {ctx.baseline_url} (from {tree})", flush=True)


def baseline_check(tree: Path) -> str | None:
    """Why the current worker could not drain what the baseline API queues (None: it can).

    The baseline publishes `event_orders_commit` by name to its own route; the current
    worker must register that name and consume that queue."""
    from workers.celery import app
    from workers.tasks import event_orders_commit_task

    name = event_orders_commit_task.name
    celery_text = (tree / "workers" / "celery.py").read_text()
    if f'"{name}"' not in (tree / "workers" / "tasks.py").read_text():
        return f"the baseline's workers/tasks.py has no task named {name}"
    route = (app.conf.task_routes or {}).get(name) or {}
    queue = route.get("queue") if isinstance(route, dict) else None
    if queue and f'"{queue}"' not in celery_text and f"'{queue}'" not in celery_text:
        return f"the baseline routes {name} elsewhere than the queue {queue!r} the worker consumes"
    return None


def run_once(ctx, run: dict) -> None:
    """Run every per-run scenario, filling `run` as they finish (a failure leaves what was
    measured). Each baseline measurement follows the current one at once, so both see the
    same machine."""
    from loadtests import scenarios as sc

    base = ctx.baseline_url
    baseline = run["baseline"] = {"commit": ctx.args.baseline} if base else {}
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


def stage_profiles(args, out_dir: Path, requests: int = 600) -> dict:
    """Per endpoint: in-process CPU µs per request and self time by stage, from
    `python -m loadtests.inprocess --only E --profile E` on a database of the benchmark's
    own, so that no other run's database is dropped. A failure is recorded per endpoint."""
    from loadtests.analysis import parse_stage_profile
    from loadtests.stack import database_drop

    found = {}
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    for endpoint in PROFILED_ENDPOINTS:
        command = [sys.executable, "-m", "loadtests.inprocess", "--only", endpoint]
        command += ["--profile", endpoint, "--requests", str(requests)]
        command += ["--database", f"{args.database}_inprocess", "--redis-db", str(args.redis_db)]
        try:
            done = subprocess.run(
                command, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env
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
        error = f" ({entry['error']})" if "error" in entry else ""
        print(f"stage profile {endpoint}: {entry['cpu_us_per_request']} us/request{error}")
    database_drop(f"{args.database}_inprocess")
    return found


def summarize(runs: list[dict]) -> dict:
    """Median over runs of every number; a key some runs lack (an outcome that happened in
    one run only) takes the median of the runs that have it."""

    def walk(values: list):
        present = [v for v in values if v is not None]
        if not present:
            return None
        if isinstance(present[0], dict):
            dicts = [v for v in present if isinstance(v, dict)]
            keys = dict.fromkeys(k for d in dicts for k in d if not k.startswith("_"))
            return {k: walk([d.get(k) for d in dicts]) for k in keys}
        numbers = [v for v in present if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if len(present) > 1 and len(numbers) == len(present) and len(set(numbers)) > 1:
            return round(statistics.median(numbers), 3)
        return present[0]

    return walk(runs)


def _public(value):
    if isinstance(value, dict):
        return {k: _public(v) for k, v in value.items() if not k.startswith("_")}
    return value


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    from loadtests import scenarios, stack

    work_dir = Path(tempfile.mkdtemp(prefix="bench-ticketing-"))
    version, started = code_version(), time.monotonic()
    runs, scale_out, profiles, failure, broken = [], {}, {}, None, False
    ctx = tree = busy = None
    try:
        busy, ctx = setup(args, work_dir)
        if args.baseline:
            tree = baseline_tree(args.baseline)
            baseline_start(ctx, args.baseline, tree)
        for index in range(args.runs):
            print(f"--- run {index + 1}/{args.runs}", flush=True)
            runs.append({})
            run_once(ctx, runs[-1])
        if not args.skip_scale_out:
            print("--- scale-out", flush=True)
            scale_out = scenarios.scenario_scale_out(ctx, engines=args.scale_out_engines)
    except scenarios.InvariantError as exc:
        failure, broken = f"INVARIANT BROKEN: {exc}", True
    except Exception:
        failure = "BENCHMARK FAILED:\n" + traceback.format_exc()
    finally:
        if ctx is not None:
            ctx.stack.stop_all()
            ctx.meter.stop()
        if tree is not None:
            git("worktree", "remove", "--force", str(tree))
            shutil.rmtree(tree.parent, ignore_errors=True)
    if not args.skip_stage_profiles and failure is None:
        print("--- stage profiles (in-process)", flush=True)
        profiles = stage_profiles(args, work_dir)
    complete = [run for run in runs if run.get("_complete")]
    results = {
        "command": " ".join(["python -m loadtests.bench", *(shlex.quote(a) for a in argv)]),
        "args": {k: str(v) for k, v in vars(args).items()},
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "code": version,
        "wall_seconds": round(time.monotonic() - started, 1),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "busy_cores_before_start": busy,
        },  # fmt: skip
        "runs": [{k: _public(v) for k, v in run.items()} for run in runs],
        "summary": summarize(complete) if complete else {},
        "scale_out": scale_out,
        "stage_profiles": profiles,
        "baseline": {"commit": args.baseline, "server": BASELINE_SERVER} if args.baseline else None,
        "peak_rss_mb": sorted(ctx.meter.peak_rss.values(), key=lambda e: e["name"]) if ctx else [],
        "failure": failure,
        "invariant_broken": broken,
        "logs": str(work_dir),
    }
    report.write(results, complete[-1] if complete else None, args.out, args.goals)
    if ctx is not None and ctx.profiles:
        from loadtests import profiling

        (args.out / "profiles.md").write_text(profiling.markdown(ctx.profiles, results["command"]))
    if ctx is not None:
        stack.stack_teardown(ctx.stack, args.database, keep_db=args.keep_db)
    print(report.console_summary(results, report.goals_load(args.goals)), flush=True)
    if args.room_crowd:  # its own stack, database NAME_crowd and the same Redis DB, after ours
        crowd = ["--database", f"{args.database}_crowd", "--redis-db", str(args.redis_db)]
        subprocess.run([sys.executable, "-m", "loadtests.crowd", *crowd, "--out", str(args.out)])
    if args.waitlist:  # its own stack, database NAME_waitlist and the same Redis DB, after ours
        waitlist = ["--database", f"{args.database}_waitlist", "--redis-db", str(args.redis_db)]
        command = [sys.executable, "-m", "loadtests.waitlist_bench", *waitlist]
        subprocess.run([*command, "--out", str(args.out)])
    if failure:
        banner = "!" * 78
        print(f"\n{banner}\n{failure}\n(server logs: {work_dir})\n{banner}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
