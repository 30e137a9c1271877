"""The waiting room's services: an Admin's settings, a buyer's join and own state, and
the public state every buyer shares.

One writer per fact: the Admin's settings go to PostgreSQL and the room's Redis hash
here; the entries to PostgreSQL here (first join: one INSERT) and to Redis in the join's
Lua call; the counter is Redis's (core/waiting_room.py), persisted by beat and rebuilt
from PostgreSQL after a loss (core/services/waiting_room_rebuild.py). Every function
takes `now` (epoch s; the clock when None) so tests can move time.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

import redis
from django.conf import settings
from django.db import DatabaseError, transaction

from core.exceptions import (
    DatabaseUnavailableError,
    NotFoundError,
    NotInWaitingRoomError,
    ThrottledError,
    WaitingRoomClosedError,
    WaitingRoomUnavailableError,
)
from core.models import Event, WaitingRoom, WaitingRoomEntry
from core.services.gate import gate_ensure
from core.waiting_room import (
    RoomAnswer,
    RoomStatus,
    room_admin,
    room_join,
    room_read,
    room_retry_after,
    room_wait_estimate,
)


@dataclass(frozen=True)
class EntryState:
    """A buyer's own state, as the join and own-state endpoints answer it."""

    number: int | None
    early: bool
    position: int | None
    state: str  # waiting | admitted | expired | sold_out
    admitted_until: float | None
    estimated_wait_seconds: float | None
    created: bool
    retry_after: int | None  # while waiting

    @classmethod
    def of(cls, answer: RoomAnswer) -> EntryState:
        wait = room_wait_estimate(answer, now=answer.at)
        waiting = answer.status is RoomStatus.WAITING
        return cls(
            number=answer.number,
            early=answer.early,
            position=None if answer.position is None else max(answer.position, 0),
            state=str(answer.status),
            admitted_until=answer.admitted_until if answer.status is RoomStatus.ADMITTED else None,
            estimated_wait_seconds=wait,
            created=answer.created,
            retry_after=room_retry_after(wait) if waiting else None,
        )


def _ask(event_id: int, now: float, call: Callable[[], RoomAnswer]) -> RoomAnswer:
    """Run a room call; rebuild the room (and gate) once when Redis lost them."""
    try:
        answer = call()
        if answer.status is RoomStatus.MISSING:
            _rebuild(event_id, now)
            answer = call()
    except redis.RedisError:
        raise WaitingRoomUnavailableError() from None
    if answer.status is RoomStatus.MISSING:
        raise WaitingRoomUnavailableError()
    if answer.status is RoomStatus.CLOSED:
        raise WaitingRoomClosedError()
    return answer


def _rebuild(event_id: int, now: float) -> None:
    """Rebuild the event's gate and room from PostgreSQL (Redis lost them)."""
    if not gate_ensure(event_id=event_id, now=now):
        raise NotFoundError()


def _throttled(rate: tuple[int, int], now: float) -> ThrottledError:
    period = rate[1]
    return ThrottledError(retry_after=max(1, int(period - now % period + 0.999)))


def waiting_room_join(
    *, event_id: int, user_id: int, rate: tuple[int, int] | None, now: float | None = None
) -> EntryState:
    """Give a buyer a place in the event's room, or answer the place it has.

    The first join is one Lua call and one INSERT (the entry, durable for a rebuild);
    a repeat join is one Lua call and no SQL. If the INSERT fails, the place is given
    back and nothing was done. `rate` (requests, per seconds) is counted in the call.
    """
    now = time.time() if now is None else now
    answer = _ask(
        event_id, now, lambda: room_join(event_id=event_id, user_id=user_id, now=now, rate=rate)
    )
    if answer.status is RoomStatus.THROTTLED:
        raise _throttled(rate, now)
    if answer.created:
        _entry_record(event_id=event_id, user_id=user_id, answer=answer, now=now)
    return EntryState.of(answer)


def _entry_record(*, event_id: int, user_id: int, answer: RoomAnswer, now: float) -> None:
    early = answer.early_key is not None
    entry = WaitingRoomEntry(
        event_id=event_id,
        user_id=user_id,
        early=early,
        early_key=answer.early_key,
        number=None if early else answer.number,
    )
    try:
        # A row already there (the same buyer's concurrent first join lost its race in
        # Redis only after a rebuild) keeps its place: nothing to add.
        WaitingRoomEntry.objects.bulk_create([entry], ignore_conflicts=True)
    except DatabaseError:
        try:
            room_admin(event_id=event_id, mode="leave", now=now, args=(user_id,))
        except redis.RedisError:
            pass  # the place stays in Redis only; a rebuild drops it
        raise DatabaseUnavailableError() from None


def waiting_room_state(
    *, event_id: int, user_id: int, rate: tuple[int, int] | None, now: float | None = None
) -> EntryState:
    """A buyer's own state: one Lua call (which also moves the counter), no SQL."""
    now = time.time() if now is None else now
    answer = _ask(
        event_id,
        now,
        lambda: room_read(event_id=event_id, user_id=user_id, now=now, rate=rate),
    )
    if answer.status is RoomStatus.THROTTLED:
        raise _throttled(rate, now)
    if answer.status is RoomStatus.NOT_JOINED:
        raise NotInWaitingRoomError()
    return EntryState.of(answer)


def waiting_room_public(*, event_id: int, now: float | None = None) -> RoomAnswer:
    """The room's public state (the same for every buyer): one Lua call, no SQL."""
    now = time.time() if now is None else now
    return _ask(event_id, now, lambda: room_read(event_id=event_id, now=now))


def waiting_room_configure(
    *,
    event_id: int,
    rate: int | None,
    admission_seconds: int,
    paused: bool,
    now: float | None = None,
) -> tuple[WaitingRoom, bool]:
    """Turn an event's room on, or re-rate, pause or resume it (any time, also during
    the sale); return the room and whether it was created.

    PostgreSQL first (the event row locked, so two Admins' changes apply in turn), then
    Redis: the counter moves under the old settings up to `now` before the new ones
    apply, so a re-rate keeps what was served and a pause counts no time.
    """
    now = time.time() if now is None else now
    fields = {"rate": rate, "admission_seconds": admission_seconds, "paused": paused}
    with transaction.atomic():
        if not Event.objects.select_for_update(no_key=True).filter(pk=event_id).exists():
            raise NotFoundError()
        room, created = WaitingRoom.objects.get_or_create(
            event_id=event_id,
            defaults={
                **fields,
                "secret": secrets.token_hex(32),
                "capacity": settings.WAITING_ROOM_MIN_CAPACITY,
                "advanced_at": now,
            },
        )
        if not created:
            for name, value in fields.items():
                setattr(room, name, value)
            room.save(update_fields=[*fields, "updated_at"])
    args = ("" if rate is None else rate, admission_seconds, int(paused), room.capacity,
            room.secret, int(created))  # fmt: skip
    try:
        if room_admin(event_id=event_id, mode="on", now=now, args=args) == "missing":
            _rebuild(event_id, now)
            room_admin(event_id=event_id, mode="on", now=now, args=args)
    except redis.RedisError:
        raise WaitingRoomUnavailableError() from None
    return room, created


def waiting_room_close(*, event_id: int, now: float | None = None) -> None:
    """Turn an event's room off: its entries go, and the event sells as without one."""
    now = time.time() if now is None else now
    with transaction.atomic():
        deleted, _ = WaitingRoom.objects.filter(event_id=event_id).delete()
        WaitingRoomEntry.objects.filter(event_id=event_id).delete()
    try:
        # Also when there was no row: a retry after Redis failed here turns it off.
        room_admin(event_id=event_id, mode="off", now=now)
    except redis.RedisError:
        raise WaitingRoomUnavailableError() from None
    if not deleted:
        raise WaitingRoomClosedError()
