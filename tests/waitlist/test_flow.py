"""The waitlist end to end over HTTP: join once sold out, a cancellation's tickets offered
to the first entry that fits, bought through the usual purchase, expiry passing the offer
on; every step leaves Redis and PostgreSQL agreeing."""

import time

import pytest

from core.models import Order, WaitlistEntry
from core.services.waitlist_offers import waitlist_offer, waitlist_offers_expire
from tests.invariants import assert_invariants, sold_figures
from tests.waitlist.conftest import buy, commit, join, me

pytestmark = pytest.mark.django_db


def cancel(client, order_id):
    response = client.post(f"/orders/{order_id}/cancel/")
    assert response.status_code == 200, response.json()


def test_a_sold_out_event_with_a_waitlist_refuses_with_a_code_that_says_join(sold_out, buyers):
    event, _ = sold_out()
    _, (late,) = buyers(1)
    response = buy(late, event)
    assert response.status_code == 409
    assert response.json()["code"] == "sold_out_waitlist_open"
    assert "waitlist" in response.json()["message"]


def test_a_sold_out_event_without_a_waitlist_still_says_sold_out(make_event, buyers):
    event = make_event(total_tickets=1)
    _, (first, second) = buyers(2)
    assert buy(first, event).status_code == 202
    response = buy(second, event)
    assert response.json()["code"] == "sold_out"


def test_joining_before_the_sell_out_is_refused_and_changes_nothing(make_event, buyers):
    event = make_event(total_tickets=5)
    from core.services.waitlists import waitlist_configure

    waitlist_configure(event_id=event.pk, offer_seconds=600, paused=False)
    _, (client,) = buyers(1)
    response = join(client, event)
    assert response.status_code == 409
    assert response.json()["code"] == "not_sold_out"
    assert response.json()["tickets_available"] == 5
    assert not WaitlistEntry.objects.exists()


def test_joining_an_event_without_a_waitlist_is_404_no_waitlist(event, buyer_client):
    response = join(buyer_client, event)
    assert response.status_code == 404
    assert response.json()["code"] == "no_waitlist"


@pytest.mark.parametrize("quantity", [0, -1, "two", None])
def test_a_bad_quantity_is_a_400_and_changes_nothing(sold_out, buyers, quantity):
    event, _ = sold_out()
    _, (client,) = buyers(1)
    response = join(client, event, quantity)
    assert response.status_code == 400
    assert not WaitlistEntry.objects.exists()


def test_joining_twice_keeps_the_place_and_sets_the_new_quantity(sold_out, buyers):
    event, _ = sold_out()
    _, clients = buyers(3)
    for client in clients:
        assert join(client, event, 2).status_code == 201
    again = join(clients[1], event, 1)
    assert again.status_code == 200
    assert again.json()["position"] == 2
    assert again.json()["quantity"] == 1
    assert [me(c, event).json()["position"] for c in clients] == [1, 2, 3]


def test_a_cancellation_is_offered_to_the_head_and_bought_through_the_purchase(sold_out, buyers):
    event, orders = sold_out(total=2)
    _, (first, second) = buyers(2)
    join(first, event)
    join(second, event)
    cancel(*orders[0])
    # The returned ticket waits in the pool: the sold-out flood cannot take it.
    assert buy(second, event).json()["code"] == "sold_out_waitlist_open"
    assert waitlist_offer(event_id=event.pk) == 1
    offered = me(first, event)
    assert offered.json()["status"] == "offered"
    assert offered.json()["offer_quantity"] == 1
    assert 590 <= offered.json()["expires_in"] <= 600
    assert offered.headers["Retry-After"]
    assert me(second, event).json()["position"] == 1
    assert_invariants(event.pk)  # the offer is held in both stores
    # Nobody else can take the held ticket.
    assert buy(second, event).json()["code"] == "sold_out_waitlist_open"
    response = buy(first, event)
    assert response.status_code == 202, response.json()
    assert Order.objects.get(pk=response.json()["id"]).waitlist_entry_id is not None
    commit(event)
    bought = me(first, event).json()
    assert bought["status"] == "bought"
    assert bought["order_id"] == response.json()["id"]
    figures = assert_invariants(event.pk)
    assert figures["tickets_sold"] == 2


def test_a_return_smaller_than_the_head_goes_to_the_first_entry_that_fits(sold_out, buyers):
    event, orders = sold_out(total=4)
    users, (big, small) = buyers(2)
    join(big, event, 2)
    join(small, event, 1)
    cancel(*orders[0])
    assert waitlist_offer(event_id=event.pk) == 1
    assert me(big, event).json()["status"] == "waiting"
    assert me(big, event).json()["position"] == 1
    assert me(small, event).json()["status"] == "offered"
    # The next return that fits the head goes to it.
    cancel(*orders[1])
    cancel(*orders[2])
    waitlist_offer(event_id=event.pk)
    assert me(big, event).json()["status"] == "offered"
    assert me(big, event).json()["offer_quantity"] == 2
    assert_invariants(event.pk)


def test_an_offer_that_expires_passes_to_the_next_entry(sold_out, buyers):
    event, orders = sold_out(total=1, offer_seconds=10)
    _, (first, second) = buyers(2)
    join(first, event)
    join(second, event)
    cancel(*orders[0])
    waitlist_offer(event_id=event.pk)
    assert waitlist_offers_expire(now=time.time() + 11) == 1
    assert me(first, event).json()["status"] == "expired"
    assert me(second, event).json()["status"] == "offered"
    assert buy(first, event).json()["code"] == "sold_out_waitlist_open"
    assert buy(second, event).status_code == 202
    commit(event)
    assert_invariants(event.pk, expect_sold_out=True)


def test_leaving_with_an_offer_passes_it_on(sold_out, buyers):
    event, orders = sold_out(total=1)
    _, (first, second) = buyers(2)
    join(first, event)
    join(second, event)
    cancel(*orders[0])
    waitlist_offer(event_id=event.pk)
    left = first.delete(f"/events/{event.pk}/waitlist/me/")
    assert left.status_code == 200
    assert left.json()["status"] == "left"
    assert me(second, event).json()["status"] == "offered"
    assert_invariants(event.pk)


def test_a_purchase_above_the_offer_is_refused_and_keeps_it(sold_out, buyers):
    event, orders = sold_out(total=2)
    _, (client,) = buyers(1)
    join(client, event, 1)
    cancel(*orders[0])
    waitlist_offer(event_id=event.pk)
    response = buy(client, event, 2)
    assert response.status_code == 409
    assert response.json()["code"] == "offer_quantity_exceeded"
    assert response.json()["tickets_offered"] == 1
    assert me(client, event).json()["status"] == "offered"
    assert_invariants(event.pk)


def test_returns_with_nobody_waiting_go_back_on_sale(sold_out, buyers):
    event, orders = sold_out(total=2)
    cancel(*orders[0])
    assert sold_figures(event.pk)["gate_remaining"] == 1
    waitlist_offer(event_id=event.pk)
    _, (client,) = buyers(1)
    assert buy(client, event).status_code == 202
    commit(event)
    assert_invariants(event.pk, expect_sold_out=True)


def test_the_admin_sees_the_list_and_can_pause_it(sold_out, buyers, admin_client):
    event, orders = sold_out(total=2)
    _, clients = buyers(3)
    for client in clients:
        join(client, event)
    response = admin_client.put(
        f"/events/{event.pk}/waitlist/", {"offer_seconds": 300, "paused": True}, format="json"
    )
    assert response.status_code == 200
    cancel(*orders[0])
    assert waitlist_offer(event_id=event.pk) == 0  # paused: the return went on sale
    assert sold_figures(event.pk)["gate_remaining"] == 1
    admin_client.put(f"/events/{event.pk}/waitlist/", {"offer_seconds": 300}, format="json")
    cancel(*orders[1])
    waitlist_offer(event_id=event.pk)
    figures = admin_client.get(f"/events/{event.pk}/waitlist/").json()
    assert figures == {
        "event_id": event.pk,
        "offer_seconds": 300,
        "paused": False,
        "waiting": 2,
        "offers_out": 1,
        "offers_taken": 0,
        "offers_expired": 0,
    }
    assert_invariants(event.pk)
