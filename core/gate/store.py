"""Writes to the gate from outside a purchase: builds and corrections from PostgreSQL
(core/services/gate.py), event changes (core/services/events.py), reads for operations."""

from __future__ import annotations

import time
from dataclasses import dataclass

from core.gate.keys import drain_flag_key, gate_keys, gate_script, offers_key, room_keys
from core.gate.reserve import GateStatus
from core.redis_client import get_redis

# An operation older than this is taken to have died; reconciliation stops waiting for it.
INFLIGHT_STALE_SECONDS = 60


@dataclass(frozen=True)
class GateSnapshot:
    """What PostgreSQL says the gate of one event should hold.

    The free tickets (total - sold - pending - offered) are on sale (`remaining`) or, while
    the event's waitlist is on and someone waits on it, in its `pool`, to be offered.
    """

    remaining: int
    starts: float
    ends: float
    limit: int
    held_by_user: dict[int, int]
    pool: int = 0
    waitlist: str = ""  # '' (none), 'on' or 'paused'
    offers: tuple[tuple[int, int, int], ...] = ()  # (user id, tickets, entry id)

    @property
    def free(self) -> int:
        return self.remaining + self.pool

    def as_args(self) -> list:
        args: list = [self.remaining, self.starts, self.ends, self.limit]
        args += [self.pool, self.waitlist, len(self.offers)]
        for offer in self.offers:
            args += list(offer)
        for user_id, held in self.held_by_user.items():
            args += [user_id, held]
        return args


@dataclass(frozen=True)
class AdjustReply:
    """adjust.lua's reply: OK, INSUFFICIENT (nothing changed) or MISSING (no gate)."""

    status: GateStatus
    remaining: int  # tickets free (on sale + the waitlist's pool) after the change (OK),
    # or as they were (INSUFFICIENT)


def gate_operation_begin(*, event_id: int, operation_id: str, delta: int = 0) -> AdjustReply:
    """Mark an operation in flight, taking `-delta` tickets out first when delta < 0."""
    gate, _, inflight = gate_keys(event_id)
    status, remaining = gate_script("adjust")(
        keys=[gate, inflight], args=[min(delta, 0), operation_id, "begin", "", "", ""]
    )
    return AdjustReply(GateStatus(status), int(remaining))


def gate_operation_end(
    *,
    event_id: int,
    operation_id: str,
    delta: int = 0,
    window: tuple[float, float, int] | None = None,
) -> AdjustReply:
    """End an operation, adding `delta` tickets and storing a new sale window/limit."""
    gate, _, inflight = gate_keys(event_id)
    starts, ends, limit = window if window else ("", "", "")
    status, remaining = gate_script("adjust")(
        keys=[gate, inflight], args=[delta, operation_id, "end", starts, ends, limit]
    )
    return AdjustReply(GateStatus(status), int(remaining))


def gate_load(*, event_id: int, snapshot: GateSnapshot, expected_seq: str | None = None) -> bool:
    """Write the gate from `snapshot`: when missing (init) or unchanged since `expected_seq`."""
    mode = "init" if expected_seq is None else "reconcile"
    written = gate_script("load")(
        keys=[*gate_keys(event_id), offers_key(event_id)],
        args=[mode, expected_seq or "", *snapshot.as_args()],
    )
    return bool(written)


@dataclass(frozen=True)
class GateObservation:
    """The gate as a reconciliation reads it, before PostgreSQL."""

    seq: str | None  # None: no gate
    live: int  # operations in flight
    free: int | None  # tickets on sale + the waitlist's pool
    offers: tuple[tuple[int, int, int], ...]  # (user id, tickets, entry id), sorted


def gate_observe(*, event_id: int) -> GateObservation:
    """Read the gate for a reconciliation, dropping dead operations first."""
    gate, _, inflight = gate_keys(event_id)
    pipe = get_redis().pipeline(transaction=True)
    pipe.zremrangebyscore(inflight, "-inf", time.time() - INFLIGHT_STALE_SECONDS)
    pipe.hget(gate, "seq")
    pipe.zcard(inflight)
    pipe.hmget(gate, "remaining", "pool")
    pipe.hgetall(offers_key(event_id))
    _, seq, live, (remaining, pool), offers = pipe.execute()
    free = None if remaining is None else int(remaining) + int(pool or 0)
    held = sorted((int(user), *map(int, value.split(":"))) for user, value in offers.items())
    return GateObservation(seq, live, free, tuple(held))


def gate_remaining(*, event_id: int) -> int | None:
    """Tickets on sale (not counting the waitlist's pool); None when the gate is missing."""
    value = get_redis().hget(gate_keys(event_id)[0], "remaining")
    return None if value is None else int(value)


def gate_held(*, event_id: int, user_id: int) -> int:
    return int(get_redis().hget(gate_keys(event_id)[1], str(user_id)) or 0)


def gate_forget(*, event_id: int) -> None:
    """Drop an event's gate and waiting room (the event is gone); idempotency records
    expire by themselves."""
    get_redis().delete(
        *gate_keys(event_id), *room_keys(event_id), drain_flag_key(event_id), offers_key(event_id)
    )
