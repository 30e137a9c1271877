"""The gate's half of the waitlist: one call of waitlist.lua per step (its header has the
rules); core/services/waitlists.py decides, in PostgreSQL, who is offered what."""

from __future__ import annotations

from dataclasses import dataclass

from core.gate.keys import gate_keys, gate_script, offers_key
from core.redis_client import get_redis


@dataclass(frozen=True)
class WaitlistGate:
    """What the gate says of an event for a waitlist join; `remaining` None: no gate."""

    remaining: int | None
    pool: int
    state: str  # '' (no waitlist), 'on', 'paused'


def _keys(event_id: int) -> list[str]:
    gate, _, inflight = gate_keys(event_id)
    return [gate, inflight, offers_key(event_id)]


def waitlist_gate_read(*, event_id: int) -> WaitlistGate:
    remaining, pool, state = get_redis().hmget(gate_keys(event_id)[0], "remaining", "pool", "wl")
    return WaitlistGate(None if remaining is None else int(remaining), int(pool or 0), state or "")


def waitlist_gate_mode(*, event_id: int, state: str) -> int:
    """Set the waitlist's state in the gate ('' off, 'on', 'paused'); off or paused, the
    pool goes on sale. Return the tickets that did."""
    return int(gate_script("waitlist")(keys=_keys(event_id), args=["mode", state]))


def waitlist_gate_take(*, event_id: int, operation_id: str, now: float) -> int:
    """Take the waitlist's whole pool for an offer round (in flight until
    `waitlist_gate_offer` ends it); return the tickets taken."""
    args = ["take", operation_id, f"{now:.6f}"]
    return int(gate_script("waitlist")(keys=_keys(event_id), args=args))


def waitlist_gate_offer(
    *,
    event_id: int,
    operation_id: str,
    offers: list[tuple[int, int, int]],
    rest: int,
    rest_to: str,
) -> None:
    """Hold `offers` ((user id, tickets, entry id)) and put `rest` back in the pool
    (`rest_to` 'pool') or on sale ('remaining'); end the round's operation."""
    args: list = ["offer", operation_id, rest_to, rest]
    for offer in offers:
        args += list(offer)
    gate_script("waitlist")(keys=_keys(event_id), args=args)


def waitlist_gate_revoke(*, event_id: int, offers: list[tuple[int, int]]) -> int:
    """End `offers` ((user id, entry id)) that are still out; return the tickets they
    held, now back in the pool (or on sale when the waitlist is not on)."""
    args: list = ["revoke"]
    for user_id, entry_id in offers:
        args += [user_id, entry_id]
    return int(gate_script("waitlist")(keys=_keys(event_id), args=args))


def waitlist_gate_offers(*, event_id: int) -> dict[int, tuple[int, int]]:
    """The offers the gate holds: user id -> (tickets, entry id)."""
    raw = get_redis().hgetall(offers_key(event_id))
    offers = {}
    for user, value in raw.items():
        tickets, entry = value.split(":")
        offers[int(user)] = (int(tickets), int(entry))
    return offers
