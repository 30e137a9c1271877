"""What the waitlist costs the hot path: the sold-out flood's refusal stays one Redis
round trip and no SQL, and buying an offer is the usual accept (one INSERT, two trips)."""

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


def test_an_own_entry_poll_is_two_queries(sold_out, buyers):
    event, _ = sold_out()
    _, (client,) = buyers(1)
    join(client, event)
    client.get(f"/events/{event.pk}/waitlist/me/")
    with CaptureQueriesContext(connection) as queries:
        response = client.get(f"/events/{event.pk}/waitlist/me/")
    assert response.status_code == 200
    # The entry and its position (authentication reads nothing: revocations are cached).
    assert len(queries) == 2
