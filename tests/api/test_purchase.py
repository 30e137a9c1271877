"""POST /events/<id>/purchase/: the gate's answers, validation and idempotency."""

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from core.gate.reserve import PurchaseAsk, gate_reserve
from core.gate.store import gate_held, gate_remaining
from core.models import Order
from core.services.gate import gate_ensure

pytestmark = pytest.mark.django_db


def buy(client, event_id, quantity=1, key=None, **extra):
    headers = {"HTTP_IDEMPOTENCY_KEY": key} if key else {}
    return client.post(
        f"/events/{event_id}/purchase/", {"quantity": quantity}, format="json", **headers, **extra
    )


def test_purchase_is_accepted_with_a_pending_order_to_poll(buyer_client, buyer, event):
    response = buy(buyer_client, event.pk, 2)

    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "pending"
    assert body["event"] == event.pk and body["quantity"] == 2
    assert {"id", "created_at"} <= body.keys()
    assert response["Location"] == f"/orders/{body['id']}/"
    assert int(response["Retry-After"]) >= 1
    order = Order.objects.get(pk=body["id"])
    assert (order.user_id, order.status) == (buyer.pk, "pending")
    assert gate_remaining(event_id=event.pk) == 98
    assert gate_held(event_id=event.pk, user_id=buyer.pk) == 2


def test_purchase_queues_one_drain_for_many_orders(buyer_client, event, redis_db):
    for _ in range(5):
        assert buy(buyer_client, event.pk).status_code == 202
    # One coalesced drain task per event, not one message per order.
    assert redis_db.llen("purchases") == 1


def test_accepted_purchase_runs_one_insert(buyer_client, event):
    gate_ensure(event_id=event.pk)
    with CaptureQueriesContext(connection) as captured:
        assert buy(buyer_client, event.pk).status_code == 202
    statements = [q["sql"] for q in captured.captured_queries if "SAVEPOINT" not in q["sql"]]
    assert len(statements) == 1 and statements[0].startswith("INSERT INTO")


@pytest.mark.parametrize(
    "setup, quantity, code",
    [
        (dict(total_tickets=3, tickets_sold=3), 1, "sold_out"),
        (dict(total_tickets=3), 4, "insufficient_tickets"),
        (dict(max_tickets_per_user=2), 3, "limit_exceeded"),
        (dict(sale_starts_at=timezone.now() + timedelta(hours=1)), 1, "sale_not_open"),
        (dict(sale_ends_at=timezone.now() - timedelta(hours=1)), 1, "sale_not_open"),
        (dict(date=timezone.now() - timedelta(hours=1)), 1, "sale_not_open"),
    ],
)
def test_refused_purchase_touches_neither_database_nor_queue(
    buyer_client, make_event, redis_db, django_assert_num_queries, setup, quantity, code
):
    event = make_event(**setup)
    gate_ensure(event_id=event.pk)
    before = gate_remaining(event_id=event.pk)

    with django_assert_num_queries(0):
        response = buy(buyer_client, event.pk, quantity)

    assert response.status_code == 409
    assert response.json()["code"] == code
    assert gate_remaining(event_id=event.pk) == before
    assert redis_db.llen("purchases") == 0
    assert not Order.objects.exists()


def test_insufficient_tickets_says_how_many_are_left(buyer_client, make_event):
    event = make_event(total_tickets=3)
    body = buy(buyer_client, event.pk, 5).json()
    assert body["code"] == "insufficient_tickets"
    assert body["tickets_available"] == 3


def test_per_user_limit_counts_earlier_purchases(buyer_client, make_event):
    event = make_event(max_tickets_per_user=4)
    assert buy(buyer_client, event.pk, 3).status_code == 202
    response = buy(buyer_client, event.pk, 2)
    assert response.status_code == 409
    assert response.json() | {"tickets_allowed": 1} == response.json()


@pytest.mark.parametrize("quantity", [0, -1, 11, 10**30, "2", 2.5, True, None, [1], {"n": 1}])
def test_purchase_rejects_bad_quantity_and_changes_nothing(buyer_client, event, quantity):
    gate_ensure(event_id=event.pk)
    response = buy(buyer_client, event.pk, quantity)
    assert response.status_code == 400
    assert response.json()["code"] == "invalid"
    assert "quantity" in response.json()["errors"]
    assert gate_remaining(event_id=event.pk) == 100
    assert not Order.objects.exists()


def test_purchase_without_quantity_is_rejected(buyer_client, event):
    response = buyer_client.post(f"/events/{event.pk}/purchase/", {}, format="json")
    assert response.status_code == 400
    assert response.json()["errors"]["quantity"]


def test_purchase_of_unknown_event_is_not_found(buyer_client, redis_db):
    response = buy(buyer_client, 999999)
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"
    assert not list(redis_db.scan_iter("gate:*"))


def test_admin_cannot_buy(admin_client, event):
    response = buy(admin_client, event.pk)
    assert response.status_code == 403
    assert response.json()["code"] == "permission_denied"


def test_anonymous_cannot_buy(anon, event):
    response = buy(anon, event.pk)
    assert response.status_code == 401
    assert response.json()["code"] == "not_authenticated"


def test_same_idempotency_key_returns_the_same_order(buyer_client, event):
    first = buy(buyer_client, event.pk, 2, key="abc-123")
    again = buy(buyer_client, event.pk, 2, key="abc-123")

    assert first.status_code == again.status_code == 202
    assert again.json()["id"] == first.json()["id"]
    assert again["Idempotent-Replayed"] == "true"
    assert Order.objects.count() == 1
    assert gate_remaining(event_id=event.pk) == 98


def test_same_idempotency_key_with_another_body_is_refused(buyer_client, event):
    buy(buyer_client, event.pk, 2, key="abc-123")
    response = buy(buyer_client, event.pk, 3, key="abc-123")
    assert response.status_code == 422
    assert response.json()["code"] == "idempotency_key_reused"
    assert gate_remaining(event_id=event.pk) == 98


def test_same_idempotency_key_on_another_event_is_refused(buyer_client, make_event):
    first, second = make_event(), make_event()
    buy(buyer_client, first.pk, 1, key="k")
    response = buy(buyer_client, second.pk, 1, key="k")
    assert response.status_code == 422
    assert response.json()["code"] == "idempotency_key_reused"
    assert gate_remaining(event_id=second.pk) == 100


def test_idempotency_key_of_another_user_is_independent(client_for, make_user, event):
    one, two = client_for(make_user()), client_for(make_user())
    assert (
        buy(one, event.pk, 1, key="same").json()["id"]
        != buy(two, event.pk, 1, key="same").json()["id"]
    )


def test_replay_still_works_after_redis_lost_its_record(buyer_client, event, redis_db):
    first = buy(buyer_client, event.pk, 2, key="k1").json()
    redis_db.flushdb()  # the gate and idempotency records are gone

    again = buy(buyer_client, event.pk, 2, key="k1")

    assert again.status_code == 202
    assert again.json()["id"] == first["id"]
    assert Order.objects.count() == 1
    assert gate_remaining(event_id=event.pk) == 98  # rebuilt from PostgreSQL


def test_request_in_progress_with_the_same_key_asks_to_retry(buyer_client, buyer, event):
    gate_ensure(event_id=event.pk)
    # Another process has reserved under this key and not yet recorded its order.
    gate_reserve(PurchaseAsk(buyer.pk, event.pk, 1, idempotency_key="k", operation_id="buy:other"))
    response = buy(buyer_client, event.pk, 1, key="k")
    assert response.status_code == 409
    assert response.json()["code"] == "request_in_progress"
    assert response["Retry-After"] == "1"


@pytest.mark.parametrize("key", ["x" * 129, "bad\nkey"])
def test_malformed_idempotency_key_is_rejected(buyer_client, event, key):
    response = buy(buyer_client, event.pk, 1, key=key)
    assert response.status_code == 400
    assert "Idempotency-Key" in response.json()["errors"]


def test_gate_lost_is_rebuilt_from_postgres_counting_pending_orders(
    buyer_client, make_event, redis_db
):
    event = make_event(total_tickets=10)
    assert buy(buyer_client, event.pk, 4).status_code == 202
    redis_db.flushdb()
    response = buy(buyer_client, event.pk, 7)
    assert response.status_code == 409
    assert response.json()["tickets_available"] == 6
