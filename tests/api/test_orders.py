"""Polling, listing and cancelling orders."""

from datetime import timedelta

import pytest
from django.utils import timezone

from core.gate.store import gate_held, gate_remaining
from core.models import Order, Ticket
from core.services.gate import gate_ensure
from tests.factories import confirmed_order, pending_order

pytestmark = pytest.mark.django_db


def test_owner_polls_a_pending_order_with_retry_after(buyer_client, buyer, event):
    order = pending_order(user=buyer, event=event)
    response = buyer_client.get(f"/orders/{order.pk}/")
    assert response.status_code == 200
    assert response.json()["status"] == "pending"
    assert response["Retry-After"] == "1"


def test_final_order_has_no_retry_after(buyer_client, buyer, event):
    order = confirmed_order(user=buyer, event=event)
    response = buyer_client.get(f"/orders/{order.pk}/")
    assert response.json()["status"] == "confirmed"
    assert "Retry-After" not in response


def test_another_users_order_is_not_found(client_for, make_user, buyer, event):
    order = pending_order(user=buyer, event=event)
    response = client_for(make_user()).get(f"/orders/{order.pk}/")
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


def test_admin_reads_any_order(admin_client, buyer, event):
    order = pending_order(user=buyer, event=event)
    assert admin_client.get(f"/orders/{order.pk}/").status_code == 200


def test_order_list_shows_only_own_orders_newest_first(buyer_client, buyer, make_user, event):
    mine = [pending_order(user=buyer, event=event) for _ in range(3)]
    pending_order(user=make_user(), event=event)
    body = buyer_client.get("/orders/").json()
    assert body["count"] == 3
    assert [o["id"] for o in body["results"]] == [o.pk for o in reversed(mine)]


def test_order_list_is_paginated(buyer_client, buyer, event):
    for _ in range(25):
        pending_order(user=buyer, event=event)
    body = buyer_client.get("/orders/?page_size=10&page=3").json()
    assert body["count"] == 25 and len(body["results"]) == 5 and body["next"] is None


def test_admin_lists_all_orders_filtered_by_event_and_status(admin_client, buyer, make_event):
    first, second = make_event(), make_event()
    pending_order(user=buyer, event=first)
    target = confirmed_order(user=buyer, event=second)
    pending_order(user=buyer, event=second)
    body = admin_client.get(f"/orders/?event={second.pk}&status=confirmed").json()
    assert [o["id"] for o in body["results"]] == [target.pk]
    assert admin_client.get("/orders/").json()["count"] == 3


@pytest.mark.parametrize("query", ["status=lost", "event=abc", "event=0", "page_size=1000"])
def test_order_list_rejects_bad_filters(admin_client, query):
    response = admin_client.get(f"/orders/?{query}")
    assert response.status_code == 400
    assert response.json()["code"] == "invalid"


def test_order_list_needs_authentication(anon):
    response = anon.get("/orders/")
    assert response.status_code == 401


def test_cancel_puts_tickets_back_on_sale(buyer_client, buyer, make_event):
    event = make_event(total_tickets=10)
    order = confirmed_order(user=buyer, event=event, quantity=3)
    gate_ensure(event_id=event.pk)
    assert gate_remaining(event_id=event.pk) == 7

    response = buyer_client.post(f"/orders/{order.pk}/cancel/")

    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"
    event.refresh_from_db()
    assert event.tickets_sold == 0
    assert not Ticket.objects.filter(order=order).exists()
    assert gate_remaining(event_id=event.pk) == 10
    assert gate_held(event_id=event.pk, user_id=buyer.pk) == 0


def test_cancelling_twice_changes_nothing_more(buyer_client, buyer, make_event):
    event = make_event(total_tickets=10)
    order = confirmed_order(user=buyer, event=event, quantity=3)
    gate_ensure(event_id=event.pk)
    buyer_client.post(f"/orders/{order.pk}/cancel/")
    again = buyer_client.post(f"/orders/{order.pk}/cancel/")
    assert again.status_code == 200 and again.json()["status"] == "cancelled"
    event.refresh_from_db()
    assert event.tickets_sold == 0
    assert gate_remaining(event_id=event.pk) == 10


def test_cancel_then_rebuy_respects_the_per_user_limit(buyer_client, buyer, make_event):
    event = make_event(total_tickets=10, max_tickets_per_user=3)
    order = confirmed_order(user=buyer, event=event, quantity=3)
    gate_ensure(event_id=event.pk)
    url = f"/events/{event.pk}/purchase/"
    assert buyer_client.post(url, {"quantity": 1}, format="json").json()["code"] == "limit_exceeded"
    buyer_client.post(f"/orders/{order.pk}/cancel/")
    assert buyer_client.post(url, {"quantity": 3}, format="json").status_code == 202
    assert buyer_client.post(url, {"quantity": 1}, format="json").json()["code"] == "limit_exceeded"


def test_pending_order_cannot_be_cancelled(buyer_client, buyer, event):
    order = pending_order(user=buyer, event=event)
    response = buyer_client.post(f"/orders/{order.pk}/cancel/")
    assert response.status_code == 409
    assert response.json()["code"] == "order_not_cancellable"
    assert Order.objects.get(pk=order.pk).status == "pending"


def test_order_of_a_past_event_cannot_be_cancelled(buyer_client, buyer, make_event):
    event = make_event(date=timezone.now() + timedelta(days=1))
    order = confirmed_order(user=buyer, event=event)
    type(event).objects.filter(pk=event.pk).update(date=timezone.now() - timedelta(hours=1))
    response = buyer_client.post(f"/orders/{order.pk}/cancel/")
    assert response.status_code == 409
    assert response.json()["code"] == "order_not_cancellable"


def test_another_user_cannot_cancel_my_order(client_for, make_user, buyer, event):
    order = confirmed_order(user=buyer, event=event)
    response = client_for(make_user()).post(f"/orders/{order.pk}/cancel/")
    assert response.status_code == 404
    assert Order.objects.get(pk=order.pk).status == "confirmed"


def test_admin_can_cancel_any_order(admin_client, buyer, event):
    order = confirmed_order(user=buyer, event=event)
    response = admin_client.post(f"/orders/{order.pk}/cancel/")
    assert response.status_code == 200 and response.json()["status"] == "cancelled"
