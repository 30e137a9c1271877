"""The waitlist: once an event is sold out, tickets that come back go to the next buyer in
line who can take them, as an offer that holds them for a while, not to the fastest
refresher. This module has an Admin's settings and a buyer's join and leave;
core/services/waitlist_offers.py makes, ends and passes on the offers.

How the parts fit (one writer per fact):
- PostgreSQL holds the entries and the offers (`WaitlistEntry`): an offer is recorded
  there, in a durable transaction, before the gate holds it; `remaining` everywhere
  counts offers out (core/selectors/__init__.py: total - sold - pending - offered).
- The gate (core/gate/waitlist.lua) keeps returned tickets in its `pool` while the
  waitlist is on, and the offers' tickets in its offers hash, where only the offered
  buyer's purchase can take them (reserve.lua). The purchase is the usual one: one Lua
  call, one INSERT that names the offer's entry (which makes it bought), the same commit.
- The order of the line is `WaitlistEntry.line_key`: the waiting-room number when the
  event has a room (the waitlist continues the room's line), else the time of joining.
"""

from __future__ import annotations

import logging
import time

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
from core.gate.store import gate_held
from core.gate.waitlist import WaitlistGate, waitlist_gate_mode, waitlist_gate_read
from core.models import Event, WaitingRoomEntry, Waitlist, WaitlistEntry
from core.services.gate import gate_ensure
from core.services.waitlist_offers import at_epoch, waitlist_offer_soon, waitlist_offers_revoke

logger = logging.getLogger(__name__)

Status = WaitlistEntry.Status


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
            status=Status.LEFT, ended_at=at_epoch(time.time())
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


def waitlist_join(*, event_id: int, user_id: int, quantity: int, now: float | None = None) -> bool:
    """Put the buyer on the event's waitlist for `quantity` tickets; return True for a new
    entry (the caller reads the entry as the buyer sees it: `access_waitlist_entry`).

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
        return False
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
        _, created = WaitlistEntry.objects.update_or_create(
            event_id=event_id, user_id=user_id, defaults=fields
        )
    if gate.pool > 0 and gate.state == "on":
        waitlist_offer_soon(event_id=event_id)
    return created


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
        raise PurchaseLimitError.allowing(max(limit - held, 0))


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


def waitlist_leave(*, event_id: int, user_id: int) -> None:
    """Take the buyer off the waitlist; an offer out passes to the next entry. Leaving
    twice, or after the entry ended (an offer bought or expired), changes nothing."""
    entry = WaitlistEntry.objects.filter(event_id=event_id, user_id=user_id).first()
    if entry is None:
        raise NotOnWaitlistError()
    if _bought(entry):
        return
    with transaction.atomic(durable=True):
        # Guarded by the status read: an expiry that ended the offer meanwhile wins.
        left = (
            WaitlistEntry.objects.filter(pk=entry.pk, status=entry.status)
            .filter(status__in=(Status.WAITING, Status.OFFERED))
            .update(status=Status.LEFT, ended_at=at_epoch(time.time()))
        )
    if left and entry.status == Status.OFFERED:
        waitlist_offers_revoke(event_id=event_id, offers=[(user_id, entry.pk)])
