"""A flash sale under Locust against a production-mode stack of its own, in one command.

`make loadtest`. Like the benchmark, a database and Redis DB of its own (--database,
--redis-db) and the stack of loadtests/stack.py; buyers, an event and tokens from
loadtests.prepare; Locust headless with the flash-sale shape (loadtests/locustfile.py,
one process per core); then the sale's invariants. Writes to --out: locust.html,
locust_*.csv, samples.csv, summary.json and summary.md (figures beside the benchmark's
docs/benchmarks/results.json, computed by loadtests/analysis.py alike), logs/.
Bounded by --max-seconds and --max-requests; everything started is stopped, also on
Ctrl-C or SIGTERM. Exit status 0, 1 if the run failed, 2 if an invariant broke.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

from loadtests.analysis import Samples, sale_figures
from loadtests.stack import ROOT, Meter, Stack, busy_cores_before, stack_prepare, stack_teardown

DATABASE, REDIS_DB = "loadtest_ticketing", 8
BENCH_RESULTS = ROOT / "docs" / "benchmarks" / "results.json"
# Figures side by side: (name, path in Locust's figures, path in the benchmark's summary).
COMPARED = [
    ("purchases/s in the sale window", "purchase_rps_in_sale_window", "sale.purchase_rps_in_sale_window"),
    ("purchase p50 ms (sale window)", "purchase_latency_in_sale_window.p50_ms", "sale.purchase_latency_in_sale_window.p50_ms"),
    ("purchase p99 ms (sale window)", "purchase_latency_in_sale_window.p99_ms", "sale.purchase_latency_in_sale_window.p99_ms"),
    ("poll p50 ms (final answer)", "polls_by_outcome.confirmed.p50_ms", "sale.polls_by_outcome.confirmed.p50_ms"),
    ("poll p99 ms (final answer)", "polls_by_outcome.confirmed.p99_ms", "sale.polls_by_outcome.confirmed.p99_ms"),
    ("sold-out flood req/s", "flood.rps", "flood.rps"),
    ("sold-out flood p50 ms", "flood.p50_ms", "flood.p50_ms"),
    ("load generator cores (sale)", "cpu_cores_in_sale_window.loadgen", "sale.cpu_cores.loadgen"),
    ("API cores (sale)", "cpu_cores_in_sale_window.api", "sale.cpu_cores.api"),
    # What a busy machine changes least: requests (purchases and polls) per core the API got.
    ("requests/s per API core (sale)", "all_rps_in_sale_window/cpu_cores_in_sale_window.api", "sale.all_rps_in_sale_window/sale.cpu_cores.api"),
    ("other work on the machine, cores (sale)", "cpu_cores_in_sale_window.other", "sale.cpu_cores.other"),
]  # fmt: skip


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add = parser.add_argument
    add("--users", type=int, default=64, help="Locust users (the benchmark's --concurrency)")
    add("--buyers", type=int, default=256, help="distinct buyer accounts")
    add("--tickets", type=int, default=4000, help="tickets of the sale (the benchmark sells 10000)")
    add("--processes", type=int, default=os.cpu_count() or 1, help="Locust worker processes")
    add("--flood-seconds", type=float, default=5.0, help="purchases after sold out")
    add("--max-seconds", type=float, default=30.0, help="Locust stops after this long in any case")
    add("--max-requests", type=int, default=100_000, help="Locust stops after about this many")
    add("--login", action="store_true", help="users log in through POST /login/ (PBKDF2)")
    add("--room", action="store_true", help="waiting-room shape (loadtests/locust_room.py), door")
    add("--api-workers", type=int, default=2, help="API server workers (production default 2)")
    add("--worker-concurrency", type=int, default=2, help="Celery worker processes")
    add("--database", default=DATABASE, help="dropped and recreated")
    add("--redis-db", type=int, default=REDIS_DB, help="Redis database number (FLUSHDB)")
    add("--keep-db", action="store_true", help="leave the database and Redis DB for inspection")
    add("--out", type=Path, default=ROOT / "loadtest-reports")
    return parser.parse_args(argv)


def locust_command(args, api_url: str, out: Path) -> list[str]:
    locustfile = "loadtests/locust_room.py" if args.room else "loadtests/locustfile.py"
    options = {
        "-f": locustfile, "-u": args.users, "--host": api_url,
        **({} if args.room else {"--shape": "flash"}),
        "--credentials": out / "credentials.json", "--samples-dir": out / "samples",
        "--flood-seconds": args.flood_seconds, "--run-time": f"{int(args.max_seconds)}s",
        "--max-seconds": args.max_seconds, "--max-requests": args.max_requests,
        "--csv": out / "locust", "--html": out / "locust.html", "--loglevel": "WARNING",
        **({"--processes": args.processes} if args.processes > 1 else {}),
    }  # fmt: skip
    command = [str(Path(sys.executable).parent / "locust"), "--headless", "--only-summary"]
    command += [str(word) for pair in options.items() for word in pair] + ["--csv-full-history"]
    return command + (["--login"] if args.login else [])


def run_locust(args, stack: Stack, api_url: str, out: Path) -> tuple[int, Meter]:
    """Run Locust to its end (it bounds itself; this waits --max-seconds + 60 s at most)."""
    locust = Stack(stack.env, out / "logs")
    meter = Meter(stack, loadgen=locust, timeline=0.5)
    meter.start()
    try:
        process = locust.start("locust", locust_command(args, api_url, out))
        try:
            code = process.wait(timeout=args.max_seconds + 60)
        except subprocess.TimeoutExpired:
            code = -1
            print("locust did not stop by itself: stopping it", flush=True)
        meter.points.append((time.time(), meter.cpu_snapshot()))
    finally:
        locust.stop_all()
        meter.stop()
    return code, meter


def _terminate(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    out = args.out.resolve()
    shutil.rmtree(out, ignore_errors=True)
    (out / "logs").mkdir(parents=True)
    signal.signal(signal.SIGTERM, _terminate)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True)
    summary = {
        "command": " ".join(["python -m loadtests.run", *argv]),
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "args": {k: str(v) for k, v in vars(args).items()},
        "commit": commit.stdout.decode().strip(),
        "busy_cores_before_start": busy_cores_before("run"),
        "status": 1,
        "locust_exit": None,
        "comparison": [],
    }
    stack = None
    try:
        stack = stack_prepare(args.database, args.redis_db, out / "logs", fast_hashers=False)
        summary.update(_sale_run(args, stack, out))
    except KeyboardInterrupt as exc:
        summary["failure"] = f"interrupted ({str(exc) or 'Ctrl-C'})"
    except Exception:
        summary["failure"] = traceback.format_exc()
    finally:
        if stack is not None:
            stack_teardown(stack, args.database, keep_db=args.keep_db)
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    (out / "summary.md").write_text(markdown(summary))
    print(markdown(summary), flush=True)
    if summary.get("failure"):
        print(f"LOAD TEST FAILED: {summary['failure']}\n(logs: {out / 'logs'})", file=sys.stderr)
    print(f"reports: {out}/locust.html, {out}/summary.md", flush=True)
    return 1 if summary.get("failure") else summary["status"]


def _sale_run(args, stack: Stack, out: Path) -> dict:
    """Stack, sale data, Locust, figures and invariants; return the summary's fields."""
    from loadtests import prepare

    api_url = stack.start_api(workers=args.api_workers)
    stack.start_worker(concurrency=args.worker_concurrency)
    if args.room:  # the room's automatic capacity (beat) and its public state's cache (the door)
        from tests.frontdoor.door import start_door

        stack.start_beat()
        api_url = start_door(stack, api_address=api_url.split("//")[1]).base_url
    token_seconds = None if args.login else args.max_seconds + 600
    prepared = prepare.credentials_prepare(
        buyers=args.buyers, tickets=args.tickets, token_seconds=token_seconds
    )
    (out / "credentials.json").write_text(json.dumps(prepared, indent=1))
    print(
        f"stack up at {api_url}; {len(prepared['buyers'])} buyers, event {prepared['event_id']} "
        f"with {args.tickets} tickets; locust: {args.users} users, {args.processes} processes",
        flush=True,
    )
    locust_exit, meter = run_locust(args, stack, api_url, out)
    samples = Samples.merge(out / "samples", out / "samples.csv")
    figures = sale_figures(samples, meter.cores)
    invariants = _invariants(prepared["event_id"], samples, figures)
    return {
        "locust_exit": locust_exit,
        "figures": figures,
        "invariants": invariants,
        "comparison": bench_comparison(figures),
        "status": 2 if not invariants.get("ok") else 0 if locust_exit == 0 else 1,
    }


def _invariants(event_id: int, samples: Samples, figures: dict) -> dict:
    """The sale's invariants; accepted orders are matched only after a sold-out flood (no
    purchase in flight then)."""
    from tests.invariants import InvariantError, assert_invariants, wait_until_no_pending

    flooded = figures.get("flood") is not None
    accepted = samples.order_id[samples.mask(kind="buy", outcome="accepted")] if flooded else None
    try:
        wait_until_no_pending(event_id, timeout=60)
        return assert_invariants(
            event_id, label="locust sale", accepted_ids=accepted,
            expect_sold_out=figures.get("sold_out", False),
        )  # fmt: skip
    except InvariantError as exc:
        return {"ok": False, "problems": [str(exc)]}


def _figure(data: dict, path: str):
    """The figure at a dotted `path`; "A/B" is A per B (None unless both are there)."""
    if "/" in path:
        a, b = (_figure(data, p) for p in path.split("/"))
        return round(a / b, 1) if a is not None and b else None
    for key in path.split("."):
        data = data.get(key) if isinstance(data, dict) else None
    return data


def bench_comparison(figures: dict) -> list[dict]:
    """Locust's figures beside the committed benchmark's (its summary)."""
    if not BENCH_RESULTS.exists():
        return []
    bench = json.loads(BENCH_RESULTS.read_text()).get("summary", {})
    rows = []
    for name, mine_path, theirs_path in COMPARED:
        mine, theirs = _figure(figures, mine_path), _figure(bench, theirs_path)
        ratio = mine is not None and theirs and not name.startswith("other")
        row = {"figure": name, "locust": mine, "benchmark": theirs}
        rows.append({**row, "ratio": round(mine / theirs, 2) if ratio else None})
    return rows


def markdown(summary: dict) -> str:
    f = summary.get("figures", {})
    lines = [
        "# Locust flash sale (python -m loadtests.run)",
        "",
        f"Command: `{summary['command']}`  ",
        f"Started: {summary['started']}, commit {summary['commit']}  ",
        f"Locust exit status {summary['locust_exit']}; invariants: "
        f"{summary.get('invariants', {}).get('ok')}; cores busy before the start: "
        f"{summary.get('busy_cores_before_start')}",
        "",
        *([summary["note"], ""] if summary.get("note") else []),
        "| Figure | Locust | Benchmark (docs/benchmarks/results.json) | Ratio |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {r['figure']} | {r['locust']} | {r['benchmark']} | {r['ratio']} |"
        for r in summary["comparison"]
    ]

    def counts(key):
        return {k: v.get("count") for k, v in f.get(key, {}).items()}

    lines += [
        "",
        f"CPU cores in the sale window: {f.get('cpu_cores_in_sale_window')}",
        f"Purchases by outcome: {counts('purchases_by_outcome')}",
        f"Polls by outcome: {counts('polls_by_outcome')}",
        f"Errors: {f.get('errors')}",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
