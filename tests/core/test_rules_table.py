"""One table of purchase rules, decided twice: by the gate (reserve.lua, at the request)
and by the commit (`commit_decide`, in PostgreSQL's figures, when the gate may have been
lost and rebuilt). Each case runs through both and must come out as the table says.

They agree on stock and the per-user limit. The sale window and the waiting room's
admission are the gate's alone, on purpose: an order accepted inside the window, by a
buyer admitted at that moment, is honoured however late its commit runs
(core/services/orders.py), so the commit confirms what a closed window, a buyer not
admitted or an expired admission would refuse.
"""

import time
from dataclasses import dataclass
from datetime import timedelta

import pytest
from django.db import IntegrityError
from django.utils import timezone

from core.gate.reserve import GateStatus, PurchaseAsk, gate_reserve
from core.gate.store import gate_remaining
from core.models import Order
from core.services.gate import gate_ensure
from core.services.orders import (
    REJECT_REASON_LIMIT,
    REJECT_REASON_STOCK,
    order_insert_pending,
    orders_commit,
)
from core.services.waiting_room import waiting_room_configure, waiting_room_join
from tests.factories import confirmed_order

pytestmark = pytest.mark.django_db

CONFIRMED = ""
# What the commit decides for each refusal of the gate that both sides check.
SAME_RULE = {
    GateStatus.OK: CONFIRMED,
    GateStatus.SOLD_OUT: REJECT_REASON_STOCK,
    GateStatus.INSUFFICIENT: REJECT_REASON_STOCK,
    GateStatus.LIMIT: REJECT_REASON_LIMIT,
}
# The gate's alone (module docstring): the commit confirms.
GATE_ALONE = {
    GateStatus.SALE_NOT_OPEN,
    GateStatus.NOT_JOINED,
    GateStatus.NOT_ADMITTED,
    GateStatus.ADMISSION_EXPIRED,
}


@dataclass(frozen=True)
class Case:
    name: str
    gate: GateStatus  # what reserve.lua answers
    commit: str  # the reason commit_decide gives ('' = confirmed)
    quantity: int = 1
    total: int = 10
    sold_to_others: int = 0
    held_by_buyer: int = 0  # confirmed tickets the buyer holds already
    limit: int | None = None
    window: str = "open"  # or "not_yet" or "closed"
    room: str = ""  # a waiting room (one admitted at a time) and the buyer in it:
    # "not_joined", "waiting" (another joined first), "admitted", "expired"


TABLE = [
    Case("stock enough", GateStatus.OK, CONFIRMED, quantity=2),
    Case(
        "too few left",
        GateStatus.INSUFFICIENT,
        REJECT_REASON_STOCK,
        quantity=3,
        total=4,
        sold_to_others=2,
    ),  # fmt: skip
    Case("sold out", GateStatus.SOLD_OUT, REJECT_REASON_STOCK, total=3, sold_to_others=3),
    Case(
        "exactly the last tickets", GateStatus.OK, CONFIRMED, quantity=2, total=5, sold_to_others=3
    ),  # fmt: skip
    Case(
        "over the per-user limit",
        GateStatus.LIMIT,
        REJECT_REASON_LIMIT,
        quantity=2,
        held_by_buyer=3,
        limit=4,
    ),  # fmt: skip
    Case(
        "up to the per-user limit", GateStatus.OK, CONFIRMED, quantity=1, held_by_buyer=3, limit=4
    ),  # fmt: skip
    # The sale window: the gate's alone (module docstring).
    Case("sale not open yet", GateStatus.SALE_NOT_OPEN, CONFIRMED, window="not_yet"),
    Case("sale closed", GateStatus.SALE_NOT_OPEN, CONFIRMED, window="closed"),
    # The waiting room's admission: the gate's alone (module docstring).
    Case("room: never joined", GateStatus.NOT_JOINED, CONFIRMED, room="not_joined"),
    Case("room: not admitted yet", GateStatus.NOT_ADMITTED, CONFIRMED, room="waiting"),
    Case("room: admitted", GateStatus.OK, CONFIRMED, room="admitted"),
    Case("room: admission expired", GateStatus.ADMISSION_EXPIRED, CONFIRMED, room="expired"),
]

ADMISSION_SECONDS = 60


def _room(event, buyer, other, case: Case) -> float:
    """Put the buyer in the event's room as `case.room` says; return the reserve's now."""
    now = time.time()
    if not case.room:
        return now
    waiting_room_configure(
        event_id=event.pk, rate=None, admission_seconds=ADMISSION_SECONDS, paused=False, now=now
    )
    if case.room == "waiting":
        waiting_room_join(event_id=event.pk, user_id=other.pk, rate=None, now=now)
    if case.room != "not_joined":
        waiting_room_join(event_id=event.pk, user_id=buyer.pk, rate=None, now=now)
    return now + ADMISSION_SECONDS + 1 if case.room == "expired" else now


def _event(make_event, buyer, other, case: Case):
    now = timezone.now()
    event = make_event(
        total_tickets=case.total,
        max_tickets_per_user=case.limit,
        sale_starts_at=now + timedelta(days=1) if case.window == "not_yet" else None,
        sale_ends_at=now - timedelta(minutes=1) if case.window == "closed" else None,
    )
    if case.sold_to_others:
        confirmed_order(user=other, event=event, quantity=case.sold_to_others)
    if case.held_by_buyer:
        confirmed_order(user=buyer, event=event, quantity=case.held_by_buyer)
    return event


@pytest.mark.parametrize("case", TABLE, ids=[case.name for case in TABLE])
def test_the_gate_and_the_commit_decide_each_case_as_the_table_says(
    case, make_event, make_user, settings
):
    settings.WAITING_ROOM_MIN_CAPACITY = 1
    buyer, other = make_user(), make_user()
    event = _event(make_event, buyer, other, case)
    gate_ensure(event_id=event.pk)
    now = _room(event, buyer, other, case)

    reply = gate_reserve(PurchaseAsk(buyer.pk, event.pk, case.quantity), now=now)
    order = order_insert_pending(
        user_id=buyer.pk, event_id=event.pk, quantity=case.quantity, idempotency_key=None
    )
    orders_commit(event_id=event.pk)
    order.refresh_from_db()

    assert reply.status == case.gate
    assert (order.status, order.reason) == (
        ("rejected", case.commit) if case.commit else ("confirmed", "")
    )
    if case.gate in SAME_RULE:
        assert SAME_RULE[case.gate] == case.commit
    else:
        assert case.gate in GATE_ALONE and case.commit == CONFIRMED


def test_a_replayed_idempotency_key_buys_once_at_the_gate_and_in_the_commit(make_event, buyer):
    event = make_event(total_tickets=10)
    gate_ensure(event_id=event.pk)
    ask = PurchaseAsk(buyer.pk, event.pk, 2, idempotency_key="k")

    first, again = gate_reserve(ask), gate_reserve(PurchaseAsk(buyer.pk, event.pk, 2, "k"))
    assert (first.status, again.status) == (GateStatus.OK, GateStatus.REPLAY)
    assert again.replay.fingerprint == ask.fingerprint
    assert gate_remaining(event_id=event.pk) == 8  # reserved once

    order_insert_pending(user_id=buyer.pk, event_id=event.pk, quantity=2, idempotency_key="k")
    with pytest.raises(IntegrityError):
        order_insert_pending(user_id=buyer.pk, event_id=event.pk, quantity=2, idempotency_key="k")
    result = orders_commit(event_id=event.pk)
    assert len(result.confirmed) == 1 and result.rejected == []
    event.refresh_from_db()
    assert event.tickets_sold == 2 and Order.objects.filter(event=event).count() == 1
