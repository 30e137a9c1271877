"""The worker side: committing pending orders under the event-row lock."""

import pytest

from core.gate.keys import inflight_key
from core.gate.store import gate_held, gate_remaining
from core.models import Event, Order, Ticket
from core.redis_client import get_redis
from core.services.gate import gate_ensure
from core.services.orders import REJECT_REASON_STOCK, orders_commit
from tests.factories import pending_order

pytestmark = pytest.mark.django_db


def test_commit_confirms_pending_orders_and_writes_tickets(buyer, make_event):
    event = make_event(total_tickets=10)
    orders = [pending_order(user=buyer, event=event, quantity=2) for _ in range(3)]

    result = orders_commit(event_id=event.pk)

    assert result.confirmed == [o.pk for o in orders] and result.rejected == []
    event.refresh_from_db()
    assert event.tickets_sold == 6
    assert set(Order.objects.values_list("status", flat=True)) == {"confirmed"}
    assert sorted(Ticket.objects.values_list("order_id", "quantity")) == [(o.pk, 2) for o in orders]
    assert all(o.finalized_at for o in Order.objects.all())


def test_commit_rejects_what_postgres_cannot_cover_and_returns_it_to_the_gate(buyer, make_event):
    event = make_event(total_tickets=5)
    gate_ensure(event_id=event.pk)
    # The gate drifted (e.g. rebuilt while requests were in flight) and let too many in.
    first = pending_order(user=buyer, event=event, quantity=4)
    second = pending_order(user=buyer, event=event, quantity=3)
    get_redis().hset(f"gate:{{ev:{event.pk}}}", "remaining", 0)
    get_redis().hset(f"gate:{{ev:{event.pk}}}:buyers", buyer.pk, 7)

    result = orders_commit(event_id=event.pk)

    assert (result.confirmed, result.rejected) == ([first.pk], [second.pk])
    second.refresh_from_db()
    assert (second.status, second.reason) == ("rejected", REJECT_REASON_STOCK)
    assert Event.objects.get(pk=event.pk).tickets_sold == 4
    assert gate_remaining(event_id=event.pk) == 3
    assert gate_held(event_id=event.pk, user_id=buyer.pk) == 4


def test_commit_twice_changes_nothing_the_second_time(buyer, event):
    pending_order(user=buyer, event=event, quantity=2)
    orders_commit(event_id=event.pk)
    again = orders_commit(event_id=event.pk)
    assert again.processed == 0
    assert Event.objects.get(pk=event.pk).tickets_sold == 2
    assert Ticket.objects.count() == 1


def test_commit_takes_at_most_a_batch(buyer, event):
    for _ in range(5):
        pending_order(user=buyer, event=event)
    assert orders_commit(event_id=event.pk, limit=2).processed == 2
    assert Order.objects.filter(status="pending").count() == 3


def test_commit_is_a_no_op_for_a_final_order(buyer, event):
    order = pending_order(user=buyer, event=event)
    orders_commit(event_id=event.pk)
    order.refresh_from_db()
    assert order.status == "confirmed"
    orders_commit(event_id=event.pk)
    order.refresh_from_db()
    assert order.status == "confirmed"
    assert Event.objects.get(pk=event.pk).tickets_sold == 1


def test_commit_of_unknown_event_does_nothing(db):
    assert orders_commit(event_id=123456).processed == 0


def test_commit_leaves_no_operation_in_flight(buyer, event, redis_db):
    gate_ensure(event_id=event.pk)
    pending_order(user=buyer, event=event)
    orders_commit(event_id=event.pk)
    assert redis_db.zcard(inflight_key(event.pk)) == 0
