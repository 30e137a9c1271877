"""Shared set-ups of the waitlist's tests: a sold-out event with a waitlist, and helpers to
join, cancel and commit as buyers and workers do."""

import itertools
from datetime import timedelta

import pytest
from django.utils import timezone

from core.models import Order
from core.services.drain import drain_run
from core.services.waitlist_offers import waitlist_offer
from core.services.waitlists import waitlist_configure

_keys = itertools.count()


def buy(client, event, quantity=1, key=None):
    key = key or f"k{next(_keys)}"
    return client.post(
        f"/events/{event.pk}/purchase/",
        {"quantity": quantity},
        format="json",
        HTTP_IDEMPOTENCY_KEY=key,
    )


def commit(event):
    """Commit every pending order of the event, as its drain task would."""
    while Order.objects.filter(event_id=event.pk, status="pending").exists():
        drain_run(event_id=event.pk)


def join(client, event, quantity=1):
    return client.post(f"/events/{event.pk}/waitlist/join/", {"quantity": quantity}, format="json")


def me(client, event):
    return client.get(f"/events/{event.pk}/waitlist/me/")


@pytest.fixture
def buyers(client_for, make_user):
    def make(count):
        users = [make_user() for _ in range(count)]
        return users, [client_for(user) for user in users]

    return make


@pytest.fixture
def sold_out(make_event, buyers):
    """An event of `total` tickets with a waitlist, sold out to `holders` buyers (one
    confirmed order of `each` tickets apiece); returns (event, holders' orders)."""

    def make(*, total=4, each=1, offer_seconds=600):
        event = make_event(
            total_tickets=total, sale_starts_at=timezone.now() - timedelta(minutes=1)
        )
        waitlist_configure(event_id=event.pk, offer_seconds=offer_seconds, paused=False)
        _, clients = buyers(total // each)
        orders = []
        for client in clients:
            response = buy(client, event, each)
            assert response.status_code == 202, response.json()
            orders.append((client, response.json()["id"]))
        commit(event)
        return event, orders

    return make


@pytest.fixture
def offered(sold_out, buyers):
    """A sold-out event of 2 whose waitlist has 3 entries, the first of them offered the
    ticket a cancellation returned; `offered.clients` are the entries' buyers, in order."""
    event, orders = sold_out(total=2)
    _, clients = buyers(3)
    for client in clients:
        join(client, event)
    holder, order_id = orders[0]
    assert holder.post(f"/orders/{order_id}/cancel/").status_code == 200
    waitlist_offer(event_id=event.pk)
    event.clients = clients
    return event
