"""Who gets which number: early joiners a uniformly random place, later ones in order."""

import hashlib
import hmac

import pytest

from core.models import WaitingRoom, WaitingRoomEntry
from core.services.waiting_room import waiting_room_state

pytestmark = pytest.mark.django_db


def spearman(xs: list[int], ys: list[int]) -> float:
    n = len(xs)
    rank_x = {x: i for i, x in enumerate(sorted(xs))}
    rank_y = {y: i for i, y in enumerate(sorted(ys))}
    d2 = sum((rank_x[x] - rank_y[y]) ** 2 for x, y in zip(xs, ys, strict=True))
    return 1 - 6 * d2 / (n * (n * n - 1))


def test_early_joiners_get_a_uniformly_random_place_at_the_opening(room_on, make_buyers, join, t0):
    event = room_on(rate=10)
    buyers = make_buyers(500)
    for i, buyer in enumerate(buyers):  # in arrival order, over the hour before
        entry = join(buyer, t0 - 3000 + i)
        assert entry.created and entry.early
        assert entry.number is None and entry.state == "waiting"

    numbers = [join(buyer, t0 + 1).number for buyer in buyers]

    assert sorted(numbers) == list(range(1, 501))
    assert abs(spearman(list(range(500)), numbers)) <= 0.15
    rows = WaitingRoomEntry.objects.filter(event=event)
    assert rows.count() == 500 and not rows.filter(early=False).exists()


def test_the_early_key_is_an_hmac_of_the_user_under_the_room_secret(room_on, make_buyers, join, t0):
    event = room_on()
    buyer = make_buyers(1)[0]
    join(buyer, t0 - 10)
    secret = WaitingRoom.objects.get(event=event).secret.encode()
    digest = hmac.new(secret, str(buyer.pk).encode(), hashlib.sha1).hexdigest()
    assert WaitingRoomEntry.objects.get(user=buyer).early_key == int(digest[:13], 16)


def test_later_joiners_queue_after_the_early_ones_in_arrival_order(room_on, make_buyers, join, t0):
    room_on(rate=1)
    early, late = make_buyers(5), make_buyers(5)
    for buyer in early:
        join(buyer, t0 - 5)

    numbers = [join(buyer, t0 + i / 10).number for i, buyer in enumerate(late)]

    assert numbers == [6, 7, 8, 9, 10]
    rows = WaitingRoomEntry.objects.filter(user__in=late).order_by("number")
    assert [row.number for row in rows] == numbers and not any(row.early for row in rows)


def test_joining_again_keeps_the_place_before_and_after_the_opening(room_on, make_buyers, join, t0):
    room_on(rate=1)
    buyers = make_buyers(3)
    first = [join(buyer, t0 - 30) for buyer in buyers]
    again = [join(buyer, t0 - 20) for buyer in buyers]
    assert [e.created for e in first] == [True] * 3 and [e.created for e in again] == [False] * 3
    assert all(e.number is None and e.early for e in again)

    opened = [join(buyer, t0 + 0.1).number for buyer in buyers]
    later = [join(buyer, t0 + 0.2).number for buyer in buyers]

    assert opened == later and sorted(opened) == [1, 2, 3]
    assert WaitingRoomEntry.objects.count() == 3


def test_own_state_is_the_joined_place(room_on, make_buyers, join, t0, room_event):
    room_on(rate=1)
    buyer = make_buyers(1)[0]
    joined = join(buyer, t0 + 5)

    state = waiting_room_state(event_id=room_event.pk, user_id=buyer.pk, rate=None, now=t0 + 5)

    assert state.number == joined.number == 1
    assert not state.created and state.state == "admitted"
