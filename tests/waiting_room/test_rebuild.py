"""Redis loss: the room is rebuilt from PostgreSQL; nobody loses a place or an admission,
nobody jumps ahead, and the counter is persisted by beat."""

import pytest

from core.gate.keys import line_keys
from core.models import Order, WaitingRoom
from core.services.waiting_room import waiting_room_public, waiting_room_state
from core.services.waiting_room_persist import room_capacity, waiting_room_persist_all
from core.waiting_room import room_bought
from workers.room_tasks import waiting_room_persist

pytestmark = pytest.mark.django_db


def numbers(event, buyers, now) -> dict[int, int]:
    return {
        b.pk: waiting_room_state(event_id=event.pk, user_id=b.pk, rate=None, now=now).number
        for b in buyers
    }


def test_after_a_redis_loss_everyone_keeps_the_number_and_admission(
    room_on, make_buyers, join, t0, redis_db
):
    event = room_on(rate=2, admission_seconds=30)
    early, late = make_buyers(20), make_buyers(10)
    for buyer in early:
        join(buyer, t0 - 100)
    for i, buyer in enumerate(late):
        join(buyer, t0 + 1 + i / 100)
    before = numbers(event, early + late, t0 + 3)
    assert waiting_room_public(event_id=event.pk, now=t0 + 3).serving == 6
    waiting_room_persist_all(now=t0 + 3)

    redis_db.flushdb()

    after = numbers(event, early + late, t0 + 10)  # the first call rebuilds
    assert after == before
    public = waiting_room_public(event_id=event.pk, now=t0 + 10)
    assert public.serving >= 6 and public.joined == 30
    admitted = [b for b in early + late if before[b.pk] <= public.serving]
    for buyer in admitted:  # all admitted anew, from the rebuild on
        state = waiting_room_state(event_id=event.pk, user_id=buyer.pk, rate=None, now=t0 + 10)
        assert state.state == "admitted" and state.admitted_until >= t0 + 10 + 29
    newcomer = make_buyers(1)[0]
    assert join(newcomer, t0 + 11).number == 31  # after everyone who joined before


def test_the_counter_restarts_from_the_persisted_one_moved_on_by_the_rate(
    room_on, make_buyers, join, t0, redis_db
):
    event = room_on(rate=1)
    for buyer in make_buyers(50):
        join(buyer, t0 - 5)
    assert waiting_room_public(event_id=event.pk, now=t0 + 20).serving == 20
    waiting_room_persist_all(now=t0 + 20)
    assert WaitingRoom.objects.get(event=event).serving == 20

    redis_db.flushdb()

    assert waiting_room_public(event_id=event.pk, now=t0 + 25).serving == 25  # not lower


def test_after_a_rebuild_who_bought_stays_bought(
    room_on, make_buyers, join, t0, redis_db, settings
):
    settings.WAITING_ROOM_MIN_CAPACITY = 3
    event = room_on(rate=None)
    buyers = make_buyers(10)
    for buyer in buyers:
        join(buyer, t0 - 5)
    admitted = [b for b, n in numbers(event, buyers, t0 + 1).items() if n <= 3]
    Order.objects.create(user_id=admitted[0], event=event, quantity=1)
    room_bought(event_id=event.pk, user_id=admitted[0], now=t0 + 1)
    assert waiting_room_public(event_id=event.pk, now=t0 + 2).serving == 4
    waiting_room_persist_all(now=t0 + 2)

    redis_db.flushdb()

    public = waiting_room_public(event_id=event.pk, now=t0 + 3)
    assert public.serving == 4 and public.admitted_not_bought == 3


def test_an_event_without_a_room_is_remembered_after_a_loss(client, event, redis_db):
    assert client.get(f"/events/{event.pk}/waiting-room/").status_code == 404
    redis_db.flushdb()

    response = client.get(f"/events/{event.pk}/waiting-room/")

    assert response.status_code == 404 and response.json()["code"] == "waiting_room_closed"
    assert redis_db.hget(f"room:{{ev:{event.pk}}}", "on") == "0"


def test_the_automatic_capacity_follows_the_commit_rate(room_on, t0, redis_db, settings):
    settings.WAITING_ROOM_ADMISSION_LAG_SECONDS = 2.0
    event = room_on(rate=None)
    # Two batches in the last 10 s: 600 orders committed in 0.5 s of work.
    redis_db.rpush(line_keys(event.pk)[1], f"{t0 - 2}:400:0.3", f"{t0 - 1}:200:0.2")

    assert waiting_room_persist_all(now=t0) == 1

    assert WaitingRoom.objects.get(event=event).capacity == 2400  # 1200/s x 2 s
    assert waiting_room_public(event_id=event.pk, now=t0).capacity == 2400


def test_the_capacity_stays_when_nothing_was_committed_and_keeps_its_floor(settings):
    settings.WAITING_ROOM_MIN_CAPACITY = 100
    assert room_capacity((), now=1000.0, current=700) == 700
    assert room_capacity(((995.0, 10, 1.0),), now=1000.0, current=700) == 100
    assert room_capacity(((980.0, 10_000, 1.0),), now=1000.0, current=700) == 700  # too old


def test_the_beat_task_persists_every_room(room_on, t0):
    room_on(rate=5)
    assert waiting_room_persist.run() == 1
