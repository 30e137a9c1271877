"""The benchmark's scenarios, each ending with the invariants of the sale it ran.

Each scenario gets a fresh event, drives one load generator process (loadtests.loadgen)
with `drive`, which also meters what the run cost (CPU per role, PostgreSQL lock waits,
optional py-spy profiles), and returns plain figures (JSON-able) plus what the charts
need under "_chart".
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import requests
from tqdm import tqdm

from loadtests import analysis as an
from loadtests import prepare
from loadtests.analysis import Samples
from loadtests.profiling import Profiler
from loadtests.stack import ROOT, LockSampler, Meter, Stack, cpu_delta, free_port
from tests.invariants import InvariantError, assert_invariants, wait_until_no_pending

SALE_GRACE_SECONDS = 1.0  # clients keep buying this long after they first see sold_out
PREOPEN_SECONDS = 1.0  # clients hammer this long before the sale opens (sale_not_open)
CROWD_ANSWER_SECONDS = 10.0  # a flash crowd's request is answered within this, or not at all
PROFILED = ("accept", "sale")  # scenarios profiled with --profile

__all__ = ["Context", "InvariantError"]


@dataclass
class Context:
    args: object
    stack: Stack
    meter: Meter
    database: str
    api_url: str
    tokens: list[str]
    buyer_ids: list[int]
    work_dir: Path
    profiles: dict = field(default_factory=dict)
    baseline_url: str | None = None  # the API of the --baseline commit, when one runs


# --- Driving a load generator -----------------------------------------------------------


class LoadGen:
    """The orchestrator's end of a `python -m loadtests.loadgen` process."""

    def __init__(self, spec: dict):
        self.process = subprocess.Popen(
            [sys.executable, "-m", "loadtests.loadgen"],
            cwd=ROOT, text=True, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        )  # fmt: skip
        self.send(spec)
        if not json.loads(self.process.stdout.readline() or "{}").get("ready"):
            raise RuntimeError("load generator did not start")

    def send(self, fields: dict) -> None:
        self.process.stdin.write(json.dumps(fields) + "\n")
        self.process.stdin.flush()

    def wait(self, bar: tqdm, key: str) -> dict:
        for line in self.process.stdout:
            message = json.loads(line)
            if message.get("done"):
                self.process.wait(timeout=30)
                return message
            bar.n = min(message[key], bar.total)
            postfix = {"req": message["n"], "tickets": message["qty"]}
            bar.set_postfix(**postfix, sold_out=message["sold_out"], refresh=False)
            bar.refresh()
        raise RuntimeError(f"load generator exited with {self.process.wait()}")


def drive(ctx: Context, label: str, spec: dict, setup, *, progress="t", total=None) -> dict:
    """Start a load generator, run `setup()` (-> go fields), measure the run; return raw results."""
    samples_path = ctx.work_dir / f"{label}.csv"
    spec = {
        "base_url": ctx.api_url, "tokens": ctx.tokens, "concurrency": ctx.args.concurrency,
        "max_requests": ctx.args.max_requests, "quantities": [1, 4], "seed": 7,
        "samples": str(samples_path), **spec,
    }  # fmt: skip
    generator = LoadGen(spec)
    go = setup()
    locks = LockSampler(ctx.database)
    locks.start()
    profiler = None
    if ctx.args.profile and label in PROFILED:
        targets = {role: [p.pid for p in ctx.stack.children(role)] for role in ("api", "worker")}
        profiler = Profiler(targets, ctx.work_dir, label)
    cpu_before, started = ctx.meter.cpu_snapshot(), time.monotonic()
    generator.send(go)
    bar_format = (
        "{desc} {percentage:3.0f}%|{bar:24}| {n:.0f}/{total:.0f} {unit} [{elapsed}] {postfix}"
    )
    try:
        with tqdm(
            total=total or spec["max_seconds"], desc=f"{label:<12}", file=sys.stdout,
            unit="s" if progress == "t" else "tkt", bar_format=bar_format,
        ) as bar:  # fmt: skip
            done = generator.wait(bar, progress)
    finally:
        if generator.process.poll() is None:  # we failed, not the generator: end it (our own pid)
            generator.process.kill()
        lock_waits = locks.stop()
    seconds = time.monotonic() - started
    cpu_after = ctx.meter.cpu_snapshot()
    cpu = cpu_delta(cpu_before, cpu_after, seconds)
    cpu["loadgen"] = round(done["cpu"] / seconds, 2)
    cpu["other"] = round(max(0.0, cpu["other"] - cpu["loadgen"]), 2)
    # Only the server under load does work while a scenario runs (the others idle), so the
    # `api` role's CPU over the requests served is that server's cost per request.
    api_seconds = cpu_after.get("api", 0.0) - cpu_before.get("api", 0.0)
    if profiler:
        ctx.profiles[label] = profiler.stop()
    return {
        "samples": Samples.load(samples_path),
        "cpu_cores": cpu,
        "api_cpu_ms_per_request": round(api_seconds / done["n"] * 1000, 3) if done["n"] else None,
        "pg_lock_waits": lock_waits,
    }


def login_all(base_url: str, usernames: list[str], password: str) -> list[str]:
    """Log every buyer in once through POST /login/ (before any measurement)."""
    session = requests.Session()

    def login(username: str) -> str:
        body = {"username": username, "password": password}
        response = session.post(f"{base_url}/login/", json=body, timeout=30)
        response.raise_for_status()
        return response.json()["access"]

    return _in_parallel(login, usernames)


def _in_parallel(function, items) -> list:
    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(function, items))


# --- Figures ----------------------------------------------------------------------------


def _order_times(event_id: int) -> dict[str, np.ndarray]:
    from core.models import Order

    fields = ("created_at", "finalized_at", "quantity", "status")
    rows = list(Order.objects.filter(event_id=event_id).values_list(*fields))
    return {
        "created": np.array([r[0].timestamp() for r in rows]),
        "finalized": np.array([r[1].timestamp() if r[1] else np.nan for r in rows]),
        "qty": np.array([r[2] for r in rows]),
        "confirmed": np.array([r[3] == "confirmed" for r in rows], dtype=bool),
    }


def _commit_figures(times: dict[str, np.ndarray]) -> dict:
    done = ~np.isnan(times["finalized"])
    finalized = times["finalized"][done]
    if len(finalized) < 2:
        return {"orders": int(len(finalized))}
    lag = finalized - times["created"][done]
    span = finalized.max() - finalized.min()
    per_second = np.histogram(finalized, np.arange(finalized.min(), finalized.max() + 1.0, 1.0))[0]
    batches = len(np.unique(finalized))  # every order of a commit batch shares its finalized_at
    return {
        "orders": int(len(finalized)),
        "span_s": round(float(span), 3),
        "batches": batches,
        "orders_per_batch": round(len(finalized) / batches, 1),
        "orders_per_s": round(float(len(finalized) / span), 1) if span else None,
        "peak_orders_in_1s": int(per_second.max()) if len(per_second) else None,
        "accept_to_final_p50_ms": round(float(np.percentile(lag, 50) * 1000), 1),
        "accept_to_final_p99_ms": round(float(np.percentile(lag, 99) * 1000), 1),
    }


def _steady(raw: dict, **extra) -> dict:
    samples = raw.pop("samples")
    by = an.by_outcome(samples, samples.mask())
    return {**extra, **an.steady_state(samples), "by_outcome": by, **raw, "_samples": samples}


def _spec(ctx: Context, base_url: str | None, mode: str = "get", **fields) -> dict:
    spec = {"mode": mode, "max_seconds": ctx.args.duration, **fields}
    return {**spec, "base_url": base_url} if base_url else spec


def _final_seen(samples: Samples) -> np.ndarray:
    """Polls that saw their order final (neither pending, nor busy, nor an error)."""
    outcome = samples.outcome.astype(str)
    final = samples.mask(kind="poll") & (outcome != "pending")
    return final & ~np.char.startswith(outcome, "error_") & ~np.char.startswith(outcome, "busy_")


# --- Scenarios --------------------------------------------------------------------------


def scenario_bare(ctx: Context) -> dict:
    """Reference: a bare WSGI app (loadtests/bare.py) on the product's server, its ceiling."""
    app, workers = "loadtests.bare:application", ctx.args.api_workers
    url = ctx.stack.start_api(
        "bare-api", port=free_port(), workers=workers, app=app, health_path="/"
    )
    try:
        return _steady(drive(ctx, "bare", _spec(ctx, url), lambda: {"path": "/"}))
    finally:
        ctx.stack.stop("bare-api")


def scenario_health(ctx: Context) -> dict:
    """Reference: `GET /health/` of the product, the framework's floor (no authentication)."""
    return _steady(drive(ctx, "health", _spec(ctx, None), lambda: {"path": "/health/"}))


def scenario_floor(ctx: Context, event_id: int | None = None, *, base_url=None) -> dict:
    """a. Authenticated GET /events/<id>/ (on `base_url`, the baseline's API, when given)."""
    event_id = event_id or prepare.event_prepare(total_tickets=1000, name="Floor")
    label = "baseline_floor" if base_url else "floor"
    raw = drive(ctx, label, _spec(ctx, base_url), lambda: {"path": f"/events/{event_id}/"})
    return _steady(raw, event_id=event_id)


def scenario_accept(ctx: Context, *, base_url: str | None = None) -> dict:
    """a'. The accept path alone: purchases of an event that cannot sell out, no polling.

    Against the baseline's API too: its orders are drained by this stack's worker (same task
    name and queue, see bench.baseline_check) and the same invariants are checked."""
    label = "baseline_accept" if base_url else "accept"
    event_id = prepare.event_prepare(total_tickets=2_000_000_000, name=f"Accept path ({label})")
    spec = _spec(ctx, base_url, "buy", grace_after_sold_out=None)
    raw = drive(ctx, label, spec, lambda: {"path": f"/events/{event_id}/purchase/"})
    samples = raw["samples"]
    drain = wait_until_no_pending(event_id, timeout=120)
    accepted = samples.order_id[samples.mask(outcome="accepted")]
    figures = assert_invariants(event_id, label=label, accepted_ids=accepted)
    commit = _commit_figures(_order_times(event_id))
    drain = round(drain, 2)
    return _steady(
        raw, event_id=event_id, drain_after_load_s=drain, commit=commit, invariants=figures
    )


def poll_orders_prepare(ctx: Context) -> dict[str, dict]:
    """One order per buyer, pending on one event and confirmed on another: {status: {event_id, paths}}.

    Rows go in through the ORM as if accepted (pending) or committed (confirmed). No drain is
    queued for the pending event, so nothing finalizes those orders (scenario_poll checks)."""
    from django.utils import timezone

    from core.models import Event, Order

    made = {}
    for status in ("pending", "confirmed"):
        total = 10 * len(ctx.buyer_ids)
        event_id = prepare.event_prepare(total_tickets=total, name=f"Poll ({status})")
        final = status == "confirmed"
        if not final:
            _line_open(event_id, ctx.buyer_ids[0])
        finalized_at = timezone.now() if final else None
        orders = Order.objects.bulk_create(
            Order(
                user_id=u, event_id=event_id, quantity=1, status=status, finalized_at=finalized_at
            )
            for u in ctx.buyer_ids
        )
        if final:
            Event.objects.filter(pk=event_id).update(tickets_sold=len(orders))
        # tokens[i] belongs to buyer_ids[i]: the loadgen's client reading as buyer i asks for paths[i].
        made[status] = {"event_id": event_id, "paths": [f"/orders/{o.pk}/" for o in orders]}
    return made


def _line_open(event_id: int, user_id: int) -> None:
    """Open the event's line before its rows go in, as its first purchase would (a gate
    call, given back like a purchase whose insert failed), so that the polls count places
    from the line as they do for orders accepted through the API; without a line, every
    poll of these rows would be recounted from PostgreSQL (core/gate/line.py)."""
    from core.gate.keys import new_operation_id
    from core.gate.reserve import PurchaseAsk, gate_number_return, gate_release, gate_reserve

    operation_id = new_operation_id("bench")
    answer = gate_reserve(PurchaseAsk(user_id, event_id, 1, operation_id=operation_id))
    assert answer.status == "ok", answer
    gate_release(event_id=event_id, operation_id=operation_id, holdings=[(user_id, 1)])
    gate_number_return(answer.place)


def scenario_poll(ctx: Context, orders: dict, status: str, *, base_url: str | None = None) -> dict:
    """GET /orders/<id>/ by its owner, every order `status` (pending or confirmed) throughout."""
    from core.models import Order

    name = "poll_pending" if status == "pending" else "poll_final"
    label = f"baseline_{name}" if base_url else name
    event_id, paths = orders[status]["event_id"], orders[status]["paths"]
    _poll_each_once(base_url or ctx.api_url, ctx.tokens, paths)
    raw = drive(ctx, label, _spec(ctx, base_url, paths=paths), lambda: {"path": paths[0]})
    left = Order.objects.filter(event_id=event_id, status=status).count()
    return _steady(raw, event_id=event_id, orders=len(paths), orders_still_in_status_after=left)


def _poll_each_once(base_url: str, tokens: list[str], paths: list[str]) -> None:
    """Read every order once before the measurement, as its buyer would right after the 202.

    An order accepted through the API is answered from what the purchase left in Redis; these
    rows went in through the ORM, so without this the timed polls would mostly be first reads."""
    session = requests.Session()

    def read(i: int) -> None:
        headers = {"Authorization": f"Bearer {tokens[i]}"}
        response = session.get(base_url + paths[i], headers=headers, timeout=30)
        if response.status_code != 200:
            raise RuntimeError(f"GET {paths[i]} by its owner: {response.status_code}")

    _in_parallel(read, range(len(paths)))


def scenario_sale(ctx: Context, *, naive_url=None, label=None, **spec_fields) -> dict:
    """b (or d with naive_url). A flash sale of --tickets: pre-open rush, sell-out, polls.

    `spec_fields` override the load generator's (concurrency, network_timeout: the crowd)."""
    label = label or ("naive_sale" if naive_url else "sale")
    created: dict = {}

    def setup() -> dict:
        from core.models import Event

        created["id"] = event_id = prepare.event_prepare(
            total_tickets=ctx.args.tickets, name=label, opens_in=PREOPEN_SECONDS
        )
        created["open_at"] = Event.objects.get(pk=event_id).sale_starts_at.timestamp()
        prefix = "/naive" if naive_url else ""
        return {"path": f"{prefix}/events/{event_id}/purchase/", "start_at": time.time()}

    spec = _spec(ctx, naive_url, "buy", poll=not naive_url, grace_after_sold_out=SALE_GRACE_SECONDS)
    spec.update(max_seconds=ctx.args.sale_timeout, **spec_fields)
    raw = drive(ctx, label, spec, setup, progress="qty", total=ctx.args.tickets)
    samples, event_id, open_at = raw["samples"], created["id"], created["open_at"]
    drain = wait_until_no_pending(event_id, timeout=120)
    won = samples.mask(kind="buy", outcome="confirmed" if naive_url else "accepted")
    sold_out = samples.mask(kind="buy", outcome="sold_out")
    buys = samples.outcome[samples.mask(kind="buy")].astype(str)
    unanswered = sum(1 for o in buys if o.startswith("error_") and not o[6:].isdigit())
    figures = assert_invariants(
        event_id, label=label, gate=not naive_url, accepted_ids=samples.order_id[won],
        unanswered_purchases=unanswered, expect_sold_out=bool(sold_out.any()),
    )  # fmt: skip
    window, sold_out_at = an.sale_window(samples, open_at)
    times, seen = _order_times(event_id), _final_seen(samples)
    final_at = float(np.nanmax(times["finalized"])) if len(times["finalized"]) else None
    confirmed = times["confirmed"]

    def after_open(at):
        return round(at - open_at, 3) if at else None

    return {
        "event_id": event_id,
        "design": "naive" if naive_url else "queued",
        "tickets": ctx.args.tickets,
        "orders_won": int(won.sum()),
        "sold_out_after_open_s": after_open(sold_out_at),
        "all_final_after_open_s": after_open(final_at),
        "client_saw_all_final_after_open_s": after_open(
            float(samples.end[seen].max()) if seen.any() else None
        ),
        **window,
        "drain_after_load_s": round(drain, 2),
        "commit": None if naive_url else _commit_figures(times),
        "line": None if naive_url else _line_figures(samples, event_id),
        "cpu_cores": raw["cpu_cores"],
        "api_cpu_ms_per_request": raw["api_cpu_ms_per_request"],
        "pg_lock_waits": raw["pg_lock_waits"],
        "invariants": figures,
        "_chart": {
            "rates": an.rate_timeline(samples, open_at),
            "lock_waits": raw["pg_lock_waits"]["_timeline"],
            "open_at": open_at,
            "reserved": an.cumulative(samples.end[won], samples.qty[won], open_at),
            "committed": an.cumulative(
                times["finalized"][confirmed], times["qty"][confirmed], open_at
            ),
        },
        "_samples": samples,
    }


def _line_figures(samples: Samples, event_id: int) -> dict:
    """What the place in line bought the buyers: polls per accepted order, how long after
    PostgreSQL made an order final its buyer saw it, and how close the 202's estimated
    wait came to the actual accept → final time (the client's clock: 202 received →
    finalized_at; both on this machine)."""
    from core.models import Order

    orders = Order.objects.filter(event_id=event_id).exclude(finalized_at=None)
    final_at = {i: at.timestamp() for i, at in orders.values_list("id", "finalized_at")}
    won, seen = samples.mask(kind="buy", outcome="accepted"), _final_seen(samples)
    first_seen: dict[int, float] = {}
    for order_id, end in zip(samples.order_id[seen], samples.end[seen], strict=True):
        first_seen[int(order_id)] = min(end, first_seen.get(int(order_id), end))
    lag = [first_seen[o] - final_at[o] for o in first_seen if o in final_at]
    estimate = samples.estimate if samples.estimate is not None else np.full(len(samples.t), np.nan)
    misses, given = [], 0
    for order_id, end, guess in zip(
        samples.order_id[won], samples.end[won], estimate[won], strict=True
    ):
        if np.isnan(guess):
            continue
        given += 1
        if int(order_id) in final_at:
            misses.append(abs(final_at[int(order_id)] - end - guess))
    accepted, polls = int(won.sum()), int(samples.mask(kind="poll").sum())

    def pct(values, q):
        return round(float(np.percentile(values, q)), 3) if values else None

    return {
        "polls_per_accepted_order": round(polls / accepted, 3) if accepted else None,
        "final_to_seen_p50_s": pct(lag, 50),
        "final_to_seen_p90_s": pct(lag, 90),
        "estimates_given": given,
        "estimates_null": accepted - given,
        "estimate_abs_error_median_s": pct(misses, 50),
        "estimate_abs_error_p90_s": pct(misses, 90),
    }


def scenario_flood(ctx: Context, event_id: int, *, base_url=None, naive: bool = False) -> dict:
    """c. Purchases of a sold-out event: what a refresh storm after the sale costs.

    On `base_url` (the baseline's or the naive API) when given; `naive` selects the naive
    API's routes and skips the Redis gate in the invariants."""
    label = "naive_flood" if naive else "baseline_flood" if base_url else "flood"
    path = f"{'/naive' if naive else ''}/events/{event_id}/purchase/"
    spec = _spec(ctx, base_url, "buy", grace_after_sold_out=None)
    raw = drive(ctx, label, spec, lambda: {"path": path})
    figures = assert_invariants(event_id, label=label, gate=not naive, expect_sold_out=True)
    return _steady(raw, event_id=event_id, invariants=figures)


def scenario_naive(ctx: Context) -> dict:
    """d. The same sale against the naive design (a second API server), then its sold-out flood."""
    env = {"DJANGO_SETTINGS_MODULE": "loadtests.naive.settings"}
    url = ctx.stack.start_api("naive-api", port=free_port(), workers=ctx.args.api_workers, env=env)
    try:
        sale = scenario_sale(ctx, naive_url=url)
        sale["flood"] = scenario_flood(ctx, sale["event_id"], base_url=url, naive=True)
        return sale
    finally:
        ctx.stack.stop("naive-api")


def scenario_crowd(ctx: Context, concurrency: int) -> dict:
    """Flash crowd: a sale with `concurrency` keep-alive connections; every request must be answered.

    An answer is any HTTP response from the API within CROWD_ANSWER_SECONDS (a 503 with
    Retry-After and a `code` included); socket errors, time-outs and slower answers are not."""
    sale = scenario_sale(
        ctx, label="crowd", concurrency=concurrency, network_timeout=CROWD_ANSWER_SECONDS
    )
    answered = an.answered_figures(sale["_samples"], CROWD_ANSWER_SECONDS)
    return {**sale, "connections": concurrency, **answered}


def scenario_scale_out(ctx: Context, engines, workers=(1, 2, 4), events: int = 4) -> dict:
    """e. Drain a backlog of --backlog pending orders with 1, 2, 4 worker processes.

    Two shapes: one hot event (one drain at a time, by design: every batch locks the
    event row) and the same backlog spread over `events` events. `engines` adds series:
    (broker, Redis topology) pairs among redis/rabbitmq and single/cluster; the run's own
    (redis, single) keeps its keys, the others drain the spread shape only, on a
    three-node Redis Cluster started for them (events on several nodes) and/or a
    RabbitMQ vhost of their own.
    """
    ctx.stack.stop("worker")
    results, backlog = {}, ctx.args.backlog
    for broker, topology in engines:
        own = (broker, topology) == ("redis", "single")
        with _scale_out_engines(ctx.database, broker, topology) as (env, publish):
            for k in workers:
                shapes = {}
                if own:
                    shapes["one_event"] = [
                        prepare.backlog_prepare(orders=backlog, buyer_ids=ctx.buyer_ids)
                    ]
                shapes[f"{events}_events"] = [
                    prepare.backlog_prepare(orders=backlog // events, buyer_ids=ctx.buyer_ids)
                    for _ in range(events)
                ]
                name = f"worker-x{k}" if own else f"worker-{broker}-{topology}-x{k}"
                ctx.stack.start_worker(name, concurrency=k, env=env, args=["--without-heartbeat"])
                _wait_consuming(publish)
                for shape, event_ids in shapes.items():
                    row = _drain_timed(ctx, publish, event_ids, f"x{k} {shape}", k)
                    row.update(shape=shape, broker=broker, topology=topology)
                    results[f"{shape}/x{k}" if own else f"{broker}+{topology}/{shape}/x{k}"] = row
                ctx.stack.stop(name)
    return results


def _drain_timed(ctx: Context, publish, event_ids: list[int], label: str, k: int) -> dict:
    from django.db.models import Max

    from core.gate.keys import inflight_key
    from core.models import Order
    from core.redis_client import redis_slot_owner

    cpu_before, published = ctx.meter.cpu_snapshot(), time.time()
    for event_id in event_ids:
        publish(event_id)
    with tqdm(total=1, desc=f"drain {label:<20}", bar_format="{desc} [{elapsed}]", file=sys.stdout):
        waited = wait_until_no_pending(*event_ids, timeout=120)
    orders = Order.objects.filter(event_id__in=event_ids)
    last = orders.aggregate(m=Max("finalized_at"))["m"].timestamp()
    count = orders.count()
    return {
        "processes": k,
        "orders": count,
        "seconds": round(last - published, 3),
        "orders_per_s": round(count / (last - published), 1),
        "cpu_cores": cpu_delta(cpu_before, ctx.meter.cpu_snapshot(), waited),
        "redis_nodes": len({redis_slot_owner(inflight_key(e)) for e in event_ids}),
        "invariants": [
            assert_invariants(e, label=f"scale-out {label}", expect_sold_out=True)
            for e in event_ids
        ],
    }


@contextmanager
def _scale_out_engines(database: str, broker: str, topology: str):
    """Yield (worker environment, publish(event_id)) for one series; this process's
    gate client follows REDIS_URL, so the backlog's gates and the checks go there too."""
    from celery import Celery
    from django.conf import settings

    from core.redis_client import redis_clients_forget
    from tests.engines import RedisClusterNodes, rabbitmq_vhost
    from workers.celery import broker_options

    with ExitStack() as stack:
        env = {}
        if topology == "cluster":
            cluster = RedisClusterNodes().start()
            stack.callback(cluster.stop)
            env["REDIS_URL"] = cluster.url
        if broker == "rabbitmq":
            env["CELERY_BROKER_URL"] = stack.enter_context(rabbitmq_vhost(database))
        saved = settings.REDIS_URL
        settings.REDIS_URL = env.get("REDIS_URL", saved)
        redis_clients_forget()
        stack.callback(redis_clients_forget)
        stack.callback(setattr, settings, "REDIS_URL", saved)
        broker_url = env.get("CELERY_BROKER_URL", settings.CELERY_BROKER_URL)
        publisher = Celery("bench-publisher", broker=broker_url)
        publisher.conf.update(broker_options(broker_url), task_default_queue="default")
        stack.callback(publisher.close)
        # An explicit connection: Celery prefers the CELERY_BROKER_URL environment
        # variable (this process's own broker) to the app's `broker` argument.
        connection = stack.enter_context(publisher.connection_for_write(broker_url))

        def publish(event_id: int) -> None:
            publisher.send_task(
                "workers.tasks.event_orders_commit",
                args=[event_id], queue="purchases", connection=connection,
            )  # fmt: skip

        yield env, publish


def _wait_consuming(publish) -> None:
    """Publish a drain of a non-existent event and wait until a worker has run it."""
    from core.gate.keys import drain_flag_key
    from core.redis_client import get_redis

    sentinel = 2_000_000_000
    get_redis().set(drain_flag_key(sentinel), 1, ex=60)
    publish(sentinel)
    Stack.wait_until(
        lambda: not get_redis().exists(drain_flag_key(sentinel)), "a worker to consume"
    )
