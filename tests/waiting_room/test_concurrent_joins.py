"""Joins at once from many threads: distinct numbers, one row per buyer, one place for a
buyer who joins several times at once; a join whose row fails leaves no place behind."""

from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from django.db import connections
from django.utils import timezone

from core.exceptions import DatabaseUnavailableError, NotInWaitingRoomError
from core.models import WaitingRoomEntry
from core.services.waiting_room import (
    waiting_room_configure,
    waiting_room_join,
    waiting_room_public,
    waiting_room_state,
)

pytestmark = pytest.mark.django_db(transaction=True)


def test_concurrent_joins_get_distinct_numbers_and_one_place_each(make_event, make_buyers):
    event = make_event(sale_starts_at=timezone.now() - timedelta(minutes=1))
    waiting_room_configure(event_id=event.pk, rate=1, admission_seconds=60, paused=False)
    buyers = make_buyers(40)
    eager = buyers[0]

    def join(user):
        try:
            return user.pk, waiting_room_join(event_id=event.pk, user_id=user.pk, rate=None)
        finally:
            connections.close_all()

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(join, [*buyers, *[eager] * 10]))

    numbers = {}
    for user_id, entry in answers:
        numbers.setdefault(user_id, set()).add(entry.number)
    assert all(len(seen) == 1 for seen in numbers.values())  # one place per buyer
    assert sorted(n for (n,) in numbers.values()) == list(range(1, 41))
    assert sum(entry.created for _, entry in answers) == 40
    rows = WaitingRoomEntry.objects.filter(event=event)
    assert rows.count() == 40
    assert {row.user_id: row.number for row in rows} == {u: n for u, (n,) in numbers.items()}


def test_a_join_whose_row_is_not_written_gives_the_place_back(make_event, make_buyers):
    event = make_event(sale_starts_at=timezone.now() - timedelta(minutes=1))
    waiting_room_configure(event_id=event.pk, rate=1, admission_seconds=60, paused=False)
    (buyer,) = make_buyers(1)
    gone = buyer.pk + 1000  # no such user: the INSERT fails on its foreign key

    with pytest.raises(DatabaseUnavailableError):
        waiting_room_join(event_id=event.pk, user_id=gone, rate=None)

    assert not WaitingRoomEntry.objects.exists()
    assert waiting_room_public(event_id=event.pk).joined == 0
    with pytest.raises(NotInWaitingRoomError):
        waiting_room_state(event_id=event.pk, user_id=gone, rate=None)
    assert waiting_room_join(event_id=event.pk, user_id=buyer.pk, rate=None).created
