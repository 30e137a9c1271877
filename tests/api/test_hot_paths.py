"""The lean hot endpoints: what they answer from Redis, and what each request costs.

Redis round trips are counted like SQL queries: the number per request is part of the
contract of a hot path (one for a refusal, two for an accept, one for a final order's
poll or an event read answered from its card, two for a pending order's poll: its card,
then its event's line).
"""

import json
from contextlib import contextmanager

import pytest
import redis
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.renderers import JSONRenderer

from api.serializers import EventOutputSerializer, OrderOutputSerializer
from core import cards
from core.models import Order
from core.services.cancellations import order_cancel
from core.services.orders import orders_commit

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def revocations_cached(settings):
    """As in production: a user's revocation record is read at most once a second."""
    settings.AUTH_REVOCATION_CACHE_SECONDS = 60


@contextmanager
def redis_round_trips():
    """Count commands and pipelines sent to Redis (each is one round trip)."""
    sent = []
    original = redis.connection.AbstractConnection.send_packed_command

    def counting(self, command, check_health=True):
        sent.append(command)
        return original(self, command, check_health)

    redis.connection.AbstractConnection.send_packed_command = counting
    try:
        yield sent
    finally:
        redis.connection.AbstractConnection.send_packed_command = original


def buy(client, event, quantity=1):
    return client.post(f"/events/{event.pk}/purchase/", {"quantity": quantity}, format="json")


def rendered(data) -> dict:
    return json.loads(JSONRenderer().render(data))


def test_a_refusal_is_one_redis_round_trip_and_no_sql(
    buyer_client, make_event, django_assert_num_queries
):
    event = make_event(total_tickets=1)
    assert buy(buyer_client, event).status_code == 202
    buy(buyer_client, event)  # warm: the script is loaded, the revocation read
    with redis_round_trips() as sent, django_assert_num_queries(0):
        response = buy(buyer_client, event)
    assert response.status_code == 409 and response.json()["code"] == "sold_out"
    assert len(sent) == 1


def assert_accept_costs_one_insert_and_two_round_trips(buy_once) -> None:
    """Call `buy_once` and assert the accept's contract: 202, one INSERT, two Redis trips."""
    with redis_round_trips() as sent, CaptureQueriesContext(connection) as queries:
        response = buy_once()
    assert response.status_code == 202
    # The test runs inside a transaction: the INSERT gets a savepoint around it.
    sql = [
        q["sql"]
        for q in queries.captured_queries
        if not q["sql"].startswith(("SAVEPOINT", "RELEASE"))
    ]
    assert len(sql) == 1 and sql[0].startswith("INSERT INTO")
    assert len(sent) == 2


def test_an_accept_is_one_insert_and_two_redis_round_trips(buyer_client, event):
    assert buy(buyer_client, event).status_code == 202  # the first one queues the drain
    assert_accept_costs_one_insert_and_two_round_trips(lambda: buy(buyer_client, event))


def test_the_accept_answers_the_order_as_the_serializer_shapes_it(buyer_client, event):
    response = buy(buyer_client, event, 2)
    order = Order.objects.get(pk=response.json()["id"])
    # The place in line is the gate's (tests/api/test_line.py); the serializer renders it.
    order.position, order.estimated_wait_seconds = 0, response.json()["estimated_wait_seconds"]
    assert response.json() == rendered(OrderOutputSerializer(order).data)
    assert list(response.json())[-2:] == ["position", "estimated_wait_seconds"]
    assert response["Location"] == f"/orders/{order.pk}/"


def test_a_poll_of_a_fresh_order_is_answered_from_redis(
    buyer_client, event, django_assert_num_queries
):
    order_id = buy(buyer_client, event).json()["id"]
    with redis_round_trips() as sent, django_assert_num_queries(0):
        response = buyer_client.get(f"/orders/{order_id}/")
    assert response.status_code == 200
    assert response.json()["status"] == "pending" and response["Retry-After"]
    assert response.json()["position"] == 0
    assert len(sent) == 2  # the card, then the event's line


def test_a_poll_sees_the_commit_at_once_and_matches_the_database(
    buyer_client, event, django_assert_num_queries
):
    order_id = buy(buyer_client, event).json()["id"]
    buyer_client.get(f"/orders/{order_id}/")
    orders_commit(event_id=event.pk)
    with redis_round_trips() as sent, django_assert_num_queries(0):
        response = buyer_client.get(f"/orders/{order_id}/")
    assert response.json()["status"] == "confirmed"
    assert "Retry-After" not in response
    assert len(sent) == 1
    assert response.json() == rendered(OrderOutputSerializer(Order.objects.get(pk=order_id)).data)


def test_a_poll_without_a_card_reads_postgresql_once_and_leaves_a_card(
    buyer_client, event, redis_db
):
    order_id = buy(buyer_client, event).json()["id"]
    orders_commit(event_id=event.pk)
    redis_db.delete(f"order:{order_id}")
    with CaptureQueriesContext(connection) as first:
        assert buyer_client.get(f"/orders/{order_id}/").json()["status"] == "confirmed"
    with CaptureQueriesContext(connection) as second:
        assert buyer_client.get(f"/orders/{order_id}/").json()["status"] == "confirmed"
    assert (len(first), len(second)) == (1, 0)


def test_another_users_order_is_not_found_from_its_card_too(
    client_for, make_user, buyer_client, event
):
    order_id = buy(buyer_client, event).json()["id"]
    response = client_for(make_user()).get(f"/orders/{order_id}/")
    assert response.status_code == 404 and response.json()["code"] == "not_found"


def test_an_admin_reads_any_order_from_its_card(admin_client, buyer_client, event):
    order_id = buy(buyer_client, event).json()["id"]
    assert admin_client.get(f"/orders/{order_id}/").json()["id"] == order_id


def test_a_fill_from_an_older_read_never_overwrites_a_newer_card(buyer, event):
    order = Order.objects.create(user=buyer, event=event, quantity=1)
    stale = cards.order_card_of(order)  # what a reader saw before the commit
    orders_commit(event_id=event.pk)
    cards.order_card_fill(order_id=order.pk, card=stale)
    assert cards.order_card_parse(cards.order_card_read(order_id=order.pk))[1] == "confirmed"


def test_a_cancel_shows_in_the_poll_and_in_the_event_at_once(buyer_client, event):
    order_id = buy(buyer_client, event, 3).json()["id"]
    orders_commit(event_id=event.pk)
    assert buyer_client.get(f"/events/{event.pk}/").json()["tickets_sold"] == 3
    order_cancel(order_id=order_id, user_id=Order.objects.get(pk=order_id).user_id, is_admin=False)
    assert buyer_client.get(f"/orders/{order_id}/").json()["status"] == "cancelled"
    assert buyer_client.get(f"/events/{event.pk}/").json()["tickets_sold"] == 0


def test_an_event_read_is_answered_from_its_card(buyer_client, event, django_assert_num_queries):
    first = buyer_client.get(f"/events/{event.pk}/")
    with redis_round_trips() as sent, django_assert_num_queries(0):
        second = buyer_client.get(f"/events/{event.pk}/")
    assert first.json() == second.json() == rendered(EventOutputSerializer(event).data)
    assert len(sent) == 1


def test_an_admin_edit_shows_in_the_next_event_read(admin_client, buyer_client, event):
    buyer_client.get(f"/events/{event.pk}/")
    response = admin_client.patch(f"/events/{event.pk}/", {"name": "Renamed"}, format="json")
    assert response.status_code == 200
    assert buyer_client.get(f"/events/{event.pk}/").json()["name"] == "Renamed"


def test_a_deleted_event_is_not_found_although_it_was_read_a_moment_before(
    admin_client, buyer_client, event
):
    buyer_client.get(f"/events/{event.pk}/")
    assert admin_client.delete(f"/events/{event.pk}/").status_code == 204
    response = buyer_client.get(f"/events/{event.pk}/")
    assert response.status_code == 404 and response.json()["code"] == "not_found"


def test_reads_fall_back_to_postgresql_when_the_cards_are_unreachable(
    buyer, buyer_client, event, monkeypatch
):
    order = Order.objects.create(user=buyer, event=event, quantity=1)
    dead = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2, decode_responses=True)
    monkeypatch.setattr(cards, "get_redis", lambda: dead)
    event_read = buyer_client.get(f"/events/{event.pk}/")
    poll = buyer_client.get(f"/orders/{order.pk}/")
    assert event_read.status_code == 200 and event_read.json()["id"] == event.pk
    assert poll.status_code == 200 and poll.json()["status"] == "pending"
