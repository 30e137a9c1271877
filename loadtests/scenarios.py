"""The benchmark's scenarios, each ending with the invariants of the sale it ran.

Each scenario gets a fresh event, drives one load generator process (loadtests.loadgen)
and returns plain figures (JSON-able) plus what the charts need under "_chart".
"""
from __future__ import annotations

import sys
import time

import numpy as np
from tqdm import tqdm

from loadtests import prepare
from loadtests.analysis import (
    Samples,
    by_outcome,
    cumulative,
    errors,
    latency_stats,
    rate_timeline,
    steady_state,
    window_rate,
)
from loadtests.driver import Context, drive
from loadtests.invariants import InvariantError, invariants_check, wait_until_final
from loadtests.stack import Stack, cpu_delta, free_port

SALE_GRACE_SECONDS = 1.0  # clients keep buying this long after they first see sold_out
PREOPEN_SECONDS = 1.0  # clients hammer this long before the sale opens (sale_not_open)

__all__ = ["Context", "InvariantError"]


def _order_times(event_id: int) -> dict[str, np.ndarray]:
    from core.models import Order

    rows = list(Order.objects.filter(event_id=event_id).values_list("created_at", "finalized_at", "quantity", "status"))
    return {
        "created": np.array([r[0].timestamp() for r in rows]),
        "finalized": np.array([r[1].timestamp() if r[1] else np.nan for r in rows]),
        "qty": np.array([r[2] for r in rows]),
        "confirmed": np.array([r[3] == "confirmed" for r in rows], dtype=bool),
    }


def _commit_figures(times: dict[str, np.ndarray]) -> dict:
    finalized = times["finalized"][~np.isnan(times["finalized"])]
    if len(finalized) < 2:
        return {"orders": int(len(finalized))}
    lag = finalized - times["created"][~np.isnan(times["finalized"])]
    span = finalized.max() - finalized.min()
    per_second = np.histogram(finalized, np.arange(finalized.min(), finalized.max() + 1.0, 1.0))[0]
    # Every order of a commit batch gets the same finalized_at: distinct values = batches.
    batches = len(np.unique(finalized))
    return {
        "orders": int(len(finalized)), "span_s": round(float(span), 3),
        "batches": batches, "orders_per_batch": round(len(finalized) / batches, 1),
        "orders_per_s": round(float(len(finalized) / span), 1) if span else None,
        "peak_orders_in_1s": int(per_second.max()) if len(per_second) else None,
        "accept_to_final_p50_ms": round(float(np.percentile(lag, 50) * 1000), 1),
        "accept_to_final_p99_ms": round(float(np.percentile(lag, 99) * 1000), 1),
    }


# --- Scenarios --------------------------------------------------------------------------


def scenario_floor(ctx: Context) -> dict:
    """a. Authenticated GET /events/<id>/: the cheapest request the API serves."""
    event_id = prepare.event_prepare(total_tickets=1000, name="Floor")
    raw = drive(ctx, "floor", {"mode": "get", "max_seconds": ctx.args.duration},
                lambda: {"path": f"/events/{event_id}/"})
    return {"event_id": event_id, **steady_state(raw["samples"]), "cpu_cores": raw["cpu_cores"],
            "pg_lock_waits": raw["pg_lock_waits"], "_samples": raw["samples"]}


def scenario_accept(ctx: Context) -> dict:
    """a'. The accept path alone: purchases of an event that cannot sell out, no polling."""
    event_id = prepare.event_prepare(total_tickets=2_000_000_000, name="Accept path")
    raw = drive(ctx, "accept", {"mode": "buy", "max_seconds": ctx.args.duration, "grace_after_sold_out": None},
                lambda: {"path": f"/events/{event_id}/purchase/"})
    samples = raw["samples"]
    drain = wait_until_final([event_id], timeout=120)
    accepted = samples.mask(outcome="accepted")
    figures = invariants_check("accept", event_id, accepted_ids=samples.order_id[accepted])
    return {"event_id": event_id, **steady_state(samples), "by_outcome": by_outcome(samples, samples.mask()),
            "drain_after_load_s": round(drain, 2), "commit": _commit_figures(_order_times(event_id)),
            "cpu_cores": raw["cpu_cores"], "pg_lock_waits": raw["pg_lock_waits"], "invariants": figures,
            "_samples": samples}


def scenario_sale(ctx: Context, *, naive_url: str | None = None) -> dict:
    """b (or d with naive_url). A flash sale of --tickets: pre-open rush, sell-out, polls."""
    label = "naive_sale" if naive_url else "sale"
    created: dict = {}

    def setup() -> dict:
        from core.models import Event

        created["id"] = event_id = prepare.event_prepare(
            total_tickets=ctx.args.tickets, name=label, opens_in=PREOPEN_SECONDS
        )
        created["open_at"] = Event.objects.get(pk=event_id).sale_starts_at.timestamp()
        prefix = "/naive" if naive_url else ""
        return {"path": f"{prefix}/events/{event_id}/purchase/", "start_at": time.time()}

    spec = {"mode": "buy", "max_seconds": ctx.args.sale_timeout, "poll": not naive_url,
            "grace_after_sold_out": SALE_GRACE_SECONDS}
    if naive_url:
        spec["base_url"] = naive_url
    raw = drive(ctx, label, spec, setup, progress="qty", total=ctx.args.tickets)
    samples, event_id, open_at = raw["samples"], created["id"], created["open_at"]
    drain = wait_until_final([event_id], timeout=120)
    won = samples.mask(kind="buy", outcome="confirmed" if naive_url else "accepted")
    sold_out = samples.mask(kind="buy", outcome="sold_out")
    figures = invariants_check(label, event_id, gate=not naive_url, accepted_ids=samples.order_id[won],
                               expect_sold_out=bool(sold_out.any()))
    sold_out_at = float(samples.end[sold_out].min()) if sold_out.any() else None
    times = _order_times(event_id)
    final_at = float(np.nanmax(times["finalized"])) if len(times["finalized"]) else None
    window_end = sold_out_at or float(samples.end.max())
    in_window = samples.mask(kind="buy", start=open_at, stop=window_end)
    return {
        "event_id": event_id, "design": "naive" if naive_url else "queued",
        "tickets": ctx.args.tickets, "orders_won": int(won.sum()),
        "sold_out_after_open_s": round(sold_out_at - open_at, 3) if sold_out_at else None,
        "all_final_after_open_s": round(final_at - open_at, 3) if final_at else None,
        "client_saw_all_final_after_open_s": _client_final(samples, open_at),
        "sale_window_s": round(window_end - open_at, 3),
        "purchase_rps_in_sale_window": window_rate(samples, open_at, window_end, kind="buy"),
        "all_rps_in_sale_window": window_rate(samples, open_at, window_end),
        "purchase_latency_in_sale_window": latency_stats(samples.latency[in_window]),
        "purchases_by_outcome": by_outcome(samples, samples.mask(kind="buy")),
        "polls_by_outcome": by_outcome(samples, samples.mask(kind="poll")),
        "errors": errors(samples), "drain_after_load_s": round(drain, 2),
        "commit": None if naive_url else _commit_figures(times), "cpu_cores": raw["cpu_cores"],
        "pg_lock_waits": raw["pg_lock_waits"], "invariants": figures,
        "_chart": {
            "rates": rate_timeline(samples, open_at),
            "lock_waits": raw["pg_lock_waits"]["_timeline"], "open_at": open_at,
            "reserved": cumulative(samples.end[won], samples.qty[won], open_at),
            "committed": cumulative(times["finalized"][times["confirmed"]], times["qty"][times["confirmed"]], open_at),
        },
        "_samples": samples,
    }


def _client_final(samples: Samples, open_at: float) -> float | None:
    final = samples.mask(kind="poll") & (samples.outcome != "pending")
    return round(float(samples.end[final].max()) - open_at, 3) if final.any() else None


def scenario_flood(ctx: Context, event_id: int) -> dict:
    """c. Purchases of a sold-out event: what a refresh storm after the sale costs."""
    raw = drive(ctx, "flood", {"mode": "buy", "max_seconds": ctx.args.duration, "grace_after_sold_out": None},
                lambda: {"path": f"/events/{event_id}/purchase/"})
    figures = invariants_check("flood", event_id, expect_sold_out=True)
    samples = raw["samples"]
    return {"event_id": event_id, **steady_state(samples), "by_outcome": by_outcome(samples, samples.mask()),
            "cpu_cores": raw["cpu_cores"], "pg_lock_waits": raw["pg_lock_waits"], "invariants": figures,
            "_samples": samples}


def scenario_naive(ctx: Context) -> dict:
    """d. The same sale against the naive design, served by a second gunicorn."""
    port = free_port()
    url = ctx.stack.start_api("naive-api", port=port, workers=ctx.args.api_workers,
                              settings="loadtests.naive.settings")
    try:
        return scenario_sale(ctx, naive_url=url)
    finally:
        ctx.stack.stop("naive-api")


def scenario_scale_out(ctx: Context, workers: tuple[int, ...] = (1, 2, 4), events: int = 4) -> dict:
    """e. Drain a backlog of --backlog pending orders with 1, 2, 4 worker processes.

    Two shapes: one hot event (one drain at a time, by design: every batch locks the
    event row) and the same backlog spread over `events` events.
    """
    from workers.tasks import event_orders_commit_task

    ctx.stack.stop("worker")
    results = {}
    for k in workers:
        shapes = {
            "one_event": [prepare.backlog_prepare(orders=ctx.args.backlog, buyer_ids=ctx.buyer_ids)],
            f"{events}_events": [prepare.backlog_prepare(orders=ctx.args.backlog // events, buyer_ids=ctx.buyer_ids)
                                 for _ in range(events)],
        }
        name = f"worker-x{k}"
        ctx.stack.start_worker(name, concurrency=k)
        _wait_consuming(event_orders_commit_task)
        for shape, event_ids in shapes.items():
            cpu_before, published = ctx.meter.cpu_snapshot(), time.time()
            for event_id in event_ids:
                event_orders_commit_task.apply_async(args=[event_id])
            with tqdm(total=1, desc=f"drain x{k} {shape:<9}", bar_format="{desc} [{elapsed}]", file=sys.stdout):
                waited = wait_until_final(event_ids, timeout=120)
            from django.db.models import Max

            from core.models import Order

            orders = Order.objects.filter(event_id__in=event_ids)
            last = orders.aggregate(m=Max("finalized_at"))["m"].timestamp()
            count = orders.count()
            results[f"{shape}/x{k}"] = {
                "processes": k, "shape": shape, "orders": count,
                "seconds": round(last - published, 3), "orders_per_s": round(count / (last - published), 1),
                "cpu_cores": cpu_delta(cpu_before, ctx.meter.cpu_snapshot(), waited),
                "invariants": [invariants_check(f"scale-out {shape} x{k}", e, expect_sold_out=True)
                               for e in event_ids],
            }
        ctx.stack.stop(name)
    return results


def _wait_consuming(task) -> None:
    """Publish a drain of a non-existent event and wait until a worker has run it."""
    from core.stock import drain_flag_key, get_redis

    sentinel = 2_000_000_000
    get_redis().set(drain_flag_key(sentinel), 1, ex=60)
    task.apply_async(args=[sentinel])
    Stack.wait_until(lambda: not get_redis().exists(drain_flag_key(sentinel)), "a worker to consume")
