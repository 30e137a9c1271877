"""The waitlist: once an event is sold out, tickets that come back go to the next buyer in
line who can take them, as an offer that holds them for a while, not to the fastest
refresher.

How the parts fit (one writer per fact):
- PostgreSQL holds the entries and the offers (`WaitlistEntry`): an offer is recorded
  here, in a durable transaction, before the gate holds it; `remaining` everywhere
  counts offers out (core/selectors.py: total - sold - pending - offered).
- The gate (core/gate/waitlist.lua) keeps returned tickets in its `pool` while the
  waitlist is on, and the offers' tickets in its offers hash, where only the offered
  buyer's purchase can take them (reserve.lua). The purchase is the usual one: one Lua
  call, one INSERT that names the offer's entry (which makes it bought), the same commit.
- An offer round (`waitlist_offer`) takes the pool, offers it in the line's order, and
  puts back what no entry could take. Rounds run when tickets come back (a cancellation,
  an expired offer, a buyer leaving) and on beat (`waitlist_tick`), which also ends
  expired offers.

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

from core.exceptions import (
    GateUnavailableError,
    NotFoundError,
    NotOnWaitlistError,
    NotSoldOutError,
    NoWaitlistError,
    PurchaseLimitError,
    WaitlistNeedsRoomError,
)
from core.gate.keys import new_operation_id
from core.gate.store import gate_held
from core.gate.waitlist import (
    WaitlistGate,
    waitlist_gate_mode,
    waitlist_gate_offer,
    waitlist_gate_read,
    waitlist_gate_revoke,
    waitlist_gate_take,
)
from core.models import Event, WaitingRoomEntry, Waitlist, WaitlistEntry
from core.selectors import event_remaining
from core.services.gate import gate_ensure

logger = logging.getLogger(__name__)

Status = WaitlistEntry.Status


def _at(now: float) -> datetime:
    return datetime.fromtimestamp(now, tz=UTC)


def _state(waitlist: Waitlist | None) -> str:
    """The gate's word for a waitlist: '' (none), 'paused' or 'on'."""
    if waitlist is None:
        return ""
    return "paused" if waitlist.paused else "on"


# --- An Admin's settings -------------------------------------------------------------


def waitlist_configure(*, event_id: int, offer_seconds: int, paused: bool) -> Waitlist:
    """Turn on (or re-set) an event's waitlist; the gate follows after the commit.

    Paused, no offers are made and returned tickets go on general sale; unpaused, tickets
    already back in the gate's pool are offered at once.
    """
    if not Event.objects.filter(pk=event_id).exists():
        raise NotFoundError("No event with this id.")
    with transaction.atomic(durable=True):
        waitlist, _ = Waitlist.objects.update_or_create(
            event_id=event_id, defaults={"offer_seconds": offer_seconds, "paused": paused}
        )
    _gate_follows(event_id=event_id, state=_state(waitlist))
    if not paused:
        waitlist_offer_soon(event_id=event_id)
    return waitlist


def waitlist_remove(*, event_id: int) -> None:
    """Turn an event's waitlist off: its waiting entries leave, returned tickets go on
    sale. Offers already out stay the buyers' until they are taken or expire."""
    with transaction.atomic(durable=True):
        deleted, _ = Waitlist.objects.filter(event_id=event_id).delete()
        if not deleted:
            raise NoWaitlistError()
        WaitlistEntry.objects.filter(event_id=event_id, status=Status.WAITING).update(
            status=Status.LEFT, ended_at=_at(time.time())
        )
    _gate_follows(event_id=event_id, state="")


def _gate_follows(*, event_id: int, state: str) -> None:
    try:
        if waitlist_gate_read(event_id=event_id).remaining is None:
            gate_ensure(event_id=event_id)  # built from PostgreSQL: already in this state
        else:
            waitlist_gate_mode(event_id=event_id, state=state)
    except redis.RedisError:
        # PostgreSQL has the setting; reconciliation writes it to the gate.
        logger.warning("waitlist state not written to the gate", extra={"event_id": event_id})


# --- A buyer's join and leave --------------------------------------------------------


def waitlist_join(
    *, event_id: int, user_id: int, quantity: int, now: float | None = None
) -> tuple[WaitlistEntry, bool]:
    """Put the buyer on the event's waitlist for `quantity` tickets; return (entry, created).

    Joining again keeps the place (and, while waiting, sets the new quantity); an entry
    that expired or left joins again at the back. Needs the event sold out, and the
    buyer in its waiting room when it has one (the room's number is the place).
    """
    now = time.time() if now is None else now
    waitlist = Waitlist.objects.filter(event_id=event_id).select_related("event").first()
    if waitlist is None:
        if not Event.objects.filter(pk=event_id).exists():
            raise NotFoundError("No event with this id.")
        raise NoWaitlistError()
    entry = WaitlistEntry.objects.filter(event_id=event_id, user_id=user_id).first()
    if entry is not None and (entry.status in (Status.WAITING, Status.OFFERED) or _bought(entry)):
        if entry.status == Status.WAITING and entry.quantity != quantity:
            _check_limit(waitlist.event, user_id=user_id, quantity=quantity)
            entry.quantity = quantity
            entry.save(update_fields=["quantity", "updated_at"])
        return entry, False
    gate = _gate_read(event_id=event_id)
    if gate.remaining > 0:
        raise NotSoldOutError(extra={"tickets_available": gate.remaining})
    _check_limit(waitlist.event, user_id=user_id, quantity=quantity)
    fields = {
        "quantity": quantity,
        "status": Status.WAITING,
        "line_key": _line_key(event_id=event_id, user_id=user_id, now=now, rejoin=bool(entry)),
        "offered_quantity": None,
        "offered_at": None,
        "expires_at": None,
        "ended_at": None,
    }
    with transaction.atomic(durable=True):
        entry, created = WaitlistEntry.objects.update_or_create(
            event_id=event_id, user_id=user_id, defaults=fields
        )
    if gate.pool > 0 and gate.state == "on":
        waitlist_offer_soon(event_id=event_id)
    return entry, created


def _bought(entry: WaitlistEntry) -> bool:
    return entry.status != Status.WAITING and entry.orders.exists()


def _gate_read(*, event_id: int) -> WaitlistGate:
    try:
        gate = waitlist_gate_read(event_id=event_id)
        if gate.remaining is None:
            gate_ensure(event_id=event_id)
            gate = waitlist_gate_read(event_id=event_id)
    except redis.RedisError:
        raise GateUnavailableError() from None
    return gate


def _check_limit(event: Event, *, user_id: int, quantity: int) -> None:
    limit = event.max_tickets_per_user
    if not limit:
        return
    held = gate_held(event_id=event.pk, user_id=user_id)
    if held + quantity > limit:
        allowed = max(limit - held, 0)
        raise PurchaseLimitError(
            f"You can buy at most {allowed} more ticket(s) for this event.",
            extra={"tickets_allowed": allowed},
        )


def _line_key(*, event_id: int, user_id: int, now: float, rejoin: bool) -> int:
    """The entry's order in line: its waiting-room number when the event has a room (the
    waitlist continues the room's line), else (and for a second join) the time of joining
    in microseconds, which sorts after every room number."""
    late = int(now * 1_000_000)
    if not Event.objects.filter(pk=event_id, waiting_room__isnull=False).exists():
        return late
    room_entry = WaitingRoomEntry.objects.filter(event_id=event_id, user_id=user_id).first()
    if room_entry is None:
        raise WaitlistNeedsRoomError()
    if rejoin:
        return late
    if room_entry.number is not None:
        return room_entry.number
    ahead = WaitingRoomEntry.objects.filter(
        event_id=event_id, early=True, early_key__lt=room_entry.early_key
    ).count()
    return ahead + 1


def waitlist_leave(*, event_id: int, user_id: int) -> WaitlistEntry:
    """Take the buyer off the waitlist; an offer out passes to the next entry."""
    entry = WaitlistEntry.objects.filter(event_id=event_id, user_id=user_id).first()
    if entry is None:
        raise NotOnWaitlistError()
    if entry.status not in (Status.WAITING, Status.OFFERED) or _bought(entry):
        return entry
    offered = entry.status == Status.OFFERED
    with transaction.atomic(durable=True):
        WaitlistEntry.objects.filter(pk=entry.pk).update(
            status=Status.LEFT, ended_at=_at(time.time())
        )
    entry.refresh_from_db()
    if offered:
        _revoke(event_id=event_id, offers=[(user_id, entry.pk)])
    return entry


# --- Offers --------------------------------------------------------------------------


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
        expires = _at(now) + timedelta(seconds=waitlist.offer_seconds)
        for entry in chosen:
            entry.status, entry.offered_quantity = Status.OFFERED, entry.quantity
            entry.offered_at, entry.expires_at = _at(now), expires
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
        status=Status.OFFERED, expires_at__lte=_at(now), orders__isnull=True
    )
    by_event: dict[int, list[tuple[int, int]]] = {}
    with transaction.atomic(durable=True):
        rows = list(
            due.select_for_update(no_key=True, of=("self",)).values_list(
                "pk", "event_id", "user_id"
            )[:limit]
        )
        WaitlistEntry.objects.filter(pk__in=[pk for pk, _, _ in rows]).update(
            status=Status.EXPIRED, ended_at=_at(now)
        )
    for pk, event_id, user_id in rows:
        by_event.setdefault(event_id, []).append((user_id, pk))
    for event_id, offers in by_event.items():
        _revoke(event_id=event_id, offers=offers)
    return len(rows)


def _revoke(*, event_id: int, offers: list[tuple[int, int]]) -> None:
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
    except Exception:  # noqa: BLE001 - the broker's errors vary; beat's tick catches up
        logger.warning("offer round left to beat", extra={"event_id": event_id})


def waitlist_tick(*, now: float | None = None) -> dict[str, int]:
    """Beat's round: end expired offers, then offer every pool left over."""
    expired = waitlist_offers_expire(now=now)
    offered = 0
    for event_id in Waitlist.objects.filter(paused=False).values_list("event_id", flat=True):
        offered += waitlist_offer(event_id=event_id, now=now)
    return {"expired": expired, "offered": offered}
