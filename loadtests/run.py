"""A flash sale under Locust against a production-mode stack of its own, in one command.

    python -m loadtests.run [--users 64] [--buyers 256] [--tickets 4000] [--processes 2]
                            [--flood-seconds 5] [--max-seconds 30] [--login] [--out loadtest-reports]

(`make loadtest`). Creates its own PostgreSQL database (`loadtest_ticketing`, dropped and
recreated, migrated) and uses Redis database 8 (FLUSHDB of that number only). Starts the
API as production does (python -m core.serve, DJANGO_DEBUG=0, a secret key made
for the run, throttles raised) and a Celery worker, prepares buyers, an event on sale and
their access tokens (loadtests.prepare), runs Locust headless with the flash-sale shape
(loadtests/locustfile.py --shape flash, --processes one per core), then checks the sale
(nothing oversold, lost or pending; the Redis gate equal to PostgreSQL) and writes to --out:
locust.html, locust_*.csv, samples.csv (every purchase and poll), summary.json and
summary.md (figures beside the benchmark's docs/benchmarks/results.json), logs/.

Bounded: Locust stops at --max-seconds or --max-requests; everything this started is
stopped afterwards by process group, also on Ctrl-C, SIGTERM or an error. Exit status:
0, 1 if the run failed, 2 if an invariant broke.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path

import psutil
import redis

from loadtests import stack as bench_stack
from loadtests.analysis import Samples
from loadtests.locust_summary import bench_comparison, markdown, sale_figures, samples_load
from loadtests.processes import BIN, ROOT, ProcessGroup, free_port

DB_NAME = "loadtest_ticketing"
REDIS_URL = "redis://127.0.0.1:6379/8"
DATABASE_URL = f"postgres://postgres@127.0.0.1:5432/{DB_NAME}"
OUT = ROOT / "loadtest-reports"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--users", type=int, default=64, help="Locust users (the benchmark's --concurrency)"
    )
    parser.add_argument("--buyers", type=int, default=256, help="distinct buyer accounts")
    parser.add_argument(
        "--tickets", type=int, default=4000, help="tickets of the sale (the benchmark sells 10000)"
    )
    parser.add_argument(
        "--processes", type=int, default=os.cpu_count() or 1, help="Locust worker processes"
    )
    parser.add_argument("--flood-seconds", type=float, default=5.0, help="purchases after sold out")
    parser.add_argument(
        "--max-seconds", type=float, default=30.0, help="Locust stops after this long in any case"
    )
    parser.add_argument(
        "--max-requests", type=int, default=100_000, help="Locust stops after about this many"
    )
    parser.add_argument(
        "--login", action="store_true", help="users log in through POST /login/ (PBKDF2)"
    )
    parser.add_argument(
        "--api-workers", type=int, default=2, help="API server workers (production default 2)"
    )
    parser.add_argument("--worker-concurrency", type=int, default=2, help="Celery worker processes")
    parser.add_argument("--keep-db", action="store_true", help=f"leave {DB_NAME} for inspection")
    parser.add_argument("--out", type=Path, default=OUT)
    return parser.parse_args(argv)


def stack_env(metrics_dir: Path) -> dict[str, str]:
    """Production settings, with the rate limits raised so they do not decide the result."""
    return {
        "DJANGO_SETTINGS_MODULE": "core.settings",
        "DATABASE_URL": DATABASE_URL,
        "REDIS_URL": REDIS_URL,
        "CELERY_BROKER_URL": REDIS_URL,
        "DJANGO_DEBUG": "0",
        # Made for this run: the tokens in the credentials file die with it.
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
        "THROTTLE_PURCHASE_RATE": "1000000/min",
        "THROTTLE_LOGIN_RATE": "1000000/min",
        "THROTTLE_REGISTER_RATE": "1000000/min",
        "LOG_LEVEL": "WARNING",
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
        "PYTHONUNBUFFERED": "1",
    }


def database_recreate() -> None:
    bench_stack.database_recreate(DB_NAME)


def database_drop() -> None:
    bench_stack.database_drop(DB_NAME)


class CpuTimeline(threading.Thread):
    """CPU seconds so far by role (api, worker, postgres, redis, loadgen, machine), twice a second.

    The load generator is every process of Locust's group (master and --processes workers);
    a process that has exited keeps the last CPU time seen for it.
    """

    def __init__(self, stack: ProcessGroup, locust: ProcessGroup, interval: float = 0.5):
        super().__init__(daemon=True)
        from loadtests.stack import Meter

        self.meter, self.locust, self.interval = Meter(stack), locust, interval
        self.points: list[tuple[float, dict[str, float]]] = []
        self._loadgen: dict[int, float] = {}
        self._halt = threading.Event()

    def snapshot(self) -> dict[str, float]:
        totals = self.meter.cpu_snapshot()
        for name in list(self.locust.processes):
            try:
                root = psutil.Process(self.locust.processes[name].pid)
                for process in [root, *root.children(recursive=True)]:
                    times = process.cpu_times()
                    self._loadgen[process.pid] = times.user + times.system
            except (psutil.NoSuchProcess, KeyError):
                continue
        totals["loadgen"] = sum(self._loadgen.values())
        return totals

    def run(self) -> None:
        while not self._halt.wait(self.interval):
            self.points.append((time.time(), self.snapshot()))

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=5)

    def cores(self, start: float, stop: float) -> dict[str, float]:
        """Cores used per role between the samples that bracket [start, stop]."""
        from loadtests.stack import cpu_delta

        before = [p for p in self.points if p[0] <= start] or self.points[:1]
        after = [p for p in self.points if p[0] >= stop] or self.points[-1:]
        if not before or not after or after[0][0] <= before[-1][0]:
            return {}
        (t0, first), (t1, last) = before[-1], after[0]
        return cpu_delta(first, last, t1 - t0)


def prepare_sale(args, out: Path) -> dict:
    """Buyers, an Admin, the event (on sale now) and their tokens, written for the locustfile."""
    from loadtests import prepare

    prepared = prepare.credentials_prepare(
        buyers=args.buyers,
        tickets=args.tickets,
        token_seconds=None if args.login else args.max_seconds + 600,
    )
    (out / "credentials.json").write_text(json.dumps(prepared, indent=1))
    return prepared


def locust_command(args, api_url: str, out: Path) -> list[str]:
    command = [
        str(BIN / "locust"),
        "-f",
        "loadtests/locustfile.py",
        "--headless",
        "--shape",
        "flash",
        "-u",
        str(args.users),
        "--host",
        api_url,
        "--credentials",
        str(out / "credentials.json"),
        "--flood-seconds",
        str(args.flood_seconds),
        "--samples-dir",
        str(out / "samples"),
        "--run-time",
        f"{int(args.max_seconds)}s",
        "--max-seconds",
        str(args.max_seconds),
        "--max-requests",
        str(args.max_requests),
        "--csv",
        str(out / "locust"),
        "--csv-full-history",
        "--html",
        str(out / "locust.html"),
        "--only-summary",
        "--loglevel",
        "WARNING",
    ]
    if args.processes > 1:
        command += ["--processes", str(args.processes)]
    if args.login:
        command.append("--login")
    return command


def run_locust(args, stack: ProcessGroup, api_url: str, out: Path) -> tuple[int, CpuTimeline]:
    """Run Locust to its end (it bounds itself; this waits --max-seconds + 60 s at most)."""
    locust = ProcessGroup(stack.env, out / "logs")
    meter = CpuTimeline(stack, locust)
    meter.start()
    try:
        process = locust.start("locust", locust_command(args, api_url, out))
        try:
            code = process.wait(timeout=args.max_seconds + 60)
        except subprocess.TimeoutExpired:
            code = -1
            print("locust did not stop by itself: stopping it", flush=True)
        meter.points.append((time.time(), meter.snapshot()))
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
    (out / "metrics").mkdir()
    signal.signal(signal.SIGTERM, _terminate)
    os.environ.update(stack_env(out / "metrics"))
    stack = ProcessGroup(dict(os.environ), out / "logs")
    summary = _summary_start(args, argv)
    try:
        summary.update(_sale_run(args, stack, out))
    except KeyboardInterrupt as exc:
        summary["failure"] = f"interrupted ({str(exc) or 'Ctrl-C'})"
    except Exception:
        summary["failure"] = traceback.format_exc()
    finally:
        stack.stop_all()
        if not args.keep_db:
            from django.db import connections

            connections.close_all()
            database_drop()
            redis.Redis.from_url(REDIS_URL).flushdb()
    return _summary_write(summary, out)


def _summary_start(args, argv: list[str]) -> dict:
    """What was run, on which commit, and how busy the machine was just before."""
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    )
    busy = bench_stack.busy_cores_before("run")
    return {
        "command": " ".join(["python -m loadtests.run", *argv]),
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "args": {k: str(v) for k, v in vars(args).items()},
        "commit": commit.stdout.strip(),
        "busy_cores_before_start": round(busy, 2),
        "status": 1,
        "locust_exit": None,
        "comparison": [],
    }


def _sale_run(args, stack: ProcessGroup, out: Path) -> dict:
    """Database, stack, sale data, Locust, figures and invariants; return the summary's fields."""
    database_recreate()
    redis.Redis.from_url(REDIS_URL).flushdb()  # this DB number only
    from loadtests import prepare

    prepare.setup_django()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    api_url = stack.start_api_server("api", port=free_port(), workers=args.api_workers)
    stack.start_celery_worker("worker", concurrency=args.worker_concurrency)
    prepared = prepare_sale(args, out)
    print(
        f"stack up at {api_url}; {len(prepared['buyers'])} buyers, event {prepared['event_id']} "
        f"with {args.tickets} tickets; locust: {args.users} users, {args.processes} processes",
        flush=True,
    )
    locust_exit, meter = run_locust(args, stack, api_url, out)
    samples = samples_load(out / "samples", out / "samples.csv")
    figures = sale_figures(samples, meter.cores)
    invariants = _invariants(prepared["event_id"], samples, figures)
    status = 2 if not invariants.get("ok") else 0 if locust_exit == 0 else 1
    return {
        "locust_exit": locust_exit,
        "figures": figures,
        "invariants": invariants,
        "comparison": bench_comparison(figures),
        "status": status,
    }


def _summary_write(summary: dict, out: Path) -> int:
    """Write summary.json and summary.md, print the latter; return the exit status."""
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    (out / "summary.md").write_text(markdown(summary))
    print(markdown(summary), flush=True)
    if summary.get("failure"):
        print(
            f"LOAD TEST FAILED: {summary['failure']}\n(logs: {out / 'logs'})",
            file=sys.stderr,
            flush=True,
        )
    print(f"reports: {out}/locust.html, {out}/summary.md", flush=True)
    return summary["status"] if not summary.get("failure") else 1


def _invariants(event_id: int, samples: Samples, figures: dict) -> dict:
    """The sale's invariants; accepted orders are matched only after a sold-out flood (no purchase in flight)."""
    from loadtests.invariants import InvariantError, invariants_check, wait_until_final

    wait_until_final([event_id], timeout=60)
    flooded = (
        figures.get("flood") is not None
    )  # a second of refusals: no purchase was cut off in flight
    accepted = samples.order_id[samples.mask(kind="buy", outcome="accepted")] if flooded else None
    try:
        return invariants_check(
            "locust sale",
            event_id,
            accepted_ids=accepted,
            expect_sold_out=figures.get("sold_out", False),
        )
    except InvariantError as exc:
        return {"ok": False, "problems": [str(exc)]}


if __name__ == "__main__":
    sys.exit(main())
