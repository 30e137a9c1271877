"""Fixtures of the waiting-room tests: an event whose sale opens at a known time, a room
on it, and buyers joining at times the test chooses (services take `now`)."""

import itertools
from datetime import timedelta

import pytest
from django.utils import timezone

from core.models import User
from core.services.waiting_room import waiting_room_configure, waiting_room_join

_names = itertools.count()


@pytest.fixture
def opens(make_event):
    """The opening (epoch s) of `room_event`'s sale: an hour from now."""
    return (timezone.now() + timedelta(hours=1)).replace(microsecond=0)


@pytest.fixture
def room_event(make_event, opens):
    return make_event(sale_starts_at=opens, total_tickets=1000)


@pytest.fixture
def t0(opens) -> float:
    return opens.timestamp()


@pytest.fixture
def room_on(room_event, t0):
    """Turn the room on with the given settings at `now` (default: an hour before)."""

    def on(*, rate=None, admission_seconds=60, paused=False, now=None):
        waiting_room_configure(
            event_id=room_event.pk,
            rate=rate,
            admission_seconds=admission_seconds,
            paused=paused,
            now=t0 - 3600 if now is None else now,
        )
        return room_event

    return on


@pytest.fixture
def make_buyers(db):
    def make(count: int) -> list[User]:
        start = next(_names) * 100_000
        users = [User(username=f"room{start + i}", role=User.Role.USER) for i in range(count)]
        return User.objects.bulk_create(users)

    return make


@pytest.fixture
def join(room_event):
    def join_(user, now, event=None):
        event_id = (event or room_event).pk
        return waiting_room_join(event_id=event_id, user_id=user.pk, rate=None, now=now)

    return join_
