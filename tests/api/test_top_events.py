"""GET /events/top/."""

import pytest

from core.services.top_events import top_events_refresh
from tests.factories import confirmed_order

pytestmark = pytest.mark.django_db


def test_top_events_lists_ranked_events_and_the_refresh_time(buyer_client, buyer, make_event):
    _first, second = make_event(), make_event()
    confirmed_order(user=buyer, event=second, quantity=3)
    top_events_refresh()

    body = buyer_client.get("/events/top/?limit=1").json()

    assert body["refreshed_at"]
    assert body["results"] == [
        {
            "id": second.pk,
            "name": second.name,
            "date": body["results"][0]["date"],
            "tickets_sold": 3,
            "rank": 1,
        }
    ]
    assert len(buyer_client.get("/events/top/").json()["results"]) == 2


@pytest.mark.parametrize("limit", ["0", "101", "-1", "abc", "1.5", ""])
def test_top_events_rejects_a_bad_limit(buyer_client, limit):
    response = buyer_client.get(f"/events/top/?limit={limit}")
    assert response.status_code == 400
    assert response.json()["code"] == "invalid"
    assert "limit" in response.json()["errors"]


def test_top_events_needs_authentication(anon):
    response = anon.get("/events/top/")
    assert response.status_code == 401
    assert response.json()["code"] == "not_authenticated"


def test_top_events_before_any_refresh_is_empty(buyer_client):
    body = buyer_client.get("/events/top/").json()
    assert body == {"refreshed_at": None, "results": []}
