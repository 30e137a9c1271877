"""A flash sale under Locust against a production-mode stack of its own, in one command.

    python -m loadtests.run [--users 64] [--buyers 256] [--tickets 4000] [--processes 2]
                            [--flood-seconds 5] [--max-seconds 30] [--login] [--out loadtest-reports]

(`make loadtest`). Creates its own PostgreSQL database (`loadtest_ticketing`, dropped and
recreated, migrated) and uses Redis database 8 (FLUSHDB of that number only). Starts the
API as production does (gunicorn with gunicorn.conf.py, DJANGO_DEBUG=0, a secret key made
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

import numpy as np
import psutil
import psycopg
import redis

from loadtests.analysis import Samples, by_outcome, errors, latency_stats, window_rate
from loadtests.processes import BIN, ROOT, ProcessGroup, free_port

DB_NAME = "loadtest_ticketing"
REDIS_URL = "redis://127.0.0.1:6379/8"
DATABASE_URL = f"postgres://postgres@127.0.0.1:5432/{DB_NAME}"
OUT = ROOT / "loadtest-reports"
BENCH_RESULTS = ROOT / "docs" / "benchmarks" / "results.json"
FLOOD_WARMUP_SECONDS = 1.0  # polls of the last orders still run in the first second after sold out


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=64, help="Locust users (the benchmark's --concurrency)")
    parser.add_argument("--buyers", type=int, default=256, help="distinct buyer accounts")
    parser.add_argument("--tickets", type=int, default=4000, help="tickets of the sale (the benchmark sells 10000)")
    parser.add_argument("--processes", type=int, default=os.cpu_count() or 1, help="Locust worker processes")
    parser.add_argument("--flood-seconds", type=float, default=5.0, help="purchases after sold out")
    parser.add_argument("--max-seconds", type=float, default=30.0, help="Locust stops after this long in any case")
    parser.add_argument("--max-requests", type=int, default=100_000, help="Locust stops after about this many")
    parser.add_argument("--login", action="store_true", help="users log in through POST /login/ (PBKDF2)")
    parser.add_argument("--api-workers", type=int, default=2, help="gunicorn workers (production default 2)")
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
    with psycopg.connect(host="127.0.0.1", user="postgres", dbname="postgres", autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {DB_NAME}")


def database_drop() -> None:
    with psycopg.connect(host="127.0.0.1", user="postgres", dbname="postgres", autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)")


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
        buyers=args.buyers, tickets=args.tickets,
        token_seconds=None if args.login else args.max_seconds + 600,
    )
    (out / "credentials.json").write_text(json.dumps(prepared, indent=1))
    return prepared


def locust_command(args, api_url: str, out: Path) -> list[str]:
    command = [
        str(BIN / "locust"), "-f", "loadtests/locustfile.py", "--headless", "--shape", "flash",
        "-u", str(args.users), "--host", api_url, "--credentials", str(out / "credentials.json"),
        "--flood-seconds", str(args.flood_seconds), "--samples-dir", str(out / "samples"),
        "--run-time", f"{int(args.max_seconds)}s", "--max-seconds", str(args.max_seconds),
        "--max-requests", str(args.max_requests), "--csv", str(out / "locust"), "--csv-full-history",
        "--html", str(out / "locust.html"), "--only-summary", "--loglevel", "WARNING",
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


def samples_load(directory: Path, merged: Path) -> Samples:
    """Every process's samples in one CSV (sorted by start time), loaded."""
    rows, header = [], None
    for path in sorted(directory.glob("samples-*.csv")):
        lines = path.read_text().splitlines()
        header = header or lines[0]
        rows += lines[1:]
    rows.sort(key=lambda line: float(line.split(",", 1)[0]))
    merged.write_text("\n".join([header or "t,latency,kind,outcome,qty,order_id", *rows]) + "\n")
    return Samples.load(merged)


def sale_figures(samples: Samples, meter: CpuTimeline) -> dict:
    """The benchmark's sale and flood figures (loadtests/scenarios.py), from Locust's samples."""
    buys = samples.mask(kind="buy")
    if not buys.any():
        return {"purchases": 0}
    open_at = float(samples.t[buys].min())  # the sale is open before the first user arrives
    sold_out = samples.mask(kind="buy", outcome="sold_out")
    sold_out_at = float(samples.end[sold_out].min()) if sold_out.any() else None
    window_end = sold_out_at or float(samples.end.max())
    in_window = samples.mask(kind="buy", start=open_at, stop=window_end)
    figures = {
        "sold_out_after_first_purchase_s": round(sold_out_at - open_at, 3) if sold_out_at else None,
        "sale_window_s": round(window_end - open_at, 3),
        "orders_won": int(samples.mask(kind="buy", outcome="accepted").sum()),
        "purchase_rps_in_sale_window": window_rate(samples, open_at, window_end, kind="buy"),
        "all_rps_in_sale_window": window_rate(samples, open_at, window_end),
        "purchase_latency_in_sale_window": latency_stats(samples.latency[in_window]),
        "purchases_by_outcome": by_outcome(samples, buys),
        "polls_by_outcome": by_outcome(samples, samples.mask(kind="poll")),
        "errors": errors(samples),
        "cpu_cores_in_sale_window": meter.cores(open_at, window_end),
    }
    figures["sold_out"] = sold_out_at is not None
    start, stop = (sold_out_at or 0) + FLOOD_WARMUP_SECONDS, float(samples.end.max())
    if sold_out_at and stop - start >= 1.0:  # a flood cut short by --max-seconds says nothing
        flood = samples.mask(kind="buy", start=start) & (samples.end <= stop)
        figures["flood"] = {
            "seconds": round(stop - start, 2),
            "rps": round(float(flood.sum() / (stop - start)), 1) if stop > start else 0.0,
            **latency_stats(samples.latency[flood]),
            "cpu_cores": meter.cores(start, stop),
        }
    figures["cpu_cores_whole_run"] = meter.cores(open_at, float(samples.end.max()))
    return figures


def bench_comparison(figures: dict) -> list[dict]:
    """Locust's figures beside the committed benchmark's (summary.sale and summary.flood)."""
    if not BENCH_RESULTS.exists():
        return []
    bench = json.loads(BENCH_RESULTS.read_text()).get("summary", {})
    sale, flood = bench.get("sale", {}), bench.get("flood", {})

    def get(data, *keys):
        for key in keys:
            data = (data or {}).get(key)
        return data

    rows = [
        ("purchases/s in the sale window", get(figures, "purchase_rps_in_sale_window"),
         get(sale, "purchase_rps_in_sale_window")),
        ("purchase p50 ms (sale window)", get(figures, "purchase_latency_in_sale_window", "p50_ms"),
         get(sale, "purchase_latency_in_sale_window", "p50_ms")),
        ("purchase p99 ms (sale window)", get(figures, "purchase_latency_in_sale_window", "p99_ms"),
         get(sale, "purchase_latency_in_sale_window", "p99_ms")),
        ("poll p50 ms (final answer)", get(figures, "polls_by_outcome", "confirmed", "p50_ms"),
         get(sale, "polls_by_outcome", "confirmed", "p50_ms")),
        ("poll p99 ms (final answer)", get(figures, "polls_by_outcome", "confirmed", "p99_ms"),
         get(sale, "polls_by_outcome", "confirmed", "p99_ms")),
        ("sold-out flood req/s", get(figures, "flood", "rps"), get(flood, "rps")),
        ("sold-out flood p50 ms", get(figures, "flood", "p50_ms"), get(flood, "p50_ms")),
        ("load generator cores (sale)", get(figures, "cpu_cores_in_sale_window", "loadgen"),
         get(sale, "cpu_cores", "loadgen")),
        ("API cores (sale)", get(figures, "cpu_cores_in_sale_window", "api"), get(sale, "cpu_cores", "api")),
        # What a busy machine changes least: requests (purchases and polls) per core the API got.
        ("requests/s per API core (sale)", _per_core(figures.get("all_rps_in_sale_window"),
                                                     get(figures, "cpu_cores_in_sale_window", "api")),
         _per_core(sale.get("all_rps_in_sale_window"), get(sale, "cpu_cores", "api"))),
        ("other work on the machine, cores (sale)", get(figures, "cpu_cores_in_sale_window", "other"),
         get(sale, "cpu_cores", "other")),
    ]
    return [{"figure": name, "locust": mine, "benchmark": theirs,
             "ratio": round(mine / theirs, 2) if mine is not None and theirs and not name.startswith("other") else None}
            for name, mine, theirs in rows]


def _per_core(rate: float | None, cores: float | None) -> float | None:
    return round(rate / cores, 1) if rate is not None and cores else None


def markdown(summary: dict) -> str:
    f = summary.get("figures", {})
    lines = [
        "# Locust flash sale (python -m loadtests.run)", "",
        f"Command: `{summary['command']}`  ", f"Started: {summary['started']}, commit {summary['commit']}  ",
        f"Locust exit status {summary['locust_exit']}; invariants: {summary.get('invariants', {}).get('ok')}; "
        f"cores busy before the start: {summary.get('busy_cores_before_start')}", "",
        *([summary["note"], ""] if summary.get("note") else []),
        "| Figure | Locust | Benchmark (docs/benchmarks/results.json) | Ratio |", "|---|---|---|---|",
    ]
    lines += [f"| {r['figure']} | {r['locust']} | {r['benchmark']} | {r['ratio']} |" for r in summary["comparison"]]
    lines += ["", f"CPU cores in the sale window: {f.get('cpu_cores_in_sale_window')}",
              f"Purchases by outcome: { {k: v.get('count') for k, v in f.get('purchases_by_outcome', {}).items()} }",
              f"Polls by outcome: { {k: v.get('count') for k, v in f.get('polls_by_outcome', {}).items()} }",
              f"Errors: {f.get('errors')}", ""]
    return "\n".join(lines)


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
    env = stack_env(out / "metrics")
    os.environ.update(env)
    stack = ProcessGroup({**os.environ, **env}, out / "logs")
    summary: dict = {"command": " ".join(["python -m loadtests.run", *argv]),
                     "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "args": {k: str(v) for k, v in vars(args).items()},
                     "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                                              capture_output=True, text=True).stdout.strip()}
    status = 1
    busy = psutil.cpu_percent(interval=1.0) * (os.cpu_count() or 1) / 100
    summary["busy_cores_before_start"] = round(busy, 2)
    if busy > 0.3:
        print(f"WARNING: the machine is already busy ({busy:.1f} cores) before the run: figures will be "
              "lower and noisier (see `other` in the CPU figures)", flush=True)
    try:
        database_recreate()
        redis.Redis.from_url(REDIS_URL).flushdb()  # this DB number only
        from loadtests import prepare

        prepare.setup_django()
        from django.core.management import call_command

        call_command("migrate", verbosity=0)
        api_url = stack.start_gunicorn("api", port=free_port(), workers=args.api_workers)
        stack.start_celery_worker("worker", concurrency=args.worker_concurrency)
        prepared = prepare_sale(args, out)
        print(f"stack up at {api_url}; {len(prepared['buyers'])} buyers, event {prepared['event_id']} "
              f"with {args.tickets} tickets; locust: {args.users} users, {args.processes} processes", flush=True)
        summary["locust_exit"], meter = run_locust(args, stack, api_url, out)
        samples = samples_load(out / "samples", out / "samples.csv")
        summary["figures"] = figures = sale_figures(samples, meter)
        summary["invariants"] = _invariants(prepared["event_id"], samples, figures)
        summary["comparison"] = bench_comparison(figures)
        status = 2 if not summary["invariants"].get("ok") else 0 if summary["locust_exit"] == 0 else 1
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
    summary.setdefault("comparison", [])
    summary.setdefault("locust_exit", None)
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    (out / "summary.md").write_text(markdown(summary))
    print(markdown(summary), flush=True)
    if summary.get("failure"):
        print(f"LOAD TEST FAILED: {summary['failure']}\n(logs: {out / 'logs'})", file=sys.stderr, flush=True)
    print(f"reports: {out}/locust.html, {out}/summary.md", flush=True)
    return status


def _invariants(event_id: int, samples: Samples, figures: dict) -> dict:
    """The sale's invariants; accepted orders are matched only after a sold-out flood (no purchase in flight)."""
    from loadtests.invariants import InvariantError, invariants_check, wait_until_final

    wait_until_final([event_id], timeout=60)
    flooded = figures.get("flood") is not None  # a second of refusals: no purchase was cut off in flight
    accepted = samples.order_id[samples.mask(kind="buy", outcome="accepted")] if flooded else None
    try:
        return invariants_check("locust sale", event_id, accepted_ids=accepted,
                                expect_sold_out=figures.get("sold_out", False))
    except InvariantError as exc:
        return {"ok": False, "problems": [str(exc)]}


if __name__ == "__main__":
    sys.exit(main())
