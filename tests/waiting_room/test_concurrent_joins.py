"""Joins at once from many threads: distinct numbers, one row per buyer, one place for a
buyer who joins several times at once."""

from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from django.db import connections
from django.utils import timezone

from core.models import WaitingRoomEntry
from core.services.waiting_room import waiting_room_configure, waiting_room_join

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
