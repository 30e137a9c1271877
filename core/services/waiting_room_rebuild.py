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

from django.db.models import Exists, OuterRef

from core.models import Order, WaitingRoom, WaitingRoomEntry
from core.redis_client import get_redis
from core.waiting_room import room_keys, room_load

CHUNK = 1000  # members per ZADD/HSET of a rebuild


def waiting_room_rebuild(*, event_id: int, now: float) -> bool:
    """Write an event's room into Redis from PostgreSQL; return True when a room was
    written. Called by the gate's rebuild (core/services/gate.py `gate_ensure`), which
    writes the gate first: the room's counter reads the gate's opening and stock.

    For an event without a room it writes {on = 0}, so later calls know without SQL.
    Safe from many processes at once: entries are written as they are in PostgreSQL,
    and the room hash only when no room is on (the first rebuild wins).
    """
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
