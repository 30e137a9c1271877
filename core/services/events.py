"""Writes to events, keeping the gate's stock and sale window in step."""

import logging
import time
from typing import Any

import redis
from django.db import transaction

from core.cards import event_card_drop
from core.exceptions import (
    ConflictError,
    EventHasSalesError,
    GateUnavailableError,
    NotFoundError,
    TotalBelowCommittedError,
)
from core.gate.keys import new_operation_id
from core.gate.store import gate_forget, gate_load, gate_operation_begin, gate_operation_end
from core.models import Event, Order
from core.selectors import event_gate_snapshot, event_remaining, event_sale_window
from core.waiting_room import room_load

logger = logging.getLogger(__name__)

EDITABLE_FIELDS = {
    "name",
    "description",
    "venue",
    "date",
    "total_tickets",
    "sale_starts_at",
    "sale_ends_at",
    "max_tickets_per_user",
}


def event_create(**fields: Any) -> Event:
    """Create an event and open its gate, without a waiting room (both lazily rebuilt
    later if Redis is down)."""
    event = Event.objects.create(**{k: v for k, v in fields.items() if k in EDITABLE_FIELDS})
    try:
        gate_load(event_id=event.pk, snapshot=event_gate_snapshot(event=event))
        room_load(event_id=event.pk, now=time.time(), fields={"on": 0})
    except redis.RedisError:
        logger.warning("gate not built at creation", extra={"event_id": event.pk})
    return event


# Attempts before a total that keeps moving under us is reported as a conflict.
UPDATE_ATTEMPTS = 3


class _TotalChangedError(Exception):
    """total_tickets moved between our read and our lock: the gate step used stale figures."""


def event_update(*, event_id: int, data: dict[str, Any]) -> Event:
    """Apply `data` to an event; total_tickets may not drop below sold + reserved.

    A decrease is first taken out of the gate (so no purchase can take those tickets
    meanwhile), then checked against PostgreSQL under the event-row lock; an increase
    reaches the gate only after PostgreSQL has committed it. If another change moved the
    total in between, the gate step is undone and the update starts again.
    """
    data = {k: v for k, v in data.items() if k in EDITABLE_FIELDS}
    for _ in range(UPDATE_ATTEMPTS):
        try:
            return _event_update_once(event_id=event_id, data=data)
        except _TotalChangedError:
            continue
    raise ConflictError("The event is being changed concurrently; retry.")


def _event_update_once(*, event_id: int, data: dict[str, Any]) -> Event:
    current = Event.objects.filter(pk=event_id).values_list("total_tickets", flat=True).first()
    if current is None:
        raise NotFoundError("No event with this id.")
    delta = data.get("total_tickets", current) - current
    operation_id = new_operation_id("event")
    try:
        answer = gate_operation_begin(event_id=event_id, operation_id=operation_id, delta=delta)
    except redis.RedisError:
        raise GateUnavailableError() from None
    if answer.status == "insufficient":
        gate_operation_end(event_id=event_id, operation_id=operation_id)
        raise TotalBelowCommittedError(extra={"tickets_available": answer.remaining})
    taken = min(delta, 0) if answer.status == "ok" else 0
    try:
        event = _event_update_locked(event_id=event_id, data=data, expected_total=current)
    except BaseException:
        gate_operation_end(event_id=event_id, operation_id=operation_id, delta=-taken)
        raise
    gate_operation_end(
        event_id=event_id,
        operation_id=operation_id,
        delta=max(delta, 0),
        window=event_sale_window(event=event),
    )
    event_card_drop(event_id=event_id)
    return event


def _event_update_locked(*, event_id: int, data: dict[str, Any], expected_total: int) -> Event:
    with transaction.atomic():
        # NO KEY: purchases' foreign-key checks on this row need not wait for us.
        event = Event.objects.select_for_update(no_key=True).filter(pk=event_id).first()
        if event is None:
            raise NotFoundError("No event with this id.")
        if event.total_tickets != expected_total:
            raise _TotalChangedError()
        for field, value in data.items():
            setattr(event, field, value)
        remaining = event_remaining(event=event)  # with the new total
        if remaining < 0:
            minimum = event.total_tickets - remaining  # tickets sold or reserved
            raise TotalBelowCommittedError(
                f"total_tickets cannot drop below {minimum} (tickets sold or reserved).",
                extra={"minimum": minimum},
            )
        event.save()
    return event


def event_delete(*, event_id: int) -> None:
    """Delete an event that has never sold a ticket and has no pending order."""
    with transaction.atomic():
        event = Event.objects.select_for_update(no_key=False).filter(pk=event_id).first()
        if event is None:
            raise NotFoundError("No event with this id.")
        live = event.orders.filter(
            status__in=[Order.Status.PENDING, Order.Status.CONFIRMED]
        ).exists()
        if event.tickets_sold or live:
            raise EventHasSalesError(
                "This event has sold tickets or pending orders and cannot be deleted."
            )
        event.orders.all().delete()
        event.delete()
    try:
        gate_forget(event_id=event_id)
        event_card_drop(event_id=event_id)
    except redis.RedisError:
        logger.warning("gate not dropped after delete", extra={"event_id": event_id})
