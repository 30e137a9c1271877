"""Reads for operators: queue depths, pending orders, live workers, gate agreement, lines.

The selectors behind `GET /ops/queues/`, `manage.py queues` and the gauges of `/metrics`
(kept apart from core/selectors/__init__.py, the product's reads). Each answers from Redis and
PostgreSQL in a few round trips and never waits on the workers: a worker announces
itself (core/services/workers.py, from a bootstep in workers/celery.py), it is not
pinged.
"""

from __future__ import annotations

import time
from datetime import timedelta
from functools import cache

import amqp.exceptions
import kombu
import redis
from django.conf import settings
from django.db.models import Count, Min, Q
from django.utils import timezone
from kombu.exceptions import KombuError

from core.gate.keys import gate_keys, line_keys  # the gate's key format lives with the gate
from core.gate.line import served_rate
from core.gate.reserve import line_parse_log
from core.models import Order
from core.redis_client import get_redis
from core.selectors import events_on_sale, events_with_remaining

# The Celery queues (names as in workers/celery.py; tests/api/test_monitoring.py checks
# that they match, since core/ does not import the worker package).
QUEUES = ("purchases", "default")

# A sorted set: member = worker node name, score = when it last announced itself.
WORKERS_KEY = "ops:workers"


def worker_alive_window() -> float:
    """Seconds since its last announcement within which a worker counts as alive."""
    return 3 * settings.WORKER_HEARTBEAT_SECONDS


@cache
def _broker(url: str) -> redis.Redis:
    # One pooled client per process (redis-py resets its pool after a fork).
    return redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)


def _on_rabbitmq(url: str) -> bool:
    return url.split("://", 1)[0] in ("amqp", "amqps", "pyamqp")


def queue_depths() -> dict[str, int]:
    """Messages waiting in each queue (Redis keeps a queue as a list; RabbitMQ counts
    the ready messages of each, which a passive declare returns)."""
    url = settings.CELERY_BROKER_URL
    if _on_rabbitmq(url):
        return _rabbitmq_queue_depths(url)
    pipe = _broker(url).pipeline(transaction=False)
    for queue in QUEUES:
        pipe.llen(queue)
    return dict(zip(QUEUES, pipe.execute(), strict=True))


def _rabbitmq_queue_depths(url: str) -> dict[str, int]:
    """One connection per call: an operator's read, seconds apart, not the hot path."""
    depths = {}
    with kombu.Connection(url, connect_timeout=2) as conn:
        channel = conn.default_channel
        for queue in QUEUES:
            try:
                depths[queue] = channel.queue_declare(queue, passive=True).message_count
            except conn.channel_errors:  # not declared yet: no worker has started
                depths[queue] = 0
                channel = conn.channel()  # a failed passive declare closes the channel
    return depths


def workers_alive() -> list[str]:
    """Node names of the workers that announced themselves within the alive window.

    One Redis round trip; a worker killed without a warm shutdown drops out of the
    answer once the window has passed.
    """
    since = time.time() - worker_alive_window()
    return sorted(get_redis().zrangebyscore(WORKERS_KEY, since, "+inf"))


def orders_pending_summary() -> dict:
    """Pending orders, the oldest one's age, and orders made final in the last minute."""
    now = timezone.now()
    pending = Order.objects.filter(status=Order.Status.PENDING).aggregate(
        count=Count("id"), oldest=Min("created_at")
    )
    oldest = pending["oldest"]
    age = (now - oldest).total_seconds() if oldest else 0.0
    finalized = Order.objects.filter(finalized_at__gte=now - timedelta(minutes=1)).count()
    return {
        "pending": pending["count"],
        "oldest_pending_seconds": round(age, 3),
        "finalized_last_minute": finalized,
    }


def gate_agreement(*, limit: int = 50) -> list[dict]:
    """For each event on sale (soonest first): the gate's stock beside PostgreSQL's, and
    the buyers' line: its length, the orders served per second over the last seconds,
    and the oldest waiting order's age.

    PostgreSQL's figures are `events_with_remaining`'s (total - sold - pending - offered,
    beside the gate's tickets on sale plus its waitlist pool) and the
    pending orders, for every event in one query; the gates and their served logs come
    in one Redis round trip (on a cluster, one per node: RedisCluster splits the plain
    pipeline by slot owner, never sending a cross-slot command): the cost does not grow
    with the number of events. A difference while orders are in flight is normal for a
    moment; one that stays across reconciliations is not.
    """
    waiting = Q(orders__status=Order.Status.PENDING)
    events = list(
        events_with_remaining(events_on_sale())
        .order_by("date", "id")
        .annotate(
            waiting=Count("orders", filter=waiting),
            oldest=Min("orders__created_at", filter=waiting),
        )
        .values("pk", "name", "remaining", "waiting", "oldest")[:limit]
    )
    pipe = get_redis().pipeline(transaction=False)
    for event in events:
        gate_key, served_key, _ = line_keys(event["pk"])
        pipe.hmget(gate_key, "remaining", "pool")  # as gate_observe reads them
        pipe.lrange(served_key, 0, 31)  # as line_read reads it
    replies = pipe.execute()
    now, rows = timezone.now(), []
    for event, gate, log in zip(events, replies[::2], replies[1::2], strict=True):
        database = event["remaining"]
        gate = None if gate[0] is None else int(gate[0]) + int(gate[1] or 0)
        oldest = event["oldest"]
        rows.append(
            {
                "event": event["pk"],
                "name": event["name"],
                "gate_remaining": gate,
                "database_remaining": database,
                "agrees": gate is None or gate == database,
                "line_length": event["waiting"],
                "served_per_second": served_rate(line_parse_log(log), now.timestamp()),
                "oldest_waiting_seconds": round((now - oldest).total_seconds(), 3)
                if oldest
                else 0.0,
            }
        )
    return rows


def queue_summary(*, events_limit: int = 50) -> dict:
    """Everything above in one document (the /ops/queues/ body and `manage.py queues`)."""
    try:
        depths = queue_depths()
    except (redis.RedisError, OSError, KombuError, amqp.exceptions.AMQPError) as exc:
        depths = {"error": type(exc).__name__}
    try:
        gate = gate_agreement(limit=events_limit)
    except redis.RedisError:
        gate = []
    try:
        workers = workers_alive()
    except redis.RedisError:
        workers = []
    return {
        "queues": depths,
        "orders": orders_pending_summary(),
        "workers": workers,
        "events": gate,
        "disagreements": sum(1 for row in gate if not row["agrees"]),
        "waiting_rooms": waiting_room_summary(limit=events_limit),
        "waitlists": waitlist_summary(limit=events_limit),
        "checked_at": timezone.now().isoformat(),
    }


# --- The waitlists (core/services/waitlists.py) --------------------------------------


def waitlist_summary(*, limit: int = 50) -> list[dict]:
    """For each event on sale with a waitlist (soonest first): its offer time, whether it
    is paused, entries waiting, offers out, offers taken and offers expired (two queries:
    `waitlist_figures`)."""
    from core.selectors import waitlist_figures

    events = list(
        events_on_sale()
        .filter(waitlist__isnull=False)
        .order_by("date", "id")
        .values_list("pk", flat=True)[:limit]
    )
    rows = {row.pop("event_id"): row for row in waitlist_figures(event_ids=events)}
    return [{"event": pk, **rows[pk]} for pk in events if pk in rows]


# --- The waiting rooms (core/waiting_room.py) ---------------------------------------


def waiting_room_summary(*, limit: int = 50) -> list[dict]:
    """For each event on sale with a waiting room (soonest first): joined, waiting,
    serving, admitted per second (last 10 s), admitted not yet bought, expired
    admissions, the automatic capacity, and whether it is admitting now (open, not
    paused, stock left): the room stalls when people wait, it admits, and serving
    stands still (alert WaitingRoomStalled).

    One query and one Redis round trip for every room, as gate_agreement; the counters
    as the last room call (or beat's persist, every few seconds) left them. Empty when
    Redis does not answer.
    """
    from core.models import WaitingRoom
    from core.waiting_room import room_keys

    rooms = list(
        WaitingRoom.objects.filter(event__in=events_on_sale())
        .order_by("event__date", "event_id")
        .values_list("event_id", flat=True)[:limit]
    )
    fields = ("on", "serving", "joined", "open", "expired", "capacity", "paused", "rate")
    pipe = get_redis().pipeline(transaction=False)
    for event_id in rooms:
        keys = room_keys(event_id)
        pipe.hmget(keys[0], fields)
        pipe.zrevrange(keys[4], 0, 11)
        pipe.hmget(gate_keys(event_id)[0], "remaining", "starts")
    try:
        replies = pipe.execute()
    except redis.RedisError:
        return []
    now, rows = time.time(), []
    for i, event_id in enumerate(rooms):
        room, ranges, gate = replies[3 * i : 3 * i + 3]
        room = dict(zip(fields, room, strict=True))
        if room["on"] == "1":  # else not in Redis yet: rebuilt on the next room call
            rows.append(_waiting_room_row(event_id, room, ranges, gate, now))
    return rows


def _waiting_room_row(event_id: int, room: dict, ranges: list, gate: list, now: float) -> dict:
    from core.waiting_room import room_admitted_recent

    serving, joined = int(room["serving"]), int(room["joined"])
    remaining, starts = (None, 0.0) if gate[0] is None else (int(gate[0]), float(gate[1]))
    return {
        "event": event_id,
        "joined": joined,
        "waiting": max(0, joined - serving),
        "serving": serving,
        "admitted_per_second": room_admitted_recent(ranges, now=now) / 10,
        "admitted_not_bought": int(room["open"]),
        "expired": int(room["expired"]),
        "capacity": int(room["capacity"]),
        "rate": int(room["rate"]) if room["rate"] else None,
        "paused": room["paused"] == "1",
        "sold_out": remaining is not None and remaining <= 0,
        "admitting": room["paused"] != "1"
        and now >= starts
        and (remaining is None or remaining > 0),
    }
