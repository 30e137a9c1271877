"""Persisting the waiting room's counter to PostgreSQL (beat, every few seconds), from
which a rebuild after a Redis loss restarts (core/services/waiting_room_rebuild.py),
and the automatic capacity that follows what the sale commits."""

from __future__ import annotations

import math
import time

from django.conf import settings

from core.gate.keys import line_keys
from core.gate.reserve import line_parse_log
from core.models import WaitingRoom
from core.redis_client import get_redis
from core.selectors import events_on_sale
from core.services.gate import gate_ensure
from core.waiting_room import RoomStatus, room_read

LOG_WINDOW_SECONDS = 10.0  # as core/gate/line.py reads the served log


def room_capacity(log: tuple, *, now: float, current: int) -> int:
    """The automatic capacity: what the workers commit per second while they work (the
    served log's orders over its batches' seconds, the last 10 s) times the lag a buyer
    has between being admitted and buying, never below the floor; `current` when
    nothing was committed lately (no measure, so no change)."""
    recent = [entry for entry in log if entry[0] >= now - LOG_WINDOW_SECONDS]
    orders = sum(entry[1] for entry in recent)
    seconds = sum(entry[2] for entry in recent)
    if not orders or seconds <= 0:
        return current
    per_second = orders / seconds
    lag = settings.WAITING_ROOM_ADMISSION_LAG_SECONDS
    return max(settings.WAITING_ROOM_MIN_CAPACITY, math.ceil(per_second * lag))


def waiting_room_persist_all(*, now: float | None = None) -> int:
    """For every room of an event on sale: set its automatic capacity from the commit
    rate, move its counter to now and write the counter to PostgreSQL (from which a
    rebuild restarts). One round trip for the served logs, one Lua call per room."""
    now = time.time() if now is None else now
    rooms = list(WaitingRoom.objects.filter(event__in=events_on_sale()).order_by("event_id"))
    if not rooms:
        return 0
    pipe = get_redis().pipeline(transaction=False)
    for room in rooms:
        pipe.lrange(line_keys(room.event_id)[1], 0, 31)
    logs = pipe.execute()
    changed = []
    for room, log in zip(rooms, logs, strict=True):
        capacity = room_capacity(line_parse_log(log), now=now, current=room.capacity)
        answer = room_read(event_id=room.event_id, now=now, capacity=capacity)
        if answer.status is RoomStatus.MISSING:
            gate_ensure(event_id=room.event_id, now=now)
            answer = room_read(event_id=room.event_id, now=now, capacity=capacity)
        if answer.status in (RoomStatus.MISSING, RoomStatus.CLOSED):
            continue
        room.capacity, room.serving, room.advanced_at = capacity, answer.serving, answer.advanced_at
        room.expired_total, room.admitted_total = answer.expired, answer.admitted_total
        changed.append(room)
    WaitingRoom.objects.bulk_update(
        changed,
        ["capacity", "serving", "advanced_at", "expired_total", "admitted_total"],
        batch_size=500,
    )
    return len(changed)
