"""Keeping the waiting room's Redis copy in step with PostgreSQL: persist and rebuild.

Redis loss. The entries are rows (one per buyer, written at the first join), so a
rebuild puts every buyer back at the same number: early joiners by their early key
(their rank does not change), later ones by the number on their row, and the next
joiner gets max(number) + 1. The counter restarts from what beat last persisted, moved
on by the fixed rate since (never lower), and every number up to it is admitted anew
from the rebuild for `admission_seconds` (nobody admitted loses the admission for good;
some get extra time). Who bought is read back from the orders.
"""

from __future__ import annotations

import math
import time

from django.conf import settings
from django.db.models import Exists, OuterRef

from core.exceptions import NotFoundError
from core.gate.keys import line_keys
from core.gate.reserve import line_parse_log
from core.models import Order, WaitingRoom, WaitingRoomEntry
from core.redis_client import get_redis
from core.selectors import events_on_sale
from core.services.gate import gate_ensure
from core.waiting_room import RoomStatus, room_keys, room_load, room_read

CHUNK = 1000  # members per ZADD/HSET of a rebuild
LOG_WINDOW_SECONDS = 10.0  # as core/line.py reads the served log


def waiting_room_rebuild(*, event_id: int, now: float | None = None) -> bool:
    """Write an event's room (and its gate, if missing) into Redis from PostgreSQL;
    return True when a room was written.

    For an event without a room it writes {on = 0}, so later calls know without SQL.
    Safe from many processes at once: entries are written as they are in PostgreSQL,
    and the room hash only when no room is on (the first rebuild wins).
    """
    now = time.time() if now is None else now
    if not gate_ensure(event_id=event_id):
        raise NotFoundError()
    room = WaitingRoom.objects.filter(event_id=event_id).select_related("event").first()
    if room is None:
        room_load(event_id=event_id, now=now, fields={"on": 0})
        return False
    rows = WaitingRoomEntry.objects.filter(event_id=event_id).annotate(
        bought=Exists(
            Order.objects.filter(event_id=event_id, user_id=OuterRef("user_id")).exclude(
                status=Order.Status.REJECTED
            )
        )
    )
    early, late, bought = [], {}, set()
    for user_id, is_early, key, number, has_bought in rows.values_list(
        "user_id", "early", "early_key", "number", "bought"
    ):
        if is_early:
            early.append((key, str(user_id), has_bought))
        else:
            late[user_id] = number
            if has_bought:
                bought.add(number)
    early.sort()  # Redis's order: by score, then member
    bought.update(rank for rank, entry in enumerate(early, 1) if entry[2])
    _entries_write(event_id, early, late)
    serving = _serving_restored(room, now=now, entries=len(early) + len(late))
    seq = max(late.values()) - len(early) if late else 0
    _bought_write(event_id, bought)
    fields = {
        "on": 1, "rate": "" if room.rate is None else room.rate,
        "window": room.admission_seconds, "paused": int(room.paused),
        "capacity": room.capacity, "secret": room.secret, "serving": serving,
        "advanced_at": f"{now:.6f}", "seq": max(seq, 0), "joined": len(early) + len(late),
        "expired": room.expired_total, "admitted_total": max(room.admitted_total, serving),
        "open": serving - sum(1 for number in bought if number <= serving),
    }  # fmt: skip
    return room_load(event_id=event_id, now=now, fields=fields)


def _serving_restored(room: WaitingRoom, *, now: float, entries: int) -> int:
    """The persisted counter, moved on by the fixed rate since it was persisted."""
    serving = room.serving
    opens = room.event.sale_starts_at.timestamp() if room.event.sale_starts_at else 0.0
    if room.rate and not room.paused and now > opens:
        since = now - max(room.advanced_at, opens)
        serving += max(0, math.floor(since * room.rate))
    return max(room.serving, min(serving, entries))


def _entries_write(event_id: int, early: list, late: dict) -> None:
    keys = room_keys(event_id)
    pipe = get_redis().pipeline(transaction=False)
    for start in range(0, len(early), CHUNK):
        pipe.zadd(keys[1], {user: key for key, user, _ in early[start : start + CHUNK]})
    items = list(late.items())
    for start in range(0, len(items), CHUNK):
        pipe.hset(keys[2], mapping=dict(items[start : start + CHUNK]))
    pipe.execute()


def _bought_write(event_id: int, bought: set[int]) -> None:
    numbers = sorted(bought)
    pipe = get_redis().pipeline(transaction=False)
    for start in range(0, len(numbers), CHUNK):
        pipe.zadd(room_keys(event_id)[5], {n: n for n in numbers[start : start + CHUNK]})
    pipe.execute()


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
            waiting_room_rebuild(event_id=room.event_id, now=now)
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
