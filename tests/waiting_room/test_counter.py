"""The serving counter: fixed rate, automatic capacity, expiry, sold out."""

import pytest

from core.gate.keys import gate_keys
from core.models import Event
from core.services.waiting_room import (
    waiting_room_configure,
    waiting_room_join,
    waiting_room_public,
    waiting_room_state,
)
from core.waiting_room import room_bought

pytestmark = pytest.mark.django_db


def serving(event, now) -> int:
    return waiting_room_public(event_id=event.pk, now=now).serving


def state(event, buyer, now):
    return waiting_room_state(event_id=event.pk, user_id=buyer.pk, rate=None, now=now)


@pytest.fixture
def crowd(make_buyers, join, t0):
    """Let 100 buyers join before the opening (the room must be on)."""

    def join_all():
        buyers = make_buyers(100)
        for buyer in buyers:
            join(buyer, t0 - 60)
        return buyers

    return join_all


def test_a_fixed_rate_admits_that_many_per_second_from_the_opening(room_on, crowd, t0):
    event = room_on(rate=3)
    crowd()
    assert serving(event, t0 - 1) == 0  # not before the opening

    assert serving(event, t0 + 1) == 3
    assert serving(event, t0 + 2.5) == 7  # floor(2.5 * 3)
    assert serving(event, t0 + 10) == 30  # no drift: the fraction carried over


def test_a_paused_room_admits_nobody_and_resumes_without_a_burst(room_on, crowd, t0):
    event = room_on(rate=2)
    crowd()
    assert serving(event, t0 + 5) == 10
    room_on(rate=2, paused=True, now=t0 + 5)
    assert serving(event, t0 + 60) == 10

    room_on(rate=2, paused=False, now=t0 + 60)

    assert serving(event, t0 + 61) == 12


def test_a_re_rate_keeps_what_was_served(room_on, crowd, t0):
    event = room_on(rate=2)
    crowd()
    room_on(rate=10, now=t0 + 3)  # 6 served at the old rate

    assert serving(event, t0 + 4) == 16


def test_the_counter_never_passes_the_entries(room_on, make_buyers, join, t0):
    event = room_on(rate=100)
    buyers = make_buyers(3)
    for buyer in buyers:
        join(buyer, t0 - 1)

    assert serving(event, t0 + 10) == 3
    late = make_buyers(1)[0]
    assert join(late, t0 + 10.001).state == "admitted"  # a caught-up room lets it in


def test_automatic_admits_up_to_the_capacity(room_on, crowd, t0, room_event):
    room_on(rate=None)
    crowd()
    assert serving(room_event, t0 + 1) == room_event.waiting_room.capacity == 100


def test_automatic_lets_the_next_in_when_an_admitted_buyer_buys(
    room_on, crowd, t0, settings, room_event
):
    settings.WAITING_ROOM_MIN_CAPACITY = 5
    event = room_on(rate=None)
    buyers = crowd()
    assert serving(event, t0 + 1) == 5
    assert serving(event, t0 + 2) == 5

    for buyer in buyers[:2]:
        number = state(event, buyer, t0 + 2).number
        if number <= 5:
            assert room_bought(event_id=event.pk, user_id=buyer.pk, now=t0 + 2) == "ok"
    bought = sum(1 for b in buyers[:2] if state(event, b, t0 + 2).number <= 5)

    assert serving(event, t0 + 3) == 5 + bought


def test_a_waiting_buyer_cannot_be_recorded_as_bought(room_on, crowd, t0, settings):
    settings.WAITING_ROOM_MIN_CAPACITY = 1
    event = room_on(rate=None)
    buyers = crowd()
    waiting = next(b for b in buyers if state(event, b, t0 + 1).number > 1)

    assert room_bought(event_id=event.pk, user_id=waiting.pk, now=t0 + 1) == "not_admitted"


def test_an_unused_admission_expires_and_lets_the_next_in(room_on, crowd, t0):
    event = room_on(rate=1, admission_seconds=30)
    buyers = crowd()
    assert serving(event, t0 + 2) == 2
    first = next(b for b in buyers if state(event, b, t0 + 2).number == 1)
    second = next(b for b in buyers if state(event, b, t0 + 2).number == 2)
    assert state(event, first, t0 + 2).state == "admitted"
    assert room_bought(event_id=event.pk, user_id=second.pk, now=t0 + 2) == "ok"

    later = state(event, first, t0 + 32.5)

    assert later.state == "expired" and later.admitted_until is None
    assert state(event, second, t0 + 32.5).state == "expired"  # its window is over too
    # 32 admitted by the rate, plus 1: number 1 bought nothing and let the next in.
    assert serving(event, t0 + 32.5) == 32 + 1
    answer = waiting_room_public(event_id=event.pk, now=t0 + 32.5)
    assert answer.expired == 1


def test_admission_stops_at_sold_out_and_the_room_is_told(room_on, crowd, t0, redis_db):
    event = room_on(rate=5)
    buyers = crowd()
    assert serving(event, t0 + 1) == 5
    redis_db.hset(gate_keys(event.pk)[0], "remaining", 0)  # as the last accept leaves it

    answer = waiting_room_public(event_id=event.pk, now=t0 + 10)

    assert answer.serving == 5 and answer.sold_out
    waiting = next(b for b in buyers if state(event, b, t0 + 10).number > 5)
    assert state(event, waiting, t0 + 10).state == "sold_out"


def test_a_room_configured_during_the_sale_admits_the_first_joiners_at_once(
    make_event, make_buyers, t0
):
    event = Event.objects.create(name="open", date=make_event().date, total_tickets=10)
    waiting_room_configure(event_id=event.pk, rate=2, admission_seconds=60, paused=False, now=t0)
    buyers = make_buyers(3)
    states = [
        waiting_room_join(event_id=event.pk, user_id=b.pk, rate=None, now=t0 + 0.01).state
        for b in buyers
    ]

    assert states == ["admitted", "admitted", "waiting"]  # a second's worth, then the rate
