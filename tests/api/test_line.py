"""The buyer's place in line: position and estimated wait while an order is pending.

The live faults (a worker killed inside its commit, Redis restarted empty) are in
tests/faults/test_line_faults.py.
"""

import math
import time
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext

from core import cards
from core.gate.keys import line_keys
from core.gate.line import line_read, line_record, retry_after, served_rate
from core.gate.reserve import BATCH_STALE_SECONDS, DEFAULT_BATCH_SECONDS, Line, wait_estimate
from core.models import Order
from core.services.orders import orders_commit

pytestmark = pytest.mark.django_db


def buy(client, event, quantity=1):
    return client.post(f"/events/{event.pk}/purchase/", {"quantity": quantity}, format="json")


def poll(client, order_id):
    return client.get(f"/orders/{order_id}/")


def pending_ahead(order_id: int) -> int:
    order = Order.objects.get(pk=order_id)
    return Order.objects.filter(event_id=order.event_id, status="pending", pk__lt=order_id).count()


@pytest.fixture
def buyers(client_for, make_user):
    return [client_for(make_user()) for _ in range(6)]


def test_a_quiet_event_numbers_its_orders_in_acceptance_order(buyers, event):
    accepted = [buy(client, event) for client in buyers]
    assert [r.status_code for r in accepted] == [202] * 6
    assert [r.json()["position"] for r in accepted] == [0, 1, 2, 3, 4, 5]
    polled = [
        poll(client, r.json()["id"]).json()["position"]
        for client, r in zip(buyers, accepted, strict=True)
    ]
    assert polled == [0, 1, 2, 3, 4, 5]


def test_a_pending_poll_counts_its_place_without_sql(buyers, event, django_assert_num_queries):
    order_id = [buy(client, event).json()["id"] for client in buyers][-1]
    with django_assert_num_queries(0):
        response = poll(buyers[-1], order_id)
    body = response.json()
    assert (body["position"], body["status"]) == (5, "pending")
    assert body["estimated_wait_seconds"] > 0
    assert response["Retry-After"] == str(
        min(max(math.ceil(body["estimated_wait_seconds"]), 1), 10)
    )


def test_positions_decrease_as_batches_commit_and_match_postgresql(buyers, event):
    ids = [buy(client, event).json()["id"] for client in buyers]
    seen = {order_id: [] for order_id in ids}
    for _ in range(3):
        orders_commit(event_id=event.pk, limit=2)
        for client, order_id in zip(buyers, ids, strict=True):
            body = poll(client, order_id).json()
            if body["status"] == "pending":
                assert body["position"] == pending_ahead(order_id)
                seen[order_id].append(body["position"])
    assert seen[ids[-1]] == [3, 1]  # 5 ahead at accept, then one batch of two at a time
    assert all(
        a > b for positions in seen.values() for a, b in zip(positions, positions[1:], strict=False)
    )


def test_final_orders_carry_neither_field_nor_retry_after(buyer_client, event):
    order_id = buy(buyer_client, event).json()["id"]
    orders_commit(event_id=event.pk)
    response = poll(buyer_client, order_id)
    assert response.json()["status"] == "confirmed"
    assert "position" not in response.json() and "estimated_wait_seconds" not in response.json()
    assert "Retry-After" not in response


def test_the_order_list_leaves_the_fields_out(buyer_client, event):
    buy(buyer_client, event)
    listed = buyer_client.get("/orders/").json()["results"][0]
    assert listed["status"] == "pending" and "position" not in listed


def test_a_replayed_purchase_answers_its_place_too(buyer_client, buyers, event):
    buy(buyers[0], event)
    first = buyer_client.post(
        f"/events/{event.pk}/purchase/", {"quantity": 1}, format="json", HTTP_IDEMPOTENCY_KEY="k1"
    )
    again = buyer_client.post(
        f"/events/{event.pk}/purchase/", {"quantity": 1}, format="json", HTTP_IDEMPOTENCY_KEY="k1"
    )
    assert again["Idempotent-Replayed"] == "true"
    assert first.json()["position"] == again.json()["position"] == 1


def test_a_lost_line_is_recounted_from_postgresql(buyers, event, redis_db):
    ids = [buy(client, event).json()["id"] for client in buyers]
    orders_commit(event_id=event.pk, limit=2)
    redis_db.delete(*line_keys(event.pk))  # Redis lost the gate and its line
    with CaptureQueriesContext(connection) as queries:
        body = poll(buyers[-1], ids[-1]).json()
    assert body["position"] == pending_ahead(ids[-1]) == 3
    assert len(queries) == 1  # the recount, on order_pending_by_event_idx


def test_a_pending_card_rebuilt_from_postgresql_gets_its_number_back(
    buyers, event, redis_db, django_assert_num_queries
):
    ids = [buy(client, event).json()["id"] for client in buyers]
    redis_db.delete(f"order:{ids[3]}")
    with django_assert_num_queries(2):  # the order, the recount
        assert poll(buyers[3], ids[3]).json()["position"] == 3
    with django_assert_num_queries(0):  # the line stood still: its number is back
        assert poll(buyers[3], ids[3]).json()["position"] == 3
    orders_commit(event_id=event.pk, limit=2)
    assert poll(buyers[3], ids[3]).json()["position"] == 1 == pending_ahead(ids[3])


def test_a_card_rebuilt_while_batches_commit_keeps_being_recounted(
    buyers, event, redis_db, django_assert_num_queries
):
    ids = [buy(client, event).json()["id"] for client in buyers]
    orders_commit(event_id=event.pk, limit=2)  # a batch finished a moment ago
    redis_db.delete(f"order:{ids[3]}")
    assert poll(buyers[3], ids[3]).json()["position"] == 1
    with django_assert_num_queries(1):  # no number could be given: recounted again
        assert poll(buyers[3], ids[3]).json()["position"] == 1


def test_a_line_opened_on_a_rebuilt_gate_is_not_trusted_while_older_orders_wait(
    buyers, event, redis_db
):
    older = [buy(client, event).json()["id"] for client in buyers[:3]]
    redis_db.delete(*line_keys(event.pk))  # Redis lost the gate: rebuilt on next buy
    newer = [buy(client, event) for client in buyers[3:]]
    # The gate does not know the older orders' places: null on the 202, recount on polls.
    assert [r.json()["position"] for r in newer] == [None, None, None]
    assert newer[0]["Retry-After"] == "1"
    assert [
        poll(c, r.json()["id"]).json()["position"] for c, r in zip(buyers[3:], newer, strict=True)
    ] == [
        3,
        4,
        5,
    ]
    orders_commit(event_id=event.pk, limit=3)  # the older ones: the line is now complete
    later = buy(buyers[0], event).json()
    assert later["position"] == 3 == pending_ahead(later["id"])
    assert poll(buyers[3], newer[0].json()["id"]).json()["position"] == 0
    assert older  # made final above


def test_a_commit_batch_that_never_finished_stops_the_line_being_trusted(
    buyers, event, django_assert_num_queries
):
    ids = [buy(client, event).json()["id"] for client in buyers]
    # A worker killed inside its batch: the batch began long ago and never finished.
    line_record(
        "begin",
        event_id=event.pk,
        name="commit:dead",
        args=(f"{time.time() - 60:.3f}", BATCH_STALE_SECONDS),
    )
    Order.objects.filter(pk__in=ids[:2]).update(status="confirmed")  # its commit landed
    with django_assert_num_queries(1):
        body = poll(buyers[-1], ids[-1]).json()
    assert body["position"] == 3  # not the 5 the count without that batch would say
    assert buy(buyers[0], event).json()["position"] is None


def test_an_insert_with_an_unknown_outcome_makes_the_line_doubtful(buyers, event, redis_db):
    ids = [buy(client, event).json()["id"] for client in buyers[:2]]
    name = redis_db.hget(line_keys(event.pk)[0], "line")
    line_record("doubt", event_id=event.pk, name=name)
    assert poll(buyers[1], ids[1]).json()["position"] == 1  # recounted
    assert buy(buyers[2], event).json()["position"] is None


def test_the_estimate_follows_the_measured_commit_rate():
    now = time.time()
    measured = Line("a", 0, "a", ((now - 1, 500, 0.25), (now - 2, 500, 0.25)), ())
    # 2,000 orders/s of committing, batches of 0.25 s, plus the drain's delay.
    estimate = wait_estimate(measured, position=1000, now=now)
    assert estimate == pytest.approx(0.1 + 0.25 + 0.5, abs=0.05)  # to a tenth of a second
    floor = Line("a", 0, "a", ((now - 60, 500, 0.25),), ())  # too old to count
    assert wait_estimate(floor, position=0, now=now) == pytest.approx(
        0.1 + DEFAULT_BATCH_SECONDS, abs=0.05
    )
    assert [retry_after(w) for w in (None, 0.2, 1.0, 1.1, 42.0)] == [1, 1, 1, 2, 10]


def test_a_batch_logs_its_rate_for_the_estimate_and_the_operators(buyers, event):
    for client in buyers:
        buy(client, event)
    orders_commit(event_id=event.pk)
    measured = line_read(event_id=event.pk)
    assert [orders for _, orders, _ in measured.log] == [6]
    assert served_rate(measured.log) == pytest.approx(0.6)


def test_the_schema_documents_the_fields_as_nullable_and_optional(anon):
    schema = anon.get("/schema/", {"format": "json"}).json()
    order = schema["components"]["schemas"]["OrderOutput"]
    for name in ("position", "estimated_wait_seconds"):
        assert order["properties"][name]["nullable"] is True
        assert "read-only, only while pending" in order["properties"][name]["description"].lower()
        assert name not in order.get("required", [])


def test_operators_see_each_line_in_ops_metrics_and_the_command(
    buyers, admin_client, client, event
):
    for client_ in buyers:
        buy(client_, event)
    orders_commit(event_id=event.pk, limit=2)
    row = next(
        r for r in admin_client.get("/ops/queues/").json()["events"] if r["event"] == event.pk
    )
    assert row["line_length"] == 4
    assert row["served_per_second"] == pytest.approx(0.2)
    assert 0 <= row["oldest_waiting_seconds"] < 60
    metrics = client.get("/metrics").content.decode()
    assert f'event_line_length{{event="{event.pk}"}} 4.0' in metrics
    assert f'event_line_served_per_second{{event="{event.pk}"}} 0.2' in metrics
    assert f'event_line_oldest_waiting_seconds{{event="{event.pk}"}}' in metrics
    out = StringIO()
    call_command("queues", stdout=out)
    assert "line        4 waiting, oldest" in out.getvalue()


def test_a_card_written_before_cards_had_a_place_still_answers(buyer_client, event, redis_db):
    order_id = buy(buyer_client, event).json()["id"]
    owner, status, body, _ = cards.order_card_parse(redis_db.get(f"order:{order_id}"))
    redis_db.set(f"order:{order_id}", f"{owner}|{status}|{body.decode()}")
    response = poll(buyer_client, order_id)
    assert response.status_code == 200
    assert response.json()["status"] == "pending" and response.json()["position"] is None
    assert response["Retry-After"] == "1"
