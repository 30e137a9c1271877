"""Cards: JSON copies in Redis of what the hot reads answer (an order, an event).

A poll or an event read answered from a card costs one Redis GET instead of a SQL query
and an ORM model (0.6-1 ms of CPU per read, docs/benchmarks). PostgreSQL stays the
authority; a missing card is rebuilt from it. Two kinds of writers keep cards true:

- The services that change a fact write the new card (orders: commit, cancel, abandon)
  or a short tombstone (events: update, delete, cancel) unconditionally, right after
  their transaction commits.
- Readers that rebuild a card from PostgreSQL, and the purchase that creates a pending
  order, write only where no card exists (SET NX): a reader that saw the old row can
  never overwrite what a writer put there after it.

So a card is stale only when a writer's Redis write failed, and then for no longer than
its lifetime: `ORDER_PENDING_CARD_SECONDS` (a final order read as pending),
`EVENT_CARD_SECONDS` (sold counts; commits do not touch event cards, their figures may
lag by this much). Final order cards live `ORDER_FINAL_CARD_SECONDS`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import orjson
import redis
from django.conf import settings

from core.gate.reserve import Place
from core.redis_client import get_redis

logger = logging.getLogger(__name__)

# The bodies below have the fields and formats of api.serializers.OrderOutputSerializer
# and EventOutputSerializer (tests/api/test_hot_paths.py holds them equal).
_TOMBSTONE = "-"
_TOMBSTONE_SECONDS = 2
_DUMPS = orjson.OPT_UTC_Z


def _order_key(order_id: int) -> str:
    return f"order:{order_id}"


def _event_key(event_id: int) -> str:
    return f"event:{{ev:{event_id}}}:card"


def _order_body(
    *, id, event_id, quantity, status, reason, created_at, updated_at, finalized_at
) -> bytes:
    return orjson.dumps(
        {
            "id": id,
            "status": status,
            "event": event_id,
            "quantity": quantity,
            "reason": reason,
            "created_at": created_at,
            "updated_at": updated_at,
            "finalized_at": finalized_at,
        },
        option=_DUMPS,
    )


def order_card(*, user_id: int, place: Place | None = None, **fields) -> str:
    """`<owner id>|<status>|<place>|<JSON>`: who may read it, whether to poll again,
    where it stands in its event's line, the body.

    `place` (pending orders only): as the gate gave it at accept, in `Place`'s text
    (core/gate/reserve.py). `fields`: id, event_id, quantity, status, reason,
    created_at, updated_at, finalized_at.
    """
    text = place.to_text() if place else ""
    return f"{user_id}|{fields['status']}|{text}|{_order_body(**fields).decode()}"


def _fields(order) -> dict:
    return {
        "id": order.pk,
        "event_id": order.event_id,
        "quantity": order.quantity,
        "status": order.status,
        "reason": order.reason,
        "created_at": order.created_at,
        "updated_at": order.updated_at,
        "finalized_at": order.finalized_at,
    }


def order_card_of(order, *, place: Place | None = None) -> str:
    """The card of an Order instance (a pending one without `place`: number unknown)."""
    if place is None and order.status == "pending":
        place = Place(order.event_id)
    return order_card(user_id=order.user_id, place=place, **_fields(order))


def order_json(order) -> bytes:
    """The API's JSON of an Order instance (OrderOutputSerializer's shape)."""
    return _order_body(**_fields(order))


def order_card_parse(card: str) -> tuple[int, str, bytes, Place | None]:
    """(owner id, status, JSON body, place) of a card.

    A card written before cards had a place (`<owner>|<status>|<JSON>`, alive at most
    ORDER_FINAL_CARD_SECONDS after an upgrade) reads with no place; so does a final one.
    """
    owner, status, rest = card.split("|", 2)
    if rest.startswith("{"):
        return int(owner), status, rest.encode(), None
    place, body = rest.split("|", 1)
    return int(owner), status, body.encode(), Place.from_text(place)


def order_card_read(*, order_id: int) -> str | None:
    return get_redis().get(_order_key(order_id))


def _order_ttl(status: str) -> int:
    if status == "pending":
        return settings.ORDER_PENDING_CARD_SECONDS
    return settings.ORDER_FINAL_CARD_SECONDS


def order_card_fill(*, order_id: int, card: str, pipe=None) -> None:
    """Store a card built from what PostgreSQL said, unless a writer has put one since."""
    status = card.split("|", 2)[1]
    (pipe or get_redis()).set(_order_key(order_id), card, nx=True, ex=_order_ttl(status))


def order_cards_write(cards: Iterable[tuple[int, str]]) -> None:
    """Replace the cards of orders whose state just changed (after the commit).

    The change is committed already, so a Redis failure is logged, not raised: the old
    card then lives out its lifetime.
    """
    try:
        pipe = get_redis().pipeline(transaction=False)
        for order_id, card in cards:
            pipe.set(_order_key(order_id), card, ex=_order_ttl(card.split("|", 2)[1]))
        pipe.execute()
    except redis.RedisError:
        logger.warning("order cards not written: Redis unavailable")


def event_card(event) -> bytes:
    return orjson.dumps(
        {
            "id": event.pk,
            "name": event.name,
            "description": event.description,
            "venue": event.venue,
            "date": event.date,
            "total_tickets": event.total_tickets,
            "tickets_sold": event.tickets_sold,
            "tickets_available": event.total_tickets - event.tickets_sold,
            "sale_starts_at": event.sale_starts_at,
            "sale_ends_at": event.sale_ends_at,
            "max_tickets_per_user": event.max_tickets_per_user,
            "created_at": event.created_at,
            "updated_at": event.updated_at,
        },
        option=_DUMPS,
    )


def event_card_read(*, event_id: int) -> bytes | None:
    """The cached body, or None (absent, or dropped a moment ago by a writer)."""
    card = get_redis().get(_event_key(event_id))
    return None if card is None or card == _TOMBSTONE else card.encode()


def event_card_fill(*, event_id: int, body: bytes) -> None:
    get_redis().set(_event_key(event_id), body.decode(), nx=True, ex=settings.EVENT_CARD_SECONDS)


def event_card_drop(*, event_id: int) -> None:
    """Make readers go to PostgreSQL for a moment, and refuse fills from older reads.

    Called after the change committed: a Redis failure is logged, not raised.
    """
    try:
        get_redis().set(_event_key(event_id), _TOMBSTONE, ex=_TOMBSTONE_SECONDS)
    except redis.RedisError:
        logger.warning("event card not dropped: Redis unavailable", extra={"event_id": event_id})
