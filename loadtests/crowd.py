"""The crowd of issue 19 through the front door, with and without the waiting room.

    python -m loadtests.crowd [--buyers 10000] [--hammer 200] [--tickets 10000]
        [--rates 200,auto] [--no-room] [--present 2000] [--nice -10] [--out docs/benchmarks]

Own database (--database bench_crowd, recreated) and Redis DB (--redis-db 9, FLUSHDB of it
only); the API (core.serve, 2 workers), a Celery worker, beat (the room's automatic
capacity) and HAProxy (deploy/haproxy/haproxy.cfg, HAPROXY_MAXCONN 12000, niced to --nice
when root) in front. Every buyer has a minted token and its own keep-alive connection
(loadtests/crowd_client.py, one gevent process). In order: the reference sale (the
benchmark's sale, 64 clients, no crowd), the room crowd once per --rates entry, the same
crowd without a room, the benchmark's --present crowd; each event 10,000 tickets, 1-4 per
order, each run ends by itself (--max-seconds after the opening). Writes crowd.md and
crowd.json to --out. Exit 2 if an invariant broke.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import psutil
import requests

from loadtests.stack import ROOT, Meter, cpu_delta

KINDS = ("join", "me", "public", "purchase", "poll", "hammer")
ARRIVE = (-10.0, 10.0)  # seconds around the opening
PUBLIC_ROUTE = 'route="events/<int:event_id>/waiting-room/"'


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add, both = parser.add_argument, argparse.BooleanOptionalAction
    add("--buyers", type=int, default=10_000)
    add("--hammer", type=int, default=200, help="clients that ignore the room and buy")
    add("--tickets", type=int, default=10_000)
    # 200/s measured better than auto (docs/benchmarks/crowd.md)
    add("--rates", default="200", help="room runs: buyers/s and/or auto, comma-separated")
    add("--admission-seconds", type=int, default=30)
    add("--no-room", action=both, default=True, help="the crowd without a room")
    add("--present", type=int, default=2000, help="the benchmark's crowd beside (0: skip)")
    add("--reference", action=both, default=True, help="the sale without a crowd")
    add("--nice", type=int, default=-10, help="HAProxy's niceness (root only; 0: none)")
    add("--max-seconds", type=float, default=100.0, help="each run ends this long after opening")
    add("--database", default="bench_crowd")
    add("--redis-db", type=int, default=9)
    add("--out", type=Path, default=ROOT / "docs" / "benchmarks")
    return parser.parse_args(argv)


def stack_up(args, work: Path):
    from loadtests import prepare, stack
    from loadtests.clients import raise_open_files_limit
    from tests.frontdoor.door import SOURCE, start_door

    raise_open_files_limit(20_000)  # inherited by HAProxy
    os.environ["DJANGO_TRUSTED_PROXY_ADDRESSES"] = SOURCE
    group = stack.stack_prepare(args.database, args.redis_db, work)
    api = group.start_api(workers=2)
    group.start_worker(concurrency=2, args=["--without-heartbeat"])
    group.start_beat()
    door = start_door(group, api_address=api.split("//")[1], HAPROXY_MAXCONN="12000")
    if args.nice and os.geteuid() == 0:
        os.setpriority(os.PRIO_PROCESS, group.processes["door"].pid, args.nice)
    names = prepare.users_prepare(prefix=prepare.BUYER_PREFIX, count=args.buyers + args.hammer)
    minted = prepare.tokens_mint(names=names, lifetime_seconds=7200)
    ids = prepare.user_ids(names)
    return group, api, door, [minted[n] for n in names], ids


def crowd_run(args, ctx, label: str, *, rate: int | None | bool) -> dict:
    """One crowd on a fresh event; rate False: no room, None: automatic, int: fixed."""
    from core.models import Event, Order
    from core.services.waiting_room import waiting_room_configure
    from loadtests.prepare import event_prepare
    from tests.invariants import assert_invariants, wait_until_no_pending

    lead = 15.0  # the client process starts and connects before the first arrival
    event_id = event_prepare(total_tickets=args.tickets, name=label, opens_in=lead - ARRIVE[0])
    opens_at = Event.objects.get(pk=event_id).sale_starts_at.timestamp()
    if rate is not False:
        waiting_room_configure(
            event_id=event_id, rate=rate, admission_seconds=args.admission_seconds, paused=False
        )
    out = ctx.work / label
    spec = {"base_url": ctx.door.base_url, "event_id": event_id, "opens_at": opens_at,
            "buyers": ctx.tokens[: args.buyers], "hammer": ctx.tokens[args.buyers :],
            "room": rate is not False, "arrive": ARRIVE, "quantities": [1, 4], "seed": 19,
            "deadline": opens_at + args.max_seconds, "network_timeout": 10.0,
            "samples": f"{out}-samples.csv", "buyers_out": f"{out}-buyers.csv"}  # fmt: skip
    public_before = _django_public_hits(ctx.api)
    cpu_before, started = ctx.meter.cpu_snapshot(), time.monotonic()
    # No resolver thread pool on the way of 10,000 connects (gevent's default hands every
    # getaddrinfo to one); the address is numeric. Measured neither better nor worse.
    env = {**os.environ, "GEVENT_RESOLVER": "block"}
    client = subprocess.Popen([sys.executable, "-m", "loadtests.crowd_client"], cwd=ROOT, env=env,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)  # fmt: skip
    client.stdin.write(json.dumps(spec) + "\n")
    client.stdin.flush()
    peak = 0
    for line in client.stdout:
        message = json.loads(line)
        peak = max(peak, _rss(client.pid))
        print(f"{label}: {message}", flush=True)
        if message.get("done"):
            break
    if client.wait(timeout=60) or not message.get("done"):
        raise RuntimeError(f"{label}: the crowd client exited with {client.returncode}")
    seconds = time.monotonic() - started
    cpu = cpu_delta(cpu_before, ctx.meter.cpu_snapshot(), seconds)
    cpu["crowd_client"] = round(message["cpu"] / seconds, 2)
    samples, buyers = _table(spec["samples"]), _table(spec["buyers_out"])
    wait_until_no_pending(event_id, timeout=120)
    unanswered = int(
        ((samples["status"] == 0) & np.isin(samples["kind"], ["purchase", "hammer"])).sum()
    )
    accepted = [int(o) for o in buyers["order_id"] if not np.isnan(o)]
    invariants = assert_invariants(
        event_id, label=label, accepted_ids=accepted, unanswered_purchases=unanswered
    )
    hammered = Order.objects.filter(
        event_id=event_id, status="confirmed", user_id__in=ctx.ids[args.buyers :]
    )
    figures = {
        "event_id": event_id, "rate": "none" if rate is False else rate or "auto", **_speed(event_id),
        "kinds": {k: _kind(samples, k) for k in KINDS if (samples["kind"] == k).any()},
        "hammer_orders": hammered.count(), "hammer_tickets": sum(o.quantity for o in hammered),
        "cpu_cores": cpu, "client_peak_rss_mb": peak, "seconds": round(seconds, 1), "invariants": invariants,
    }  # fmt: skip
    if rate is not False:  # Django's own count; per second of the crowd's polling
        hits, polled = (
            _django_public_hits(ctx.api) - public_before,
            samples["t"][samples["kind"] == "public"],
        )
        figures["public_at_django_per_s"] = round(
            hits / max(np.ptp(polled) if len(polled) else 0, 1.0), 2
        )
        figures["public_at_django"], figures["fairness"] = hits, {**_fairness(buyers), **_entries(event_id)}  # fmt: skip
    return figures


def _rss(pid: int) -> int:
    try:
        return round(psutil.Process(pid).memory_info().rss / 2**20)
    except psutil.NoSuchProcess:
        return 0


def _django_public_hits(api: str) -> float:
    text = requests.get(f"{api}/metrics", timeout=10).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("http_request_duration_seconds_count") and PUBLIC_ROUTE in line
               and 'method="GET"' in line)  # fmt: skip


def _kind(samples, kind: str) -> dict:
    mask = samples["kind"] == kind
    status, latency, codes = (samples[c][mask] for c in ("status", "latency", "code"))
    latency = latency * 1000
    answered = latency[status != 0]
    return {
        "count": int(mask.sum()), "answered": int((status != 0).sum()),
        "served": int(((status != 0) & (status != 503)).sum()), "busy_503": int((status == 503).sum()),
        "timeout": int((status == 0).sum()), "within_1s": int(((status != 0) & (latency <= 1000)).sum()),
        "within_2s": int(((status != 0) & (latency <= 2000)).sum()),
        "p50_ms": round(float(np.percentile(answered, 50)), 1) if len(answered) else None,
        "p99_ms": round(float(np.percentile(answered, 99)), 1) if len(answered) else None,
        "codes": {str(c): int((codes == c).sum()) for c in set(codes.tolist()) if c and c != "nan"},
    }  # fmt: skip


def _spearman(x, y) -> float | None:
    if len(x) < 3:
        return None
    return round(float(np.corrcoef(np.argsort(np.argsort(x)), np.argsort(np.argsort(y)))[0, 1]), 4)


def _fairness(buyers) -> dict:
    """Early joiners' numbers against their arrival; later ones in arrival order."""
    keep = (buyers["index"] >= 0) & ~np.isnan(buyers["number"])
    known = {k: v[keep] for k, v in buyers.items()}
    early = {k: v[known["early"] == 1] for k, v in known.items()}
    late = {k: v[known["early"] == 0] for k, v in known.items()}
    order = np.argsort(late["joined_start"])
    ends, numbers = late["joined_end"][order], late["number"][order]
    by_end = np.argsort(late["joined_end"])  # a join answered before another began is ahead
    prefix = np.maximum.accumulate(late["number"][by_end]) if len(ends) else []
    behind = np.searchsorted(late["joined_end"][by_end], late["joined_start"][order]) - 1
    inversions = int(sum(1 for i, b in enumerate(behind) if b >= 0 and prefix[b] > numbers[i]))
    return {
        "early_with_number": len(early["number"]), "late_with_number": len(late["number"]),
        "early_rho": _spearman(early["joined_start"], early["number"]),
        "early_all_before_late": bool(not len(late["number"]) or not len(early["number"])
                                      or early["number"].max() < late["number"].min()),
        "late_rho": _spearman(late["joined_start"], late["number"]), "late_out_of_order": inversions,
        "late_checked_pairs": int((np.asarray(behind) >= 0).sum()) if len(ends) else 0,
    }  # fmt: skip


def _entries(event_id: int) -> dict:
    """Every joiner as PostgreSQL recorded it: arrival (joined_at) against place (an early
    joiner's number is its early_key's rank; a later one's number is stored)."""
    from core.models import WaitingRoomEntry

    rows = WaitingRoomEntry.objects.filter(event_id=event_id).values_list(
        "early", "early_key", "number", "joined_at"
    )
    early = np.array(
        [(at.timestamp(), key) for first, key, _, at in rows if first], dtype=float
    ).reshape(-1, 2)
    late = np.array(
        [(at.timestamp(), n) for first, _, n, at in rows if not first], dtype=float
    ).reshape(-1, 2)
    return {"entries_early": len(early), "entries_early_rho": _spearman(early[:, 0], early[:, 1]),
            "entries_late": len(late), "entries_late_rho": _spearman(late[:, 0], late[:, 1]),
            "entries_late_above_early": bool(not len(late) or late[:, 1].min() > len(early))}  # fmt: skip


def _table(path: str) -> dict[str, np.ndarray]:
    """A CSV as columns: numbers as floats ('' -> NaN), the rest as strings."""
    import csv

    with open(path, newline="") as handle:
        rows = list(csv.reader(handle))
    columns = {}
    for name, values in zip(
        rows[0], zip(*rows[1:], strict=True) if rows[1:] else [()] * len(rows[0]), strict=True
    ):
        try:
            columns[name] = np.array([float(v) if v else np.nan for v in values], dtype=float)
        except ValueError:
            columns[name] = np.array(values, dtype=str)
    return columns


def _bench(ctx, clients: int, sale_timeout: float):
    from loadtests import scenarios

    args = SimpleNamespace(tickets=ctx.args.tickets, concurrency=64, max_requests=500_000,
                           sale_timeout=sale_timeout, profile=False, duration=6.0)  # fmt: skip
    return scenarios.Context(args, ctx.group, ctx.meter, ctx.args.database, ctx.door.base_url,
                             ctx.tokens[:clients], ctx.ids[:clients], ctx.work)  # fmt: skip


def reference_run(ctx) -> dict:
    """The same sale (tickets, 1-4 per order) by the benchmark's 64 clients, no crowd."""
    from loadtests.scenarios import scenario_sale

    sale = scenario_sale(_bench(ctx, 256, 60.0))
    return {
        **_speed(sale["event_id"]),
        "cpu_cores": sale["cpu_cores"],
        "invariants": sale["invariants"],
    }


def present_run(ctx, connections: int) -> dict:
    """The benchmark's own flash crowd (scenarios.scenario_crowd), through the door."""
    from loadtests.scenarios import scenario_crowd

    crowd = scenario_crowd(_bench(ctx, connections, 90.0), connections)
    samples = crowd.pop("_samples")
    outcome = samples.outcome.astype(str)
    none = np.array([o.startswith("error_") and not o[6:].isdigit() for o in outcome], dtype=bool)
    status = np.where(none, 0, np.where(np.char.startswith(outcome, "busy_"), 503, 200))
    table = {"kind": np.where(samples.kind == "buy", "purchase", samples.kind),
             "status": status, "latency": samples.latency, "code": outcome}  # fmt: skip
    return {"kinds": {k: _kind(table, k) for k in ("purchase", "poll")}, **_speed(crowd["event_id"]),
            "cpu_cores": crowd["cpu_cores"], "invariants": crowd["invariants"]}  # fmt: skip


def _speed(event_id: int) -> dict:
    """Tickets sold per second from the opening to the last accepted order (its created_at)."""
    from core.models import Event, Order

    opens = Event.objects.get(pk=event_id).sale_starts_at.timestamp()
    sold = Order.objects.filter(event_id=event_id, status="confirmed")
    last = max((o.created_at.timestamp() for o in sold), default=opens) - opens
    tickets = round(sum(o.quantity for o in sold) / max(last, 1e-3), 1)
    return {"tickets_per_s": tickets, "last_sale_after_open_s": round(last, 2)}


def derived(run: dict, reference: float | None) -> dict:
    """The figures crowd goals name (loadtests/goals.toml, [[crowd_goal]])."""
    kinds, fair = run.get("kinds", {}), run.get("fairness") or {}
    p99 = [k["p99_ms"] or 0 for name, k in kinds.items() if name != "hammer"]
    return {
        "unanswered": sum(k["timeout"] for k in kinds.values()), "worst_p99_ms": max(p99, default=None),
        "early_abs_rho": abs(fair["entries_early_rho"]) if fair.get("entries_early_rho") is not None else None,
        "early_all_before_late": int(fair.get("early_all_before_late", 0) and fair.get("entries_late_above_early", 0)),
        "late_out_of_order": fair.get("late_out_of_order"),
        "tickets_vs_reference": round(run["tickets_per_s"] / reference, 3) if reference else None,
        "public_at_django_per_s": run.get("public_at_django_per_s"), "hammer_orders": run.get("hammer_orders"),
        "not_within_2s": sum(k["count"] - k["within_2s"] for k in kinds.values()),
        "invariants_broken": 0 if run.get("invariants") else 1,
    }  # fmt: skip


def _md(title: str, head: list[str], rows: list[list]) -> list[str]:
    lines = [f"## {title}", "", "| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    return [*lines, *("| " + " | ".join(str(cell) for cell in row) + " |" for row in rows), ""]


def goal_rows(results: dict) -> list[str]:
    import tomllib

    spec = tomllib.loads((ROOT / "loadtests" / "goals.toml").read_text()).get("crowd_goal", [])
    reference, rows = results["runs"].get("reference", {}).get("tickets_per_s"), []
    for goal, (label, run) in ((g, r) for g in spec for r in results["runs"].items()):
        if label.startswith(goal["runs"]):
            value, target = derived(run, reference)[goal["value"]], goal["target"]
            met = value is not None and (
                value >= target if goal.get("at_least") else value <= target
            )
            rows.append([goal["goal"], label, value, target, "met" if met else "MISSED"])
    return _md("Goals", ["goal", "run", "value", "target", ""], rows)


def markdown(results: dict) -> str:
    """The goals, then per run: each request kind, the sale, fairness (room runs)."""
    runs, lines = results["runs"], [f"# {__doc__.splitlines()[0]}", ""]
    lines += [f"`{results['command']}` at commit `{results['commit']}`, HAProxy nice "
              f"{results['haproxy_nice']}, cores busy before the start {results['busy_before']}.", ""]  # fmt: skip
    lines += goal_rows(results) + (
        [f"**{results['failure']}**", ""] if "failure" in results else []
    )
    cols = [
        "count",
        "answered",
        "served",
        "busy_503",
        "timeout",
        "within_1s",
        "within_2s",
        "p50_ms",
        "p99_ms",
    ]
    for label, run in ((k, r) for k, r in runs.items() if "kinds" in r):
        rows = [[kind, *(k[c] for c in cols), ", ".join(f"{c} {n}" for c, n in sorted(k.get("codes", {}).items()))]
                for kind, k in run["kinds"].items()]  # fmt: skip
        lines += _md(f"{label}: requests by kind", ["kind", *cols, "codes"], rows)
    rows = [[label, r.get("tickets_per_s"), r.get("last_sale_after_open_s"), r.get("hammer_orders", ""),
             r.get("hammer_tickets", ""), r.get("public_at_django_per_s", ""), r.get("client_peak_rss_mb", ""),
             *(r.get("cpu_cores", {}).get(c, "") for c in ("crowd_client", "loadgen", "api", "worker", "other")),
             f"{r['invariants'].get('tickets_sold')} / {r['invariants'].get('total')}"] for label, r in runs.items()]  # fmt: skip
    head = ["run", "tickets/s", "last sale after opening s", "hammer orders", "hammer tickets",
            "public state at Django /s", "client peak RSS MB", "client cores", "loadgen cores",
            "API cores", "worker cores", "other cores", "sold / total"]  # fmt: skip
    lines += _md("The sales", head, rows)
    fair = ["entries_early", "entries_early_rho", "entries_late", "entries_late_rho", "entries_late_above_early",
            "early_with_number", "early_rho", "early_all_before_late", "late_with_number", "late_rho",
            "late_out_of_order", "late_checked_pairs"]  # fmt: skip
    rows = [
        [label, *(r["fairness"].get(c) for c in fair)]
        for label, r in runs.items()
        if r.get("fairness")
    ]
    return "\n".join(lines + _md("Fairness (room runs)", ["run", *fair], rows))


def main(argv=None) -> int:
    args = parse_args(argv)
    from loadtests.stack import busy_cores_before, stack_teardown
    from tests.invariants import InvariantError

    work, busy = Path(tempfile.mkdtemp(prefix="bench-crowd-")), busy_cores_before("crowd")
    group, api, door, tokens, ids = stack_up(args, work)
    meter = Meter(group)
    meter.start()
    ctx = SimpleNamespace(
        args=args, group=group, api=api, door=door, tokens=tokens, ids=ids, work=work, meter=meter
    )
    results = {"command": "python -m loadtests.crowd " + " ".join(argv or sys.argv[1:]),
               "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                        text=True).stdout.strip(), "haproxy_nice": args.nice, "busy_before": busy,
               "logs": str(work), "runs": {}}  # fmt: skip
    status = 0
    try:
        if args.reference:
            results["runs"]["reference"] = reference_run(ctx)
        for rate in args.rates.split(","):
            if rate.strip():
                label = f"room_{rate.strip()}"
                value = None if rate.strip() == "auto" else int(rate)
                results["runs"][label] = crowd_run(args, ctx, label, rate=value)
        if args.no_room:
            results["runs"]["no_room"] = crowd_run(args, ctx, "no_room", rate=False)
        if args.present:
            results["runs"][f"present_{args.present}"] = present_run(ctx, args.present)
    except InvariantError as exc:
        results["failure"], status = f"INVARIANT BROKEN: {exc}", 2
    except Exception as exc:  # what was measured is still written, with the failure
        results["failure"], status = f"FAILED: {exc!r}", 1
    finally:
        meter.stop()
        stack_teardown(group, args.database)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "crowd.json").write_text(json.dumps(results, indent=1, default=str))
    (args.out / "crowd.md").write_text(markdown(results))
    print(markdown(results))
    return status


if __name__ == "__main__":
    sys.exit(main())
