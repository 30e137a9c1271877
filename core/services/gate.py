"""Keeping the Redis gate in step with PostgreSQL: lazy rebuild and reconciliation."""

import logging
import time

from core.gate.store import gate_load, gate_observe
from core.models import Event
from core.selectors import event_gate_snapshot, events_on_sale
from core.services.waiting_room_rebuild import waiting_room_rebuild

logger = logging.getLogger(__name__)


def gate_ensure(*, event_id: int, now: float | None = None) -> bool:
    """Build an event's gate and its waiting room ({on = 0} without one) from PostgreSQL
    where Redis lacks them; return False if no event.

    The reserve script reads both, so it answers 'missing' when either is gone: both are
    rebuilt together. Safe to call from many processes at once: the first write wins and
    later ones see the gate and the room present and change nothing.
    """
    event = Event.objects.filter(pk=event_id).first()
    if event is None:
        return False
    gate_load(event_id=event_id, snapshot=event_gate_snapshot(event=event))
    waiting_room_rebuild(event_id=event_id, now=time.time() if now is None else now)
    return True


def gate_reconcile_event(*, event_id: int) -> str:
    """Correct an event's gate to PostgreSQL's figures; return 'ok', 'fixed', 'busy' or 'built'.

    The gate is read before PostgreSQL; the correction is written only if no purchase,
    release or change touched the gate in between and none was in flight, so it can run
    during a sale without ever undoing a reservation.
    """
    seen = gate_observe(event_id=event_id)
    if seen.live:
        return "busy"
    event = Event.objects.filter(pk=event_id).first()
    if event is None:
        return "ok"
    snapshot = event_gate_snapshot(event=event)
    if seen.seq is None:
        gate_load(event_id=event_id, snapshot=snapshot)
        return "built"
    if not gate_load(event_id=event_id, snapshot=snapshot, expected_seq=seen.seq):
        return "busy"
    if seen.free != snapshot.free or seen.offers != tuple(sorted(snapshot.offers)):
        logger.warning(
            "gate corrected",
            extra={
                "event_id": event_id,
                "gate": seen.free,
                "database": snapshot.free,
                "offers_gate": len(seen.offers),
                "offers_database": len(snapshot.offers),
            },
        )
        return "fixed"
    return "ok"


def gate_reconcile_all() -> dict[str, int]:
    """Reconcile the gate of every event still on sale; count the outcomes."""
    outcomes: dict[str, int] = {}
    for event_id in events_on_sale().values_list("pk", flat=True):
        outcome = gate_reconcile_event(event_id=event_id)
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    return outcomes
