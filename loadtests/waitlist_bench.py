"""The waitlist after a sell-out, under a sold-out flood.

Do returned tickets reach the waitlisted buyers in line order, does the flood take none,
and what does the waitlist cost the flood?

    python -m loadtests.waitlist_bench [--waitlisted 200] [--returns 30] [--flood-seconds 10]
        [--pairs 7] [--out docs/benchmarks]        (or: python -m loadtests.bench --waitlist)

Own database (--database bench_waitlist, recreated) and Redis DB (--redis-db 12, FLUSHDB of
it only); the benchmark's stack (loadtests.bench.setup: the API as production, a Celery
worker, no beat) and load generator (loadtests.scenarios.drive). Each of --pairs pairs runs
two arms, in alternating order, each on a fresh event of the same kind:

- waitlist: an Admin turns the event's waitlist on (PUT .../waitlist/); --holders buyers buy
  it out (1-4 tickets each, committed); --waitlisted buyers join one after another (POST
  .../waitlist/join/, 1-4 tickets), then read their entry (GET .../waitlist/me/) whenever
  its Retry-After is due and buy an offer as soon as they see it (loadgen mode waitlist);
  --concurrency clients flood the purchase for --flood-seconds while --returns holders
  cancel (POST /orders/<id>/cancel/), spread through it; then the offers drain (every
  returned ticket bought, or --drain-timeout).
- plain: the same sell-out, flood and cancellations without a waitlist (the flood takes
  what comes back, as before the waitlist).

The offers due are computed here, apart from the product, from the join order, the
quantities and the returns' sizes by the stated rule (core/services/waitlist_offers.py), and
compared round by round with those PostgreSQL recorded. A cancellation waits until the
previous return has left the gate's pool (an offer round took it; --guard-seconds at
most) so that each round offers one return. Writes waitlist.md and waitlist.json to --out;
goals: the [[waitlist_goal]] rows of loadtests/goals.toml. Exit 2 if an invariant broke.
"""

from __future__ import annotations

import argparse
import os
import random
import shlex
import sys
import tempfile
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import requests
from tqdm import tqdm

from loadtests import analysis as an
from loadtests import report
from loadtests.waitlist_figures import pair_ratios, returns_figures, waitlisted_figures, write

WARMUP = 1.5  # seconds of flood before the first cancellation (the flood's own warm-up: 1 s)


# Options: flag, default (its type is the option's), help.
OPTIONS = """
--waitlisted      200             buyers who join the waitlist, 1-4 tickets each
--holders         120             buyers who sell the event out, 1-4 tickets each
--returns         30              holders who cancel during the flood
--flood-seconds   10.0            length of each flood
--pairs           7               pairs of arms (waitlist, plain), in alternating order
--concurrency     64              clients of the flood
--max-requests    100000          upper bound of requests per flood
--offer-seconds   600             how long an offer holds
--guard-seconds   3.0             longest wait of a cancellation for the previous return
--drain-timeout   60.0            upper bound of the offers' drain after the flood
--seed            20              seed of the quantities and of the holders who cancel
--api-workers     2               server workers of the API
--database        bench_waitlist  dropped and recreated
--redis-db        12              Redis database number (FLUSHDB of it only)
--out             docs/benchmarks where waitlist.md and waitlist.json go
"""


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for line in OPTIONS.strip().splitlines():
        flag, default, text = line.split(maxsplit=2)
        kind = int if default.isdigit() else float if default[0].isdigit() else str
        parser.add_argument(flag, type=kind, default=kind(default), help=text)
    parser.add_argument("--goals", type=Path, default=report.GOALS, help="[[waitlist_goal]] rows")
    parser.set_defaults(crowd=0, profile=False)  # what loadtests.bench.setup and drive read
    args = parser.parse_args(argv)
    args.buyers = args.concurrency + args.holders + args.waitlisted
    args.out = Path(args.out)  # docs/benchmarks: run from the checkout's root, as `-m` needs
    return args


@dataclass(frozen=True)
class Plan:
    """One pair's buyers, quantities and returns: the same in both arms."""

    flood: list[str]  # tokens of the flooding clients
    flood_ids: list[int]
    holders: list[str]
    holder_qty: list[int]
    waitlisted: list[str]  # in join order
    waitlisted_ids: list[int]
    waitlisted_qty: list[int]
    returns: list[int]  # the holders who cancel, in this order
    admin: str

    @property
    def returned(self) -> list[int]:
        """The tickets of each return, in order."""
        return [self.holder_qty[i] for i in self.returns]


def plan_make(ctx, admin: str, seed: int) -> Plan:
    args, rng = ctx.args, random.Random(seed)
    c, h = args.concurrency, args.holders
    holder_qty = [rng.randint(1, 4) for _ in range(h)]
    return Plan(
        ctx.tokens[:c], ctx.buyer_ids[:c], ctx.tokens[c : c + h], holder_qty,
        ctx.tokens[c + h :], ctx.buyer_ids[c + h :],
        [rng.randint(1, 4) for _ in range(args.waitlisted)], rng.sample(range(h), args.returns),
        admin,
    )  # fmt: skip


# --- One arm --------------------------------------------------------------------------


def _http(token: str) -> requests.Session:
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {token}"
    return session


def _ask(token: str, method: str, url: str, expect: int, body=None) -> requests.Response:
    response = _http(token).request(method, url, json=body, timeout=30)
    if response.status_code != expect:
        raise RuntimeError(f"{method} {url}: {response.status_code} {response.text[:200]}")
    return response


def _sell_out(ctx, plan: Plan, label: str, waitlist: bool) -> tuple[int, list[int]]:
    """A fresh event, its waitlist on (or not), bought out by the holders; return its id
    and the holders' order ids."""
    from loadtests.prepare import event_prepare
    from tests.invariants import wait_until_no_pending

    event_id = event_prepare(total_tickets=sum(plan.holder_qty), name=label)
    url = f"{ctx.api_url}/events/{event_id}"
    if waitlist:
        settings = {"offer_seconds": ctx.args.offer_seconds, "paused": False}
        _ask(plan.admin, "PUT", f"{url}/waitlist/", 200, settings)

    def buy(i: int) -> int:
        body = {"quantity": plan.holder_qty[i]}
        return _ask(plan.holders[i], "POST", f"{url}/purchase/", 202, body).json()["id"]

    with ThreadPoolExecutor(max_workers=4) as pool:
        orders = list(pool.map(buy, range(len(plan.holders))))
    wait_until_no_pending(event_id, timeout=60)
    return event_id, orders


def _join_all(ctx, plan: Plan, event_id: int) -> float:
    """The waitlisted buyers join one after another, so the join order is known; return
    the seconds it took."""
    started, url = time.monotonic(), f"{ctx.api_url}/events/{event_id}/waitlist/join/"
    for place, (token, qty) in enumerate(zip(plan.waitlisted, plan.waitlisted_qty, strict=True)):
        entry = _ask(token, "POST", url, 201, {"quantity": qty}).json()
        if entry["position"] != place + 1:
            raise RuntimeError(f"joined at {entry['position']}, expected {place + 1}")
    return round(time.monotonic() - started, 2)


class Cancellations(threading.Thread):
    """The returns, spread over the flood from WARMUP to 1 s before its end; each waits
    until the gate's pool is empty (the previous return taken by an offer round)."""

    def __init__(self, ctx, plan: Plan, event_id: int, orders: list[int], start_at: float):
        super().__init__(daemon=True)
        self.ctx, self.plan, self.event_id, self.orders = ctx, plan, event_id, orders
        span = ctx.args.flood_seconds - WARMUP - 1.0
        gap = span / max(len(plan.returns) - 1, 1)
        self.times = [start_at + WARMUP + i * gap for i in range(len(plan.returns))]
        self.waits: list[float] = []
        self.error: Exception | None = None

    def run(self) -> None:
        from django.db import connection

        try:
            for holder, at in zip(self.plan.returns, self.times, strict=True):
                time.sleep(max(0.0, at - time.time()))
                started, guard = time.monotonic(), self.ctx.args.guard_seconds
                while _offerable(self.event_id) and time.monotonic() - started < guard:
                    time.sleep(0.01)
                self.waits.append(time.monotonic() - started)
                url = f"{self.ctx.api_url}/orders/{self.orders[holder]}/cancel/"
                _ask(self.plan.holders[holder], "POST", url, 200)
        except Exception as exc:  # noqa: BLE001 - reported by the arm, which raises it
            self.error = exc
        finally:
            connection.close()

    def figures(self) -> dict:
        waits, guard = self.waits or [0.0], self.ctx.args.guard_seconds
        return {
            "done": len(self.waits),
            "waited": sum(1 for w in waits if w > 0.02),
            "max_wait_ms": round(max(waits) * 1000),
            "guard_timeouts": sum(1 for w in waits if w >= guard),
        }


def _flood(ctx, plan: Plan, label: str, event_id: int, orders: list[int]) -> tuple[dict, dict]:
    """The flood with the cancellations in it: (its figures, the cancellations')."""
    from loadtests.scenarios import drive

    cancels: list[Cancellations] = []

    def setup() -> dict:
        start_at = time.time() + 0.2
        cancels.append(Cancellations(ctx, plan, event_id, orders, start_at))
        cancels[0].start()
        return {"path": f"/events/{event_id}/purchase/", "start_at": start_at}

    spec = {"mode": "buy", "max_seconds": ctx.args.flood_seconds, "tokens": plan.flood,
            "grace_after_sold_out": None}  # fmt: skip
    raw = drive(ctx, label, spec, setup)
    cancels[0].join(timeout=ctx.args.guard_seconds * len(plan.returns) + 30)
    if cancels[0].error or cancels[0].is_alive():
        raise RuntimeError(f"{label}: cancellations failed: {cancels[0].error or 'still running'}")
    samples = raw.pop("samples")
    flood = {**an.steady_state(samples), "by_outcome": an.by_outcome(samples, samples.mask()),
             **raw, "_samples": samples}  # fmt: skip
    return flood, cancels[0].figures()


def _waitlisters_start(ctx, plan: Plan, label: str, event_id: int):
    from loadtests.scenarios import LoadGen

    path = ctx.work_dir / f"{label}-waitlisted.csv"
    spec = {"base_url": ctx.api_url, "mode": "waitlist", "tokens": plan.waitlisted,
            "concurrency": len(plan.waitlisted), "path": f"/events/{event_id}/purchase/",
            "entry_path": f"/events/{event_id}/waitlist/me/", "poll": True,
            "max_seconds": ctx.args.flood_seconds + ctx.args.drain_timeout + 60,
            "max_requests": ctx.args.max_requests, "quantities": [1, 1], "seed": 20,
            "samples": str(path)}  # fmt: skip
    generator = LoadGen(spec)
    generator.send({"start_at": time.time()})
    return generator, path


def _offerable(event_id: int) -> int:
    """Tickets in the gate's pool that a waiting entry could take (0: none, or none fits)."""
    from core.gate.waitlist import waitlist_gate_read
    from core.models import WaitlistEntry

    pool = waitlist_gate_read(event_id=event_id).pool
    waiting = WaitlistEntry.objects.filter(event_id=event_id, status="waiting")
    return pool if pool and waiting.filter(quantity__lte=pool).exists() else 0


def _offers_drained(event_id: int, timeout: float) -> float:
    """Wait until the pool holds nothing a waiting entry could take, every offer has its
    order and no order is pending (or `timeout`); return the seconds waited."""
    from core.models import Order, WaitlistEntry

    untaken = WaitlistEntry.objects.filter(event_id=event_id, status="offered", orders=None)
    pending = Order.objects.filter(event_id=event_id, status="pending")
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if not (_offerable(event_id) or untaken.exists() or pending.exists()):
            break
        time.sleep(0.1)
    return round(time.monotonic() - started, 2)


def arm_run(ctx, plan: Plan, label: str, *, waitlist: bool) -> dict:
    """One arm on a fresh event: sell out, (join,) flood with returns, drain, check."""
    from loadtests.analysis import Samples
    from tests.invariants import assert_invariants, wait_until_no_pending

    event_id, orders = _sell_out(ctx, plan, label, waitlist)
    figures: dict = {"event_id": event_id, "tickets": sum(plan.holder_qty)}
    if waitlist:
        figures["join_seconds"] = _join_all(ctx, plan, event_id)
        generator, samples_path = _waitlisters_start(ctx, plan, label, event_id)
    flood, figures["cancellations"] = _flood(ctx, plan, label, event_id, orders)
    accepted, buys = [*orders], [flood.pop("_samples")]
    if waitlist:
        figures["drain_s"] = _offers_drained(event_id, ctx.args.drain_timeout)
        print(f"{label}: offers drained in {figures['drain_s']} s", flush=True)
        generator.send({"stop": True})
        generator.wait(tqdm(total=ctx.args.drain_timeout, disable=True), "t")
        buys.append(Samples.load(samples_path))
        figures["waitlisted"] = waitlisted_figures(
            event_id, plan.waitlisted_ids, plan.waitlisted_qty, plan.returned, buys[-1]
        )
    wait_until_no_pending(event_id, timeout=60)
    unanswered = 0
    for samples in buys:
        accepted += samples.order_id[samples.mask(kind="buy", outcome="accepted")].tolist()
        outcomes = samples.outcome[samples.mask(kind="buy")].astype(str)
        unanswered += sum(1 for o in outcomes if o.startswith("error_") and not o[6:].isdigit())
    figures["invariants"] = assert_invariants(
        event_id, label=label, accepted_ids=accepted, unanswered_purchases=unanswered
    )
    return {**figures, **returns_figures(event_id, plan.flood_ids, plan.returned), "flood": flood}


# --- The run ----------------------------------------------------------------------------


def pairs_run(ctx, admin: str, results: dict) -> None:
    """--pairs pairs of arms, alternating which goes first; each pair's figures go into
    results["runs"] as they finish (a failure keeps what was measured)."""
    for index in range(ctx.args.pairs):
        plan = plan_make(ctx, admin, ctx.args.seed + index)
        order = ("waitlist", "plain") if index % 2 == 0 else ("plain", "waitlist")
        pair: dict = {"order": "/".join(order)}
        results["runs"].append(pair)
        for arm in order:
            print(f"--- pair {index + 1}/{ctx.args.pairs}: {arm}", flush=True)
            label = f"{arm}-{index + 1}"
            pair[arm] = arm_run(ctx, plan, label, waitlist=arm == "waitlist")
        pair.update(pair_ratios(pair["waitlist"]["flood"], pair["plain"]["flood"]), _complete=True)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    from loadtests import bench, prepare, stack
    from tests.invariants import InvariantError

    work_dir = Path(tempfile.mkdtemp(prefix="bench-waitlist-"))
    results = {
        "command": " ".join(["python -m loadtests.waitlist_bench", *map(shlex.quote, argv)]),
        "code": bench.code_version(), "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "load_average_before": [round(v, 2) for v in os.getloadavg()], "cpus": os.cpu_count(),
        "args": {k: str(v) for k, v in vars(args).items()}, "logs": str(work_dir), "runs": [],
    }  # fmt: skip
    started, ctx, status = time.monotonic(), None, 0
    try:
        results["busy_cores_before_start"], ctx = bench.setup(args, work_dir)
        name = prepare.users_prepare(prefix=prepare.ADMIN_PREFIX, count=1, role="Admin")[0]
        admin = prepare.tokens_mint(names=[name], lifetime_seconds=7200)[name]
        pairs_run(ctx, admin, results)
    except InvariantError as exc:
        results.update(failure=f"INVARIANT BROKEN: {exc}", invariant_broken=True)
        status = 2
    except Exception as exc:  # what was measured is still written, with the failure
        results["failure"], status = f"FAILED: {exc!r}\n{traceback.format_exc()}", 1
    finally:
        if ctx is not None:
            ctx.meter.stop()
            stack.stack_teardown(ctx.stack, args.database)
    results["wall_seconds"] = round(time.monotonic() - started, 1)
    results["load_average_after"] = [round(v, 2) for v in os.getloadavg()]
    write(results, args.out, args.goals)
    return status


if __name__ == "__main__":
    sys.exit(main())
