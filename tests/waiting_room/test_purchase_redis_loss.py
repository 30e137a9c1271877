"""Redis lost in the middle of a sale with a waiting room: the purchase's reserve call
answers 'missing', the gate's rebuild (gate_ensure) rebuilds the room with it from
PostgreSQL, and the sale goes on: the same numbers, nobody ahead of an earlier joiner,
the admitted still admitted, the sale sold out exactly."""

import time
from datetime import timedelta

import pytest
from django.utils import timezone

from core.models import Order
from core.services.orders import orders_commit
from core.services.waiting_room import waiting_room_configure
from core.services.waiting_room_persist import waiting_room_persist_all
from tests.invariants import assert_invariants

pytestmark = pytest.mark.django_db

TICKETS = 6


def me(client, event):
    return client.get(f"/events/{event.pk}/waiting-room/me/").json()


def buy(client, event):
    return client.post(f"/events/{event.pk}/purchase/", {"quantity": 1}, format="json")


def test_a_sale_with_a_room_survives_a_flushdb_and_sells_out_exactly(
    make_event, client_for, make_user, redis_db, settings
):
    settings.WAITING_ROOM_MIN_CAPACITY = 2
    opens = timezone.now() + timedelta(seconds=1.5)
    event = make_event(sale_starts_at=opens, total_tickets=TICKETS)
    waiting_room_configure(event_id=event.pk, rate=None, admission_seconds=60, paused=False)
    clients = [client_for(make_user()) for _ in range(10)]
    for client in clients[:6]:  # early: random places at the opening
        assert client.post(f"/events/{event.pk}/waiting-room/join/").status_code == 201
    time.sleep(max(0.0, opens.timestamp() - time.time()) + 0.1)
    for client in clients[6:]:  # later: in arrival order after them
        assert client.post(f"/events/{event.pk}/waiting-room/join/").status_code == 201
    number = {id(c): me(c, event)["number"] for c in clients}
    assert sorted(number.values()) == list(range(1, 11))
    assert [number[id(c)] for c in clients[6:]] == [7, 8, 9, 10]
    by_number = sorted(clients, key=lambda c: number[id(c)])

    assert buy(by_number[0], event).status_code == 202  # number 1 buys: 3 is let in
    assert me(by_number[2], event)["state"] == "admitted"
    waiting_room_persist_all()  # beat's last write before the loss
    redis_db.flushdb()

    assert buy(by_number[2], event).status_code == 202  # still admitted, after the rebuild
    after = {id(c): me(c, event) for c in clients}
    assert all(after[id(c)]["number"] == number[id(c)] for c in clients)
    assert after[id(by_number[1])]["state"] == "admitted"
    waiting = sorted(
        (s["number"], s["position"]) for s in after.values() if s["state"] == "waiting"
    )
    assert [p for _, p in waiting] == sorted(p for _, p in waiting)  # nobody ahead of earlier
    late = client_for(make_user())
    assert late.post(f"/events/{event.pk}/waiting-room/join/").json()["number"] == 11

    bought = {id(by_number[0]), id(by_number[2])}
    for _ in range(20):  # buyers buy when admitted, until sold out
        for client in by_number:
            if id(client) not in bought and me(client, event)["state"] == "admitted":
                assert buy(client, event).status_code == 202
                bought.add(id(client))
        if len(bought) == TICKETS:
            break
    assert {id(c) for c in by_number[:TICKETS]} == bought  # admitted in number order
    assert buy(by_number[-1], event).json()["code"] == "sold_out"
    orders_commit(event_id=event.pk)
    figures = assert_invariants(event.pk, expect_sold_out=True)
    assert figures["tickets_sold"] == TICKETS
    assert Order.objects.filter(event=event).count() == TICKETS
