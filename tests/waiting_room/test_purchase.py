"""The purchase checks the buyer's admission inside the gate's one Lua call: refusals
cost one Redis round trip and no SQL, an accept costs what it costs without a room.

The commit (core/services/orders.py) does not check admission again: an order accepted
while its buyer was admitted is honoured, however late it is committed."""

import time
from datetime import timedelta

import pytest
from django.utils import timezone

from core.models import Order
from core.services.orders import orders_commit
from core.services.waiting_room import waiting_room_configure
from tests.api.test_hot_paths import (
    assert_accept_costs_one_insert_and_two_round_trips,
    redis_round_trips,
)

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def revocations_cached(settings):
    """As in production: a user's revocation record is read at most once a second."""
    settings.AUTH_REVOCATION_CACHE_SECONDS = 60


@pytest.fixture
def room(make_event, settings):
    """An event on sale with an automatic room letting one buyer in at a time."""
    settings.WAITING_ROOM_MIN_CAPACITY = 1

    def on(*, admission_seconds=60, total_tickets=10):
        event = make_event(
            sale_starts_at=timezone.now() - timedelta(minutes=1), total_tickets=total_tickets
        )
        configure(event, admission_seconds=admission_seconds)
        return event

    return on


def configure(event, *, admission_seconds=60, paused=False):
    waiting_room_configure(
        event_id=event.pk, rate=None, admission_seconds=admission_seconds, paused=paused
    )


@pytest.fixture
def buyers(client_for, make_user):
    return lambda count: [client_for(make_user()) for _ in range(count)]


def join(client, event):
    response = client.post(f"/events/{event.pk}/waiting-room/join/")
    assert response.status_code in (200, 201), response.json()
    return response.json()


def buy(client, event, quantity=1, key=None):
    headers = {"HTTP_IDEMPOTENCY_KEY": key} if key else {}
    return client.post(
        f"/events/{event.pk}/purchase/", {"quantity": quantity}, format="json", **headers
    )


def test_a_buyer_not_admitted_yet_gets_409_with_position_in_one_round_trip_and_no_sql(
    room, buyers, django_assert_num_queries
):
    event = room()
    first, second = buyers(2)
    join(first, event)
    join(second, event)
    buy(second, event)  # warm: the script is loaded
    with redis_round_trips() as sent, django_assert_num_queries(0):
        response = buy(second, event)
    assert response.status_code == 409
    assert response.json()["code"] == "not_admitted_yet"
    assert response.json()["position"] == 1
    assert int(response["Retry-After"]) >= 1
    assert len(sent) == 1


def test_an_admitted_buyer_is_accepted_in_one_insert_and_two_round_trips(room, buyers):
    event = room()
    (first,) = buyers(1)
    join(first, event)
    assert buy(first, event).status_code == 202  # the first one queues the drain
    assert_accept_costs_one_insert_and_two_round_trips(lambda: buy(first, event))


def test_a_purchase_lets_the_next_buyer_in(room, buyers):
    event = room()
    first, second = buyers(2)
    join(first, event)
    join(second, event)
    assert buy(second, event).json()["code"] == "not_admitted_yet"
    assert buy(first, event).status_code == 202
    assert buy(second, event).status_code == 202


def test_a_buyer_who_never_joined_is_told_to_join(room, buyers, django_assert_num_queries):
    event = room()
    (stranger,) = buyers(1)
    buy(stranger, event)
    with django_assert_num_queries(0):
        response = buy(stranger, event)
    assert response.status_code == 409
    assert response.json()["code"] == "not_in_waiting_room"
    assert "join" in response.json()["message"]


def test_an_expired_admission_is_refused_and_lets_the_next_buyer_in(room, buyers):
    event = room(admission_seconds=1)
    first, second = buyers(2)
    join(first, event)
    assert join(second, event)["position"] == 1
    time.sleep(1.2)
    response = buy(first, event)
    assert response.status_code == 409 and response.json()["code"] == "admission_expired"
    assert "Retry-After" not in response
    assert buy(second, event).status_code == 202


def test_a_replay_of_an_accepted_order_is_answered_after_the_admission_expired(room, buyers):
    event = room(admission_seconds=1)
    (first,) = buyers(1)
    join(first, event)
    accepted = buy(first, event, key="k-1")
    assert accepted.status_code == 202
    time.sleep(1.2)
    replayed = buy(first, event, key="k-1")
    assert replayed.status_code == 202 and replayed["Idempotent-Replayed"] == "true"
    assert replayed.json()["id"] == accepted.json()["id"]
    assert buy(first, event, key="k-2").json()["code"] == "admission_expired"


def test_the_commit_honours_an_order_accepted_while_admitted(room, buyers):
    event = room(admission_seconds=1)
    (first,) = buyers(1)
    join(first, event)
    order_id = buy(first, event).json()["id"]
    time.sleep(1.2)  # the admission is over before the commit
    orders_commit(event_id=event.pk)
    assert Order.objects.get(pk=order_id).status == Order.Status.CONFIRMED


def test_a_pause_stops_admissions_and_a_resume_restarts_them(room, buyers):
    event = room()
    first, second = buyers(2)
    join(first, event)
    join(second, event)
    configure(event, paused=True)
    assert buy(first, event).status_code == 202  # admitted before the pause: still admitted
    response = buy(second, event)
    assert response.status_code == 409 and response.json()["code"] == "not_admitted_yet"
    configure(event, paused=False)
    assert buy(second, event).status_code == 202


def test_a_buyer_ignoring_retry_after_gets_cheap_refusals_and_no_better_place(
    room, buyers, settings, django_assert_num_queries
):
    config = dict(settings.REST_FRAMEWORK)
    rates = {**config["DEFAULT_THROTTLE_RATES"], "purchase": "5/min"}
    settings.REST_FRAMEWORK = {**config, "DEFAULT_THROTTLE_RATES": rates}
    event = room()
    first, hammer, patient = buyers(3)
    join(first, event)
    join(hammer, event)
    join(patient, event)
    with django_assert_num_queries(0):
        codes = [buy(hammer, event).json()["code"] for _ in range(12)]
    assert codes == ["not_admitted_yet"] * 5 + ["throttled"] * 7
    assert join(hammer, event)["position"] == 1
    assert join(patient, event)["position"] == 2
    assert buy(first, event).status_code == 202
    assert hammer.get(f"/events/{event.pk}/waiting-room/me/").json()["state"] == "admitted"
    assert buy(patient, event).json()["code"] == "not_admitted_yet"
