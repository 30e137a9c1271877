"""The gate's half of an accept: one Lua call reserves, refuses or replays a purchase.

What crosses the boundary is typed here, once: the request goes in as a `PurchaseAsk`,
reserve.lua's reply comes back as a `GateReply` (a `GateStatus` and the fields that
status carries), and an accept's number in its event's buyers' line is a `Place`, which
is also what the order's card stores (`Place.to_text` / `Place.from_text`). The line as
the reply shows it (`Line`) and the wait it implies (`wait_estimate`) live here too: the
accept answers with them without another round trip. core/gate/line.py has the rest of
the line (polls, commit batches) and its rules.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cached_property

from django.conf import settings

from core.gate.keys import (
    gate_keys,
    gate_script,
    idempotency_key,
    inflight_key,
    key_or_absent,
    line_keys,
    offers_key,
    rate_key,
    room_keys,
)
from core.waiting_room import RoomAnswer, room_retry_after, room_wait_estimate

# Batches older than this (s) are left out of the served rate and of the estimate.
LOG_WINDOW_SECONDS = 10.0
# A commit batch still unfinished after this long (s) died; its line is trusted no more.
BATCH_STALE_SECONDS = 10.0
# The estimate's floor until the event's first batch is measured.
DEFAULT_CAPACITY = 2000.0  # orders per second of committing
DEFAULT_BATCH_SECONDS = 0.1


def _buy_operation_id() -> str:
    return f"buy:{uuid.uuid4().hex}"


@dataclass(frozen=True)
class PurchaseAsk:
    """One purchase request as the gate sees it.

    `rate`: requests the buyer may make on the event, per seconds (None: no limit).
    `operation_id` names the reservation while it is in flight (between its Redis and
    PostgreSQL halves; reconciliation waits for it).
    """

    user_id: int
    event_id: int
    quantity: int
    idempotency_key: str | None = None
    rate: tuple[int, int] | None = None
    operation_id: str = field(default_factory=_buy_operation_id)

    @property
    def fingerprint(self) -> str:
        """What a replay with the same Idempotency-Key must ask for again."""
        return f"{self.event_id}:{self.quantity}"

    @cached_property
    def idem_key(self) -> str:
        """The Redis key of the request's idempotency record ('' without a key)."""
        if not self.idempotency_key:
            return ""
        return idempotency_key(
            event_id=self.event_id, user_id=self.user_id, key=self.idempotency_key
        )


class GateStatus(StrEnum):
    OK = "ok"
    REPLAY = "replay"
    MISSING = "missing"  # no gate for the event (first use, or Redis lost it)
    THROTTLED = "throttled"
    SALE_NOT_OPEN = "sale_not_open"
    SOLD_OUT = "sold_out"
    SOLD_OUT_WAITLIST = "sold_out_waitlist"  # sold out, and the event has a waitlist
    OFFER_EXCEEDED = "offer_exceeded"  # asked for more than the buyer's waitlist offer
    INSUFFICIENT = "insufficient"
    LIMIT = "limit"
    # The event's waiting room (core/waiting_room.py) refuses before the stock is taken:
    NOT_JOINED = "not_joined"  # the buyer never joined it
    NOT_ADMITTED = "not_admitted"  # joined, its number not served yet
    ADMISSION_EXPIRED = "admission_expired"  # admitted, and the admission ran out unused


@dataclass(frozen=True)
class IdempotencyRecord:
    """What an Idempotency-Key's record holds: `p:<fingerprint>` while its request is in
    progress (written by reserve.lua), `o:<order id>:<fingerprint>` once it has an order."""

    fingerprint: str
    order_id: int | None = None

    def to_text(self) -> str:
        if self.order_id is None:
            return f"p:{self.fingerprint}"
        return f"o:{self.order_id}:{self.fingerprint}"

    @classmethod
    def from_text(cls, text: str) -> IdempotencyRecord:
        kind, _, rest = text.partition(":")
        if kind == "p":
            return cls(rest)
        order_id, _, fingerprint = rest.partition(":")
        return cls(fingerprint, int(order_id))


@dataclass(frozen=True)
class Place:
    """An order's number in its event's buyers' line, as the gate gave it at accept.

    Its card stores it as `<event id>:<line name>:<number>`. A place without a line
    (`<event id>::0`) is not known: the position is recounted from PostgreSQL.
    """

    event_id: int
    line: str = ""
    number: int = 0

    def to_text(self) -> str:
        return f"{self.event_id}:{self.line}:{self.number}"

    @classmethod
    def from_text(cls, text: str) -> Place | None:
        """The place a card stores; None for a card without one (written before cards had it)."""
        if not text:
            return None
        event_id, line, number = text.split(":")
        return cls(int(event_id), line, int(number))


@dataclass(frozen=True)
class Line:
    """An event's buyers' line as Redis shows it (core/gate/line.py has its rules)."""

    name: str
    served: int
    trusted: str
    log: tuple[tuple[float, int, float], ...]  # (when, orders, seconds), newest first
    batches: tuple[float, ...]  # when each unfinished batch began

    def position(self, place: Place, *, now: float) -> int | None:
        """Pending orders ahead of `place`; None when this line cannot tell."""
        if not place.line or place.line != self.name or self.trusted != place.line:
            return None
        if any(began < now - BATCH_STALE_SECONDS for began in self.batches):
            return None
        return max(place.number - 1 - self.served, 0)

    def recent(self, now: float) -> list[tuple[float, int, float]]:
        return [entry for entry in self.log if entry[0] >= now - LOG_WINDOW_SECONDS]


def line_parse_log(entries) -> tuple[tuple[float, int, float], ...]:
    """The served log's entries ("<when>:<orders>:<seconds>") as (when, orders, seconds)."""
    parsed = []
    for entry in entries:
        when, orders, seconds = entry.split(":")
        parsed.append((float(when), int(orders), float(seconds)))
    return tuple(parsed)


def wait_estimate(line: Line | None, *, position: int, now: float | None = None) -> float:
    """Seconds until an order with `position` orders ahead is final, from the measured rate."""
    recent = line.recent(time.time() if now is None else now) if line else []
    orders = sum(entry[1] for entry in recent)
    seconds = sum(entry[2] for entry in recent)
    if orders and seconds > 0:
        capacity, batch = orders / seconds, seconds / len(recent)
    else:
        capacity, batch = DEFAULT_CAPACITY, DEFAULT_BATCH_SECONDS
    wait = settings.ORDER_COMMIT_DELAY_SECONDS + batch + position / capacity
    return round(wait, 1)


@dataclass(frozen=True)
class GateReply:
    """reserve.lua's reply; each field is set only with the status that carries it."""

    status: GateStatus
    tickets_left: int | None = None  # OK (after this reservation), INSUFFICIENT
    tickets_allowed: int | None = None  # LIMIT: what the buyer may still buy
    retry_after: int | None = None  # THROTTLED: seconds left in the rate window;
    # NOT_ADMITTED: the estimated wait for admission
    position: int | None = None  # NOT_ADMITTED: numbers still ahead (None: not known yet)
    replay: IdempotencyRecord | None = None  # REPLAY
    place: Place | None = None  # OK
    line: Line | None = None  # OK: the line as it stood at this accept
    offer_entry: int | None = None  # OK: the waitlist entry whose offer it took
    tickets_offered: int | None = None  # OFFER_EXCEEDED


def gate_reserve(ask: PurchaseAsk, *, now: float | None = None) -> GateReply:
    """Reserve `ask.quantity` for the buyer if their request rate on the event, the sale
    window, the tickets left, the event's waiting room (if it has one) and the per-user
    limit allow (one Redis round trip).

    An accept gets its place in the event's line in the same call, and counts as bought
    in the waiting room. `now` (epoch s) is the clock unless a test moves it.
    """
    now = time.time() if now is None else now
    event_id, counter, allowed, period = ask.event_id, "", 0, 0
    if ask.rate:
        allowed, period = ask.rate
        counter = rate_key(event_id=event_id, user_id=ask.user_id, window=int(now // period))
    raw = gate_script("reserve")(
        keys=[
            *gate_keys(event_id),
            key_or_absent(ask.idem_key, event_id),
            key_or_absent(counter, event_id),
            *line_keys(event_id)[1:],
            *room_keys(event_id),
            offers_key(event_id),
        ],
        args=[
            ask.user_id,
            ask.quantity,
            f"{now:.6f}",
            ask.operation_id,
            ask.fingerprint,
            settings.IDEMPOTENCY_KEY_TTL_SECONDS,
            allowed,
            period,
        ],
    )
    return _reply(raw, event_id=event_id, now=now, period=period)


def _reply(raw: list, *, event_id: int, now: float, period: int) -> GateReply:
    """Parse reserve.lua's reply: {status, value} or, for ok, {'ok', remaining, line name,
    number, served, trusted, served log, batch starts, offer's entry}, or for a waiting
    room's refusal {status, 0, the room's reply}."""
    status = GateStatus(raw[0])
    if status is GateStatus.OK:
        name, number, served, trusted, log, batches, entry = raw[2:]
        line = Line(
            name, int(served), trusted, line_parse_log(log), tuple(float(b) for b in batches)
        )
        place = Place(event_id, name, int(number))
        return GateReply(
            status,
            tickets_left=int(raw[1]),
            place=place,
            line=line,
            offer_entry=int(entry) if entry else None,
        )
    if status is GateStatus.OFFER_EXCEEDED:
        return GateReply(status, tickets_offered=int(raw[1]))
    if status is GateStatus.REPLAY:
        return GateReply(status, replay=IdempotencyRecord.from_text(raw[1]))
    if status is GateStatus.INSUFFICIENT:
        return GateReply(status, tickets_left=int(raw[1]))
    if status is GateStatus.LIMIT:
        return GateReply(status, tickets_allowed=int(raw[1]))
    if status is GateStatus.THROTTLED:
        return GateReply(status, retry_after=max(1, int(period - now % period + 0.999)))
    if status is GateStatus.NOT_ADMITTED:
        answer = RoomAnswer.parse(raw[2:], now=now)
        position = None if answer.position is None else max(answer.position, 0)
        wait = room_wait_estimate(answer, now=now)
        return GateReply(status, position=position, retry_after=room_retry_after(wait))
    return GateReply(status)


def gate_release(
    *,
    event_id: int,
    operation_id: str,
    holdings: list[tuple[int, int]],
    idem_key: str = "",
    offer_entry: int | None = None,
) -> bool:
    """Give (user id, quantity) pairs back to the gate and end `operation_id`; return
    True when they went to the waitlist's pool (offers are due: core/services/waitlists.py).

    `offer_entry`: the tickets came from this waitlist offer, which gets them back.
    """
    args: list = [operation_id, offer_entry or ""]
    for user_id, quantity in holdings:
        args += [user_id, quantity]
    keys = [*gate_keys(event_id), key_or_absent(idem_key, event_id), offers_key(event_id)]
    return gate_script("release")(keys=keys, args=args) == 2


def gate_unreserve(
    ask: PurchaseAsk, *, give_back: bool = True, offer_entry: int | None = None
) -> None:
    """End the reservation of `ask`; its tickets go back (to the waitlist offer they came
    from, if any) unless `give_back` is False (the order may exist: the gate errs towards
    refusing until reconciliation)."""
    holdings = [(ask.user_id, ask.quantity)] if give_back else []
    gate_release(
        event_id=ask.event_id,
        operation_id=ask.operation_id,
        holdings=holdings,
        idem_key=ask.idem_key,
        offer_entry=offer_entry,
    )


def gate_recorded(pipe, ask: PurchaseAsk, *, order_id: int) -> None:
    """Add to `pipe` that the reservation of `ask` is now order `order_id`: its
    idempotency record names the order, and its flight ends."""
    if ask.idem_key:
        record = IdempotencyRecord(ask.fingerprint, order_id)
        pipe.set(ask.idem_key, record.to_text(), keepttl=True)
    pipe.zrem(inflight_key(ask.event_id), ask.operation_id)


def gate_number_return(place: Place, *, outcome_unknown: bool = False) -> None:
    """Tell the line that the accept numbered `place` recorded no order (its number is
    served at once) or, `outcome_unknown`, may have: the line is then trusted no more.

    One call of line.lua ('skip' or 'doubt'; core/gate/line.py has the rules).
    """
    mode = "doubt" if outcome_unknown else "skip"
    gate_script("line")(keys=list(line_keys(place.event_id)), args=[mode, place.line])
