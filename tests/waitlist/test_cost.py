"""What the waitlist costs the hot path: the sold-out flood's refusal stays one Redis
round trip and no SQL, buying an offer is the usual accept (one INSERT, two trips), and
a buyer's poll of their entry is one query.

`pytest tests/waitlist/test_cost.py -s` prints what a poll and a refusal cost in-process
(quoted in docs/benchmarks/waitlist.md); nothing here asserts a time.
"""

import statistics
import time

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from core.services.waitlist_offers import waitlist_offer
from tests.api.test_hot_paths import (  # noqa: F401 - revocations_cached: a fixture
    assert_accept_costs_one_insert_and_two_round_trips,
    redis_round_trips,
    revocations_cached,
)
from tests.waitlist.conftest import buy, join

pytestmark = pytest.mark.django_db


def test_the_sold_out_refusal_with_a_waitlist_is_one_round_trip_and_no_sql(
    sold_out, buyers, django_assert_num_queries
):
    event, _ = sold_out()
    _, (flood,) = buyers(1)
    buy(flood, event)  # warm: the script is loaded, the revocation read
    with redis_round_trips() as sent, django_assert_num_queries(0):
        response = buy(flood, event)
    assert response.json()["code"] == "sold_out_waitlist_open"
    assert len(sent) == 1


def test_buying_an_offer_is_the_usual_accept(sold_out, buyers):
    event, orders = sold_out(total=2)
    _, (first, client) = buyers(2)
    join(first, event)
    join(client, event)
    for holder, order_id in orders:
        assert holder.post(f"/orders/{order_id}/cancel/").status_code == 200
    waitlist_offer(event_id=event.pk)
    assert buy(first, event).status_code == 202  # the first accept queues the drain
    assert_accept_costs_one_insert_and_two_round_trips(lambda: buy(client, event))


def test_an_own_entry_poll_is_one_query(offered):
    event, clients = offered, offered.clients
    assert buy(clients[0], event).status_code == 202  # the offer is bought
    for client, status in zip(clients, ("bought", "waiting", "waiting"), strict=True):
        client.get(f"/events/{event.pk}/waitlist/me/")  # warm
        with CaptureQueriesContext(connection) as queries:
            response = client.get(f"/events/{event.pk}/waitlist/me/")
        assert response.json()["status"] == status
        # Authentication reads nothing (revocations are cached).
        assert len(queries) == 1


def test_print_what_a_poll_and_a_refusal_cost(sold_out, buyers):
    event, _ = sold_out(total=10)
    _, clients = buyers(50)
    for client in clients:
        join(client, event)
    me = clients[25]
    url = f"/events/{event.pk}/waitlist/me/"
    calls = {"own entry poll": lambda: me.get(url), "sold-out refusal": lambda: buy(me, event)}
    for call in calls.values():
        for _ in range(20):
            call()  # warm
    for name, call in calls.items():
        runs = []
        for _ in range(5):
            started = time.perf_counter()
            for _ in range(200):
                call()
            runs.append((time.perf_counter() - started) / 200 * 1000)
        ms = statistics.median(runs)
        print(f"{name:>18}: {ms:.2f} ms a request (median of 5 x 200, client and server)")
