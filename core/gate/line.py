"""The buyers' line of each event: a pending order's position and estimated wait.

Numbers. The gate's reserve script gives each accept the next number of its event's
line (`arrived`, in the same Lua call that reserves the tickets: core/gate/reserve.py,
whose `Place` is that number and `Line` the counters below). Each commit batch adds the
orders it made final to `served` (core/services/orders.py); a number given to an accept
that then recorded no order is counted as served at once. Commits take pending
orders in id order, which is acceptance order (up to accepts in the same millisecond on
different API processes), so an order with number k has k - 1 - served pending orders
ahead of it.

Trust. The counters only know the orders accepted since the line opened, and only
while every count reached Redis. A line opened on a gate where nobody holds tickets
(no order of the event pending) is trusted from its first number; one opened on a gate
rebuilt after Redis lost it (older orders may be pending) is trusted once a commit
batch finds no order older than the line still pending in PostgreSQL. It is trusted no
more, for good, when a commit batch began and never finished (a killed worker: its
commit may have landed without its count), a batch that began before the line opened
committed orders of it, or an accept's insert ended with an unknown outcome. Outside a
trusted line (and for an order whose card lost its number) the
position is recomputed from PostgreSQL: the event's pending orders with a smaller id,
one query on order_pending_by_event_idx. So a position is either counted in Redis under
these rules or read from PostgreSQL, never guessed.

Estimated wait. From the event's last commit batches (the served log, written by the
workers): orders per second of committing, and the batches' own length, plus the
drain's delay (ORDER_COMMIT_DELAY_SECONDS). Before any batch was measured, a floor
stands in: DEFAULT_CAPACITY orders/s, DEFAULT_BATCH_SECONDS per batch (both in
core/gate/reserve.py, with `wait_estimate`).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import redis
from django.conf import settings
from django.db import DatabaseError

from core.gate.keys import gate_script, line_keys
from core.gate.reserve import (
    BATCH_STALE_SECONDS,
    LOG_WINDOW_SECONDS,
    Line,
    Place,
    line_parse_log,
    wait_estimate,
)
from core.models import Order
from core.redis_client import get_redis

logger = logging.getLogger(__name__)

MAX_RETRY_AFTER = 10


def line_record(mode: str, *, event_id: int, name: str, args: tuple = ()):
    """Record in the event's line: a commit batch's 'begin' or 'done', a number given to
    an accept that recorded no order ('skip'), or the line's 'trust' or 'doubt'.

    See core/gate/line.lua for each mode's arguments.
    """
    return gate_script("line")(keys=list(line_keys(event_id)), args=[mode, name, *args])


def line_read(*, event_id: int) -> Line:
    """Read an event's line (one Redis round trip, within the event's slot)."""
    gate, log, batches = line_keys(event_id)
    pipe = get_redis().pipeline(transaction=False)
    pipe.hmget(gate, "line", "served", "trusted")
    pipe.lrange(log, 0, 31)
    pipe.hvals(batches)
    (name, served, trusted), entries, starts = pipe.execute()
    return Line(
        name or "",
        int(served or 0),
        trusted or "",
        line_parse_log(entries),
        tuple(map(float, starts)),
    )


def orders_pending_ahead(*, event_id: int, order_id: int) -> int:
    """PostgreSQL's count of the event's pending orders older than `order_id` (one query)."""
    return Order.objects.filter(
        event_id=event_id, status=Order.Status.PENDING, id__lt=order_id
    ).count()


@dataclass(frozen=True)
class Batch:
    """A commit batch as its line saw it begin."""

    event_id: int
    id: str
    line: str
    opened: float
    undecided: bool  # the line is neither trusted nor doubted yet
    began: float


def line_batch_begin(*, event_id: int, batch_id: str) -> Batch:
    """Record that a commit batch begins (one Redis round trip, errors raised)."""
    began = time.time()
    name, opened, trusted = line_record(
        "begin", event_id=event_id, name=batch_id, args=(f"{began:.3f}", BATCH_STALE_SECONDS)
    )
    return Batch(event_id, batch_id, name, float(opened), name != "" and trusted == "", began)


def line_batch_done(batch: Batch, *, created: list) -> None:
    """Count a committed batch's orders (`created`: their created_at) as served, log its
    rate, and trust an undecided line once no order older than it is pending.

    Called after the commit: a Redis failure is logged, not raised; the batch then stays
    unfinished in Redis and the line is trusted no more ("Trust" above).
    """
    mine = sum(1 for at in created if at.timestamp() >= batch.opened)
    trust = batch.undecided and not _older_pending(batch)
    seconds = time.time() - batch.began
    try:
        line_record(
            "done",
            event_id=batch.event_id,
            name=batch.id,
            args=(
                batch.line,
                mine,
                len(created),
                f"{time.time():.3f}",
                f"{seconds:.4f}",
                int(trust),
            ),
        )
    except redis.RedisError:
        logger.warning("line not counted: Redis unavailable", extra={"event_id": batch.event_id})


def _older_pending(batch: Batch) -> bool:
    """Whether an order accepted before the line opened is still pending (one query).

    Such orders are ahead of every number of the line and not counted by it. Every order
    of the line was recorded after `opened` (the opener's time before its reserve call),
    every order before it (Redis lost the gate meanwhile) before that.
    """
    return Order.objects.filter(
        event_id=batch.event_id,
        status=Order.Status.PENDING,
        created_at__lt=datetime.fromtimestamp(batch.opened, tz=UTC),
    ).exists()


def served_rate(log: tuple[tuple[float, int, float], ...], now: float | None = None) -> float:
    """Orders made final per second over the last LOG_WINDOW_SECONDS, from a served log."""
    since = (time.time() if now is None else now) - LOG_WINDOW_SECONDS
    return round(sum(orders for when, orders, _ in log if when >= since) / LOG_WINDOW_SECONDS, 1)


@dataclass(frozen=True)
class Standing:
    """Where a pending order stands; `place` is a better place for its card, if any."""

    position: int | None
    estimate: float | None
    place: Place | None = None


def order_standing(*, order_id: int, place: Place | None) -> Standing:
    """Position and estimated wait of a pending order, from its card's `place`.

    One Redis round trip for the line; plus one query when the line cannot tell (see
    the module docstring). Nothing known when neither Redis nor PostgreSQL can answer,
    or the card has no place at all (written before cards had one).
    """
    if place is None:
        return Standing(None, None)
    if not place.line:
        return _recounted(event_id=place.event_id, order_id=order_id)
    now = time.time()
    try:
        line = line_read(event_id=place.event_id)
    except redis.RedisError:
        line = None
    position = line.position(place, now=now) if line else None
    if position is None:
        try:
            position = orders_pending_ahead(event_id=place.event_id, order_id=order_id)
        except DatabaseError:
            return Standing(None, None)
    return Standing(position, wait_estimate(line, position=position, now=now))


def _recounted(*, event_id: int, order_id: int) -> Standing:
    """Recount an order whose place is not known (a card rebuilt from PostgreSQL, a
    replay), and give it a place for its next card when the line is trusted and stood
    still around the recount.

    Its number is then what it would have been: position + 1 + served. That holds only if
    no batch committed between the recount and the read of `served`: none in progress
    when the line is read, none finished since a second before the recount (the second
    absorbs clock differences between hosts).
    """
    began = time.time()
    try:
        position = orders_pending_ahead(event_id=event_id, order_id=order_id)
    except DatabaseError:
        return Standing(None, None)
    try:
        line = line_read(event_id=event_id)
    except redis.RedisError:
        return Standing(position, wait_estimate(None, position=position))
    better = None
    still = not line.batches and all(when < began - 1.0 for when, _, _ in line.log)
    if line.name and line.trusted == line.name and still:
        better = Place(event_id, line.name, position + 1 + line.served)
    return Standing(position, wait_estimate(line, position=position), better)


def retry_after(estimate: float | None) -> int:
    """Whole seconds to the next poll: the estimate, within 1..MAX_RETRY_AFTER."""
    if estimate is None:
        return settings.ORDER_POLL_SECONDS
    return min(max(math.ceil(estimate), 1), MAX_RETRY_AFTER)


def with_place(body: bytes, *, position: int | None, estimate: float | None) -> bytes:
    """The order's JSON object with `position` and `estimated_wait_seconds` appended.

    Appended to the rendered bytes rather than re-rendered: a pending poll answers
    from its card's bytes like any other.
    """
    tail = (
        f',"position":{"null" if position is None else position},'
        f'"estimated_wait_seconds":{"null" if estimate is None else estimate}}}'
    )
    return body[:-1] + tail.encode()
