"""The waiting room over HTTP: shapes, headers, permissions, errors, and what each hot
request costs (Redis round trips and SQL queries are part of the contract)."""

from datetime import datetime, timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from core.models import WaitingRoom, WaitingRoomEntry
from tests.api.test_hot_paths import redis_round_trips

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def revocations_cached(settings):
    """As in production: a user's revocation record is read at most once a second."""
    settings.AUTH_REVOCATION_CACHE_SECONDS = 60


@pytest.fixture
def on_sale(make_event):
    return make_event(sale_starts_at=timezone.now() - timedelta(minutes=1))


def room_url(event, tail=""):
    return f"/events/{event.pk}/waiting-room/{tail}"


def turn_on(admin_client, event, **body):
    body = {"rate": 1, "admission_seconds": 60, **body}
    return admin_client.put(room_url(event), body, format="json")


def test_an_admin_turns_the_room_on_and_changes_it(admin_client, on_sale):
    created = turn_on(admin_client, on_sale, rate=None)
    assert created.status_code == 201
    assert created.json() == {
        "event": on_sale.pk, "rate": None, "admission_seconds": 60, "paused": False,
        "capacity": 100,
    }  # fmt: skip

    changed = turn_on(admin_client, on_sale, rate=50, paused=True)

    assert changed.status_code == 200 and changed.json()["rate"] == 50
    room = WaitingRoom.objects.get(event=on_sale)
    assert room.rate == 50 and room.paused


@pytest.mark.parametrize(
    "body,field",
    [
        ({"rate": 0, "admission_seconds": 60}, "rate"),
        ({"rate": 1, "admission_seconds": 5}, "admission_seconds"),
        ({"admission_seconds": 60}, "rate"),
        ({"rate": "fast", "admission_seconds": 60}, "rate"),
    ],
)
def test_invalid_settings_are_refused_with_a_code(admin_client, on_sale, body, field):
    response = admin_client.put(room_url(on_sale), body, format="json")

    assert response.status_code == 400
    assert response.json()["code"] == "invalid" and field in response.json()["errors"]


def test_only_admins_change_the_room(buyer_client, anon, on_sale):
    assert turn_on(buyer_client, on_sale).status_code == 403
    assert turn_on(anon, on_sale).status_code == 401
    assert buyer_client.delete(room_url(on_sale)).status_code == 403


def test_a_room_of_an_unknown_event_is_not_found(admin_client):
    response = turn_on(admin_client, type("E", (), {"pk": 999999})())
    assert response.status_code == 404 and response.json()["code"] == "not_found"


def test_turning_the_room_off_brings_the_event_back_to_no_room(
    admin_client, buyer_client, on_sale, anon
):
    turn_on(admin_client, on_sale)
    assert buyer_client.post(room_url(on_sale, "join/")).status_code == 201

    assert admin_client.delete(room_url(on_sale)).status_code == 204

    for response in (
        anon.get(room_url(on_sale)),
        buyer_client.post(room_url(on_sale, "join/")),
        admin_client.delete(room_url(on_sale)),
    ):
        assert response.status_code == 404
        assert response.json()["code"] == "waiting_room_closed"
    assert not WaitingRoomEntry.objects.exists()


def test_the_public_state_is_the_same_for_everyone_and_cacheable(admin_client, anon, on_sale):
    turn_on(admin_client, on_sale, rate=5)

    response = anon.get(room_url(on_sale))

    assert response.status_code == 200
    assert response["Cache-Control"] == "public, max-age=1"
    body = response.json()
    assert set(body) == {
        "event", "opens_at", "serving", "rate", "capacity", "paused", "sold_out", "joined",
        "early_count", "updated_at",
    }  # fmt: skip
    assert body["rate"] == 5 and body["sold_out"] is False and body["early_count"] == 0
    opens = datetime.fromisoformat(body["opens_at"])  # the gate keeps milliseconds
    assert abs((opens - on_sale.sale_starts_at).total_seconds()) < 0.001


def test_before_the_opening_the_place_is_decided_at_the_opening(
    admin_client, buyer_client, make_event, anon
):
    event = make_event(sale_starts_at=timezone.now() + timedelta(minutes=10))
    turn_on(admin_client, event)

    response = buyer_client.post(room_url(event, "join/"))

    assert response.status_code == 201
    body = response.json()
    assert body["number"] is None and body["early"] is True and body["position"] is None
    assert body["state"] == "waiting" and 590 <= body["estimated_wait_seconds"] <= 600
    assert response["Retry-After"] == "30"
    assert anon.get(room_url(event)).json()["early_count"] is None


def test_a_buyer_joins_once_and_reads_its_place(admin_client, client_for, make_user, on_sale):
    turn_on(admin_client, on_sale, rate=1)
    first, second = client_for(make_user()), client_for(make_user())
    assert first.post(room_url(on_sale, "join/")).json()["state"] == "admitted"  # caught up

    joined = second.post(room_url(on_sale, "join/"))
    again = second.post(room_url(on_sale, "join/"))
    mine = second.get(room_url(on_sale, "me/"))

    assert joined.status_code == 201 and again.status_code == 200 and mine.status_code == 200
    assert joined.json() == again.json() == mine.json()
    assert mine.json() == {
        "number": 2, "early": False, "position": 1, "state": "waiting",
        "admitted_until": None, "estimated_wait_seconds": 1.0,
    }  # fmt: skip
    assert mine["Retry-After"] == "1"


def test_own_state_before_joining_is_not_found_with_a_code(admin_client, buyer_client, on_sale):
    turn_on(admin_client, on_sale)

    response = buyer_client.get(room_url(on_sale, "me/"))

    assert response.status_code == 404 and response.json()["code"] == "not_in_waiting_room"


def test_only_buyers_join(admin_client, anon, on_sale):
    turn_on(admin_client, on_sale)
    assert admin_client.post(room_url(on_sale, "join/")).status_code == 403
    assert anon.post(room_url(on_sale, "join/")).status_code == 401
    assert anon.get(room_url(on_sale, "me/")).status_code == 401


def test_a_buyer_ignoring_retry_after_is_refused_cheaply_and_keeps_its_place(
    admin_client, buyer_client, on_sale, settings
):
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {"waiting_room": "3/min"},
    }
    turn_on(admin_client, on_sale)
    number = buyer_client.post(room_url(on_sale, "join/")).json()["number"]
    buyer_client.post(room_url(on_sale, "join/"))
    buyer_client.get(room_url(on_sale, "me/"))

    for response in (buyer_client.post(room_url(on_sale, "join/")),
                     buyer_client.get(room_url(on_sale, "me/"))):  # fmt: skip
        assert response.status_code == 429 and response.json()["code"] == "throttled"
        assert 1 <= int(response["Retry-After"]) <= 60
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {}}
    assert buyer_client.get(room_url(on_sale, "me/")).json()["number"] == number


def test_a_first_join_is_one_insert_and_one_redis_round_trip(
    admin_client, client_for, make_user, on_sale
):
    turn_on(admin_client, on_sale)
    client_for(make_user()).post(room_url(on_sale, "join/"))  # warm: scripts, gate
    client = client_for(make_user())
    client.get(room_url(on_sale, "me/"))  # warm: the token's revocation record

    with redis_round_trips() as sent, CaptureQueriesContext(connection) as queries:
        response = client.post(room_url(on_sale, "join/"))

    assert response.status_code == 201
    sql = [q["sql"] for q in queries.captured_queries]
    assert len(sql) == 1 and sql[0].startswith("INSERT INTO")
    assert len(sent) == 1


def test_a_repeat_join_own_state_and_public_state_are_one_round_trip_and_no_sql(
    admin_client, buyer_client, anon, on_sale, django_assert_num_queries
):
    turn_on(admin_client, on_sale)
    buyer_client.post(room_url(on_sale, "join/"))
    anon.get(room_url(on_sale))

    for send in (
        lambda: buyer_client.post(room_url(on_sale, "join/")),
        lambda: buyer_client.get(room_url(on_sale, "me/")),
        lambda: anon.get(room_url(on_sale)),
    ):
        with redis_round_trips() as sent, django_assert_num_queries(0):
            assert send().status_code == 200
        assert len(sent) == 1


def test_the_schema_documents_every_room_endpoint(admin_client):
    schema = admin_client.get("/schema/?format=json").json()
    paths = schema["paths"]
    assert set(paths["/events/{event_id}/waiting-room/"]) >= {"get", "put", "delete"}
    assert "post" in paths["/events/{event_id}/waiting-room/join/"]
    assert "get" in paths["/events/{event_id}/waiting-room/me/"]
    public = schema["components"]["schemas"]["WaitingRoomPublic"]["properties"]
    assert {"serving", "early_count", "sold_out", "opens_at"} <= set(public)
    assert paths["/events/{event_id}/waiting-room/"]["get"].get("security") in (None, [])
