"""The waiting room in Redis: each event's counter, its buyers' numbers and admissions.

PostgreSQL keeps the rooms and every buyer's entry (core.models.WaitingRoom,
WaitingRoomEntry); Redis keeps a copy rebuilt from them after a loss
(core/services/waiting_room_rebuild.py) and the counter, advanced lazily inside the Lua
call of every room request. The scripts are core/gate/room.lua, a library of local
functions, followed by an entry script (core/gate/room_join.lua, room_state.lua,
room_admin.lua, room_load.lua). The key layout is in core/gate/room.lua's header; every
key is in the event's slot `{ev:N}`, beside the gate's.

The counter. Every number <= `serving` is admitted. With a fixed rate r, serving moves
by floor(elapsed * r) and `advanced_at` by exactly what that consumed (no drift); not
while paused, before the opening (the gate's `starts`) or at sold out (the gate's
`remaining` <= 0), which leave nothing banked. Automatic (rate null): serving moves so
that `open` (admitted, not bought, not expired) stays <= `capacity`. In both, serving
never passes the number of entries (a caught-up fixed-rate room banks at most one
second, so a new joiner is admitted at once); each admission range expires
`admission_seconds` after it was given, and its numbers that bought nothing are added
to serving (an admission that expires unused lets the next buyer in).

The purchase's admission check, inside the gate's reserve call (core/gate/reserve.lua,
registered after this library: core/gate/keys.py). The room's six keys follow the
gate's seven (KEYS[8..13]). After the rate limit, the idempotency replay, the sale
window and the sold-out check (their answers do not depend on the room), before the
stock is taken, `room_admission_of` places the buyer:
  'missing'    -> 'missing': the caller rebuilds the gate AND the room (gate_ensure,
                  which writes {on = 0} for an event without a room) and asks again.
                  A missing room is never read as "no room".
  'closed'     -> no waiting room: on exactly as without one.
  'admitted'   -> on; once the stock is taken, `room_bought`: the admission no longer
                  holds a place (automatic admission lets the next in).
  'not_joined' -> 'not_joined' (409 not_in_waiting_room).
  'waiting'    -> 'not_admitted' + room_reply (409 not_admitted_yet, position and
                  Retry-After from `room_wait_estimate`).
  'expired'    -> 'admission_expired' + room_reply (409 admission_expired).
Still one Lua call, one round trip; an event without a room pays one HMGET of its
{on = 0} hash. The commit (core/services/orders.py) does not check admission again: an
order accepted while its buyer was admitted is honoured, however long its commit takes.
A reservation given back after the accept (the INSERT failed) leaves its number counted
as bought: the next buyer was let in already, and the buyer may retry while admitted.
"""

from __future__ import annotations

import enum
import math
import time
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from django.conf import settings

from core.gate.keys import gate_keys, room_keys
from core.redis_client import get_redis

_LUA_DIR = Path(__file__).resolve().parent / "gate"


def room_rate_key(*, event_id: int, user_id: int, window: int) -> str:
    return f"room:{{ev:{event_id}}}:rate:{user_id}:{window}"


def room_script(body: str):
    """Register core/gate/room.lua followed by `body` on the current client."""
    return _registered(body, get_redis())


@cache
def _registered(body: str, client):
    # Keyed by the client too: a changed REDIS_URL (tests) builds a new client.
    return client.register_script((_LUA_DIR / "room.lua").read_text() + "\n" + body)


@cache
def _body(name: str) -> str:
    return (_LUA_DIR / f"room_{name}.lua").read_text()


class RoomStatus(enum.StrEnum):
    OK = "ok"  # the public state
    THROTTLED = "throttled"
    MISSING = "missing"
    CLOSED = "closed"
    NOT_JOINED = "not_joined"
    WAITING = "waiting"
    ADMITTED = "admitted"
    EXPIRED = "expired"
    SOLD_OUT = "sold_out"


@dataclass(frozen=True)
class RoomAnswer:
    """One reply of core/gate/room.lua's room_reply, parsed once."""

    status: RoomStatus
    number: int | None  # None: not joined, or early before the opening
    early: bool
    position: int | None  # number - serving (<= 0: admitted)
    admitted_until: float | None  # epoch s, while admitted
    serving: int
    rate: int | None  # None: automatic
    capacity: int
    paused: bool
    opens: float  # epoch s; 0: no opening time
    sold_out: bool
    joined: int
    early_count: int | None  # None before the opening
    admitted_recent: int  # numbers admitted in the last 10 s
    advanced_at: float
    expired: int
    admitted_total: int
    admitted_not_bought: int
    created: bool
    early_key: int | None
    at: float  # the `now` the call moved the room to

    @classmethod
    def parse(cls, reply: list, *, now: float) -> RoomAnswer:
        (status, number, early, position, until, serving, rate, capacity, paused, opens,
         sold_out, joined, early_count, recent, advanced_at, expired, admitted_total,
         admitted_open, created, early_key) = reply  # fmt: skip
        return cls(
            status=RoomStatus(status),
            number=_int_or_none(number),
            early=early == 1,
            position=_int_or_none(position),
            admitted_until=float(until) if until else None,
            serving=int(serving),
            rate=_int_or_none(rate),
            capacity=int(capacity),
            paused=paused == "1",
            opens=float(opens),
            sold_out=sold_out == 1,
            joined=int(joined),
            early_count=_int_or_none(early_count),
            admitted_recent=int(recent),
            advanced_at=float(advanced_at),
            expired=int(expired),
            admitted_total=int(admitted_total),
            admitted_not_bought=int(admitted_open),
            created=created == 1,
            early_key=_int_or_none(early_key),
            at=now,
        )


def _int_or_none(value) -> int | None:
    return None if value in ("", None) else int(value)


def _call_keys(event_id: int, counter: str) -> list[str]:
    keys = room_keys(event_id)
    return [*keys, gate_keys(event_id)[0], counter or f"{keys[0]}:-"]


def _counter(event_id: int, user_id: int, now: float, rate: tuple[int, int] | None):
    if not rate:
        return "", 0, 0
    allowed, period = rate
    window = int(now // period)
    return room_rate_key(event_id=event_id, user_id=user_id, window=window), allowed, period


def room_join(
    *, event_id: int, user_id: int, now: float, rate: tuple[int, int] | None
) -> RoomAnswer:
    """Give `user_id` a place (or read the one it has), counting the request in `rate`."""
    counter, allowed, period = _counter(event_id, user_id, now, rate)
    reply = room_script(_body("join"))(
        keys=_call_keys(event_id, counter), args=[user_id, f"{now:.6f}", allowed, period]
    )
    return RoomAnswer.parse(reply, now=now)


def room_read(
    *,
    event_id: int,
    now: float,
    user_id: int | None = None,
    rate: tuple[int, int] | None = None,
    capacity: int | None = None,
) -> RoomAnswer:
    """Advance the room to `now` and read it: a buyer's own state, or (no user) the
    public state; `capacity` sets the automatic capacity first."""
    counter, allowed, period = ("", 0, 0)
    if user_id is not None:
        counter, allowed, period = _counter(event_id, user_id, now, rate)
    reply = room_script(_body("state"))(
        keys=_call_keys(event_id, counter),
        args=["" if user_id is None else user_id, f"{now:.6f}", allowed, period,
              "" if capacity is None else capacity],
    )  # fmt: skip
    return RoomAnswer.parse(reply, now=now)


def room_admin(*, event_id: int, mode: str, now: float, args: tuple = ()) -> str:
    """Run one mode of core/gate/room_admin.lua ('on', 'off', 'leave', 'bought')."""
    return room_script(_body("admin"))(
        keys=_call_keys(event_id, "")[:7], args=[mode, f"{now:.6f}", *args]
    )


def room_bought(*, event_id: int, user_id: int, now: float | None = None) -> str:
    """Record that an admitted buyer bought ('ok', 'not_admitted', 'closed', 'missing').

    A purchase does this inside the gate's reserve call; this is for tests and tools.
    """
    now = time.time() if now is None else now
    return room_admin(event_id=event_id, mode="bought", now=now, args=(user_id,))


def room_load(*, event_id: int, now: float, fields: dict) -> bool:
    """Write the room hash from a rebuild unless a room is on; True when written."""
    args: list = [f"{now:.6f}"]
    for name, value in fields.items():
        args += [name, value]
    return bool(room_script(_body("load"))(keys=_call_keys(event_id, "")[:7], args=args))


RECENT_SECONDS = 10.0  # as room.lua's room_recent


def room_admitted_recent(ranges: list[str], *, now: float) -> int:
    """Numbers admitted by the ranges ('a:b:t', room.lua) that began in the last 10 s."""
    admitted = 0
    for member in ranges:
        first, last, began = member.split(":")
        if float(began) >= now - RECENT_SECONDS:
            admitted += int(last) - int(first) + 1
    return admitted


def room_wait_estimate(answer: RoomAnswer, *, now: float) -> float | None:
    """Seconds until a waiting buyer is admitted: the time to the opening, then its
    position at the room's pace (the fixed rate; automatic: the admissions of the last
    10 s, or capacity per admission lag before any). 0 when admitted, None when over."""
    if answer.status is RoomStatus.ADMITTED:
        return 0.0
    if answer.status is not RoomStatus.WAITING:
        return None
    before = max(0.0, answer.opens - now)
    if answer.position is None:  # early, before the opening: the place is decided then
        return round(before, 1)
    pace = answer.rate or answer.admitted_recent / RECENT_SECONDS
    if not pace:
        pace = max(answer.capacity, 1) / settings.WAITING_ROOM_ADMISSION_LAG_SECONDS
    return round(before + max(answer.position, 0) / pace, 1)


def room_retry_after(wait: float | None) -> int:
    """Retry-After for a waiting buyer: the estimated wait, within [1, the maximum]."""
    if wait is None:
        return settings.WAITING_ROOM_MAX_RETRY_AFTER
    return min(max(math.ceil(wait), 1), settings.WAITING_ROOM_MAX_RETRY_AFTER)
