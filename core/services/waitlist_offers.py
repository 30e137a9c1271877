"""Waitlist offers: made in the line's order as tickets come back, held in the gate for the
offered buyer, ended when they expire or their buyer leaves, passed on to the next entry.

An offer round (`waitlist_offer`) takes the gate's pool, offers it in the line's order,
and puts back what no entry could take. Rounds run when tickets come back (a
cancellation, an expired offer, a buyer leaving) and on beat (`waitlist_tick`), which
also ends expired offers.

The rule for a return smaller than the next entry's quantity: the tickets go to the
first entry in line whose quantity fits, and the entries they pass keep their places and
come first for every later return. Every entry gets all the tickets it asked for or none
(a partial offer would leave the buyer holding tickets they did not ask for), and no
returned ticket waits unsold while someone in line could take it. A buyer at the head
who would take fewer can say so by joining again with a smaller quantity: the place is
kept.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta

import redis
from django.db import transaction
from kombu.exceptions import OperationalError

from core.gate.keys import new_operation_id
from core.gate.waitlist import waitlist_gate_offer, waitlist_gate_revoke, waitlist_gate_take
from core.models import Event, Waitlist, WaitlistEntry
from core.selectors import event_remaining, events_on_sale

logger = logging.getLogger(__name__)

Status = WaitlistEntry.Status


def at_epoch(now: float) -> datetime:
    return datetime.fromtimestamp(now, tz=UTC)


def waitlist_offer(*, event_id: int, now: float | None = None) -> int:
    """Offer the tickets in the gate's pool to the waitlist, in its order; return the
    number of offers made.

    The pool is taken first (in flight: no other round offers the same tickets), the
    offers are recorded in PostgreSQL, then held in the gate with what no entry could
    take put back. If this process dies in between, reconciliation rebuilds the gate
    from PostgreSQL once the round's operation is stale.
    """
    now = time.time() if now is None else now
    operation_id = new_operation_id("offer")
    taken = waitlist_gate_take(event_id=event_id, operation_id=operation_id, now=now)
    if not taken:
        return 0
    chosen: list[WaitlistEntry] = []
    rest_to = "pool"
    try:
        chosen, rest_to = _offers_decide(event_id=event_id, tickets=taken, now=now)
    finally:
        offers = [(e.user_id, e.quantity, e.pk) for e in chosen]
        waitlist_gate_offer(
            event_id=event_id,
            operation_id=operation_id,
            offers=offers,
            rest=taken - sum(e.quantity for e in chosen),
            rest_to=rest_to,
        )
    for entry in chosen:
        logger.info(
            "waitlist offer made",
            extra={"event_id": event_id, "user_id": entry.user_id, "tickets": entry.quantity},
        )
    return len(chosen)


def _offers_decide(*, event_id: int, tickets: int, now: float) -> tuple[list[WaitlistEntry], str]:
    """Record offers of `tickets` in the line's order (first entry that fits); return them
    and where the rest goes: the pool while entries still wait, else on sale."""
    with transaction.atomic(durable=True):
        # NO KEY: serializes the event's offer rounds; nothing else writes this row often.
        waitlist = Waitlist.objects.select_for_update(no_key=True).filter(event_id=event_id).first()
        if waitlist is None or waitlist.paused:
            return [], "remaining"
        event = Event.objects.get(pk=event_id)
        budget = min(tickets, event_remaining(event=event))
        waiting = WaitlistEntry.objects.filter(event_id=event_id, status=Status.WAITING)
        chosen = []
        for entry in waiting.order_by("line_key", "id").iterator(chunk_size=500):
            if budget <= 0:
                break
            if entry.quantity <= budget:
                chosen.append(entry)
                budget -= entry.quantity
        expires = at_epoch(now) + timedelta(seconds=waitlist.offer_seconds)
        for entry in chosen:
            entry.status, entry.offered_quantity = Status.OFFERED, entry.quantity
            entry.offered_at, entry.expires_at = at_epoch(now), expires
        WaitlistEntry.objects.bulk_update(
            chosen, ["status", "offered_quantity", "offered_at", "expires_at"]
        )
        left = waiting.exclude(pk__in=[e.pk for e in chosen]).exists()
    return chosen, "pool" if left else "remaining"


def waitlist_offers_expire(*, now: float | None = None, limit: int = 500) -> int:
    """End the offers past their time that no order took; their tickets pass to the next
    entries. Return the number ended."""
    now = time.time() if now is None else now
    due = WaitlistEntry.objects.filter(
        status=Status.OFFERED, expires_at__lte=at_epoch(now), orders__isnull=True
    )
    by_event: dict[int, list[tuple[int, int]]] = {}
    with transaction.atomic(durable=True):
        rows = list(
            due.select_for_update(no_key=True, of=("self",)).values_list(
                "pk", "event_id", "user_id"
            )[:limit]
        )
        WaitlistEntry.objects.filter(pk__in=[pk for pk, _, _ in rows]).update(
            status=Status.EXPIRED, ended_at=at_epoch(now)
        )
    for pk, event_id, user_id in rows:
        by_event.setdefault(event_id, []).append((user_id, pk))
    for event_id, offers in by_event.items():
        waitlist_offers_revoke(event_id=event_id, offers=offers)
    return len(rows)


def waitlist_offers_revoke(*, event_id: int, offers: list[tuple[int, int]]) -> None:
    """Take ended offers out of the gate and offer their tickets on (after PostgreSQL has
    ended them; an offer a purchase took meanwhile is gone from the gate already)."""
    try:
        if waitlist_gate_revoke(event_id=event_id, offers=offers):
            waitlist_offer(event_id=event_id)
    except redis.RedisError:
        logger.warning("ended offers left to reconciliation", extra={"event_id": event_id})


def waitlist_offer_soon(*, event_id: int) -> None:
    """Ask a worker for an offer round on the event (beat's tick runs one anyway)."""
    from workers.waitlist_tasks import waitlist_offer_round_task

    try:
        waitlist_offer_round_task.delay(event_id)
    except (OperationalError, redis.RedisError, OSError):  # as drain_publish's callers
        logger.warning("offer round left to beat", extra={"event_id": event_id})


def waitlist_tick(*, now: float | None = None) -> dict[str, int]:
    """Beat's round: end expired offers, then offer what is left in the pools of the
    events on sale (a round on an empty pool is one Redis call)."""
    expired = waitlist_offers_expire(now=now)
    offered = 0
    running = Waitlist.objects.filter(paused=False, event__in=events_on_sale())
    for event_id in running.values_list("event_id", flat=True):
        offered += waitlist_offer(event_id=event_id, now=now)
    return {"expired": expired, "offered": offered}
