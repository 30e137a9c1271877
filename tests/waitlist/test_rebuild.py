"""Offers are rows: a Redis loss or a reconciliation writes them back into the gate for
the same buyers, with the pool of returned tickets, and nothing is sold twice. With a
waiting room, the waitlist continues the room's line."""

from datetime import timedelta

import pytest
from django.utils import timezone

from core.gate.waitlist import waitlist_gate_offers
from core.models import WaitlistEntry
from core.services.gate import gate_reconcile_event
from core.services.waiting_room import waiting_room_configure
from core.services.waitlist_offers import waitlist_offer
from core.services.waitlists import waitlist_configure
from tests.invariants import assert_invariants, sold_figures
from tests.waitlist.conftest import buy, commit, join, me

pytestmark = pytest.mark.django_db


def cancel(client, order_id):
    assert client.post(f"/orders/{order_id}/cancel/").status_code == 200


def test_offers_survive_a_redis_loss_and_stay_their_buyers(sold_out, buyers, redis_db):
    event, orders = sold_out(total=3)
    users, (first, second, third) = buyers(3)
    for client in (first, second, third):
        join(client, event)
    cancel(*orders[0])
    cancel(*orders[1])
    waitlist_offer(event_id=event.pk)  # offers to first and second; third waits
    redis_db.flushdb()  # this test's own database: Redis restarted empty

    # The flood's purchase rebuilds the gate from PostgreSQL: still nothing for it.
    assert buy(third, event).json()["code"] == "sold_out_waitlist_open"
    assert set(waitlist_gate_offers(event_id=event.pk)) == {users[0].pk, users[1].pk}
    assert_invariants(event.pk)
    assert buy(first, event).status_code == 202
    assert buy(second, event).status_code == 202
    commit(event)
    figures = assert_invariants(event.pk, expect_sold_out=True)
    assert figures["confirmed_orders"] == 3
    assert me(third, event).json()["status"] == "waiting"


def test_returned_tickets_in_the_pool_survive_a_redis_loss(sold_out, buyers, redis_db):
    event, orders = sold_out(total=2)
    _, (client,) = buyers(1)
    join(client, event)
    cancel(*orders[0])  # in the pool: no offer round yet
    redis_db.flushdb()
    assert buy(client, event).json()["code"] == "sold_out_waitlist_open"  # rebuilt
    assert sold_figures(event.pk)["gate_remaining"] == 1  # in the pool, not on sale
    waitlist_offer(event_id=event.pk)
    assert me(client, event).json()["status"] == "offered"
    assert_invariants(event.pk)


def test_reconciliation_puts_back_an_offer_the_gate_lost(sold_out, buyers, redis_db):
    event, orders = sold_out(total=2)
    users, (client,) = buyers(1)
    join(client, event)
    cancel(*orders[0])
    waitlist_offer(event_id=event.pk)
    redis_db.delete(f"gate:{{ev:{event.pk}}}:offers")  # the gate lost the offer
    assert gate_reconcile_event(event_id=event.pk) == "fixed"
    entry = WaitlistEntry.objects.get(event=event, user=users[0])
    assert waitlist_gate_offers(event_id=event.pk) == {users[0].pk: (1, entry.pk)}
    assert gate_reconcile_event(event_id=event.pk) == "ok"
    assert_invariants(event.pk)


def test_with_a_waiting_room_the_waitlist_continues_the_room_s_line(make_event, buyers, settings):
    settings.WAITING_ROOM_MIN_CAPACITY = 10
    event = make_event(total_tickets=2, sale_starts_at=timezone.now() - timedelta(minutes=1))
    waiting_room_configure(event_id=event.pk, rate=None, admission_seconds=60, paused=False)
    waitlist_configure(event_id=event.pk, offer_seconds=600, paused=False)
    _, clients = buyers(5)
    for client in clients:
        assert client.post(f"/events/{event.pk}/waiting-room/join/").status_code == 201
    for client in clients[:2]:
        assert buy(client, event).status_code == 202
    commit(event)
    # Sold out: the room's later numbers join the waitlist in reverse order of arrival...
    late = clients[2:]
    for client in reversed(late):
        assert join(client, event).status_code == 201
    # ...and stand in the room's order.
    assert [me(c, event).json()["position"] for c in late] == [1, 2, 3]
    _, (stranger,) = buyers(1)
    response = join(stranger, event)
    assert response.status_code == 409
    assert response.json()["code"] == "not_in_waiting_room"


def test_offers_out_survive_a_redis_loss_after_the_waitlist_is_turned_off(
    sold_out, buyers, redis_db, admin_client
):
    event, orders = sold_out(total=2)
    users, (client,) = buyers(1)
    join(client, event)
    cancel(*orders[0])
    waitlist_offer(event_id=event.pk)
    assert admin_client.delete(f"/events/{event.pk}/waitlist/").status_code == 204
    redis_db.flushdb()
    assert buy(buyers(1)[1][0], event).json()["code"] == "sold_out"  # rebuilt, no waitlist
    assert set(waitlist_gate_offers(event_id=event.pk)) == {users[0].pk}
    assert buy(client, event).status_code == 202  # the offer is still theirs
    commit(event)
    assert_invariants(event.pk, expect_sold_out=True)
