"""Reads. Views and tasks call these instead of building querysets themselves.

The waitlist's reads are in core/selectors/waitlists.py, importable from here too.
"""

import logging
from datetime import datetime, timedelta

import redis
from django.conf import settings
from django.db.models import F, OuterRef, Q, QuerySet, Subquery, Sum
from django.db.models.functions import Coalesce
from django.utils import timezone

from core import cards
from core.exceptions import NotFoundError
from core.gate.line import order_standing, with_place
from core.gate.store import GateSnapshot
from core.models import Event, Order, TopEvent, Waitlist, WaitlistEntry
from core.selectors.waitlists import (  # noqa: F401 - the waitlist's reads, from here too
    WaitlistEntryView,
    access_waitlist_entry,
    offers_out,
    waitlist_figures,
)

logger = logging.getLogger(__name__)


def event_list(
    *, when: str | None = None, search: str | None = None, ordering: str = "date"
) -> QuerySet[Event]:
    """List events; `when` is 'upcoming' or 'past', `ordering` 'date' or '-date'."""
    events = Event.objects.all()
    now = timezone.now()
    if when == "upcoming":
        events = events.filter(date__gte=now)
    elif when == "past":
        events = events.filter(date__lt=now)
    if search:
        events = events.filter(name__icontains=search)
    return events.order_by(ordering, "id" if ordering == "date" else "-id")


def event_get(*, event_id: int) -> Event:
    try:
        return Event.objects.get(pk=event_id)
    except Event.DoesNotExist:
        raise NotFoundError("No event with this id.") from None


def access_order(*, order_id: int, user_id: int, is_admin: bool) -> Order:
    """Return the order if the caller may see it; another user's order is 'not found'."""
    orders = Order.objects.all() if is_admin else Order.objects.filter(user_id=user_id)
    try:
        return orders.get(pk=order_id)
    except Order.DoesNotExist:
        raise NotFoundError("No order with this id.") from None


def event_card_get(*, event_id: int) -> bytes:
    """Return the event's JSON (the API's shape), from its card in Redis when there is one.

    One Redis GET instead of a query and a model (see core/cards.py for how cards stay
    true); without Redis, the answer comes from PostgreSQL.
    """
    body = _quietly(cards.event_card_read, event_id=event_id)
    if body is None:
        body = cards.event_card(event_get(event_id=event_id))
        _quietly(cards.event_card_fill, event_id=event_id, body=body)
    return body


def access_order_card(
    *, order_id: int, user_id: int, is_admin: bool
) -> tuple[str, bytes, float | None]:
    """Return (status, JSON, estimated wait) of an order the caller may see, from its card
    when there is one.

    A pending order's JSON carries its `position` and `estimated_wait_seconds`
    (core/gate/line.py: one more Redis round trip, and a query when the line cannot
    tell); a final one carries neither and its wait is None. Another user's order is
    'not found', as in `access_order`.
    """
    card = _quietly(cards.order_card_read, order_id=order_id)
    order = None
    if card is None:
        order = access_order(order_id=order_id, user_id=user_id, is_admin=is_admin)
        card = cards.order_card_of(order)
    owner, status, body, place = cards.order_card_parse(card)
    if owner != user_id and not is_admin:
        raise NotFoundError("No order with this id.")
    standing = order_standing(order_id=order_id, place=place) if status == "pending" else None
    if order is not None:
        # Rebuilt from PostgreSQL: the card gets the place the recount found, if any.
        better = standing and standing.place
        card = cards.order_card_of(order, place=better) if better else card
        _quietly(cards.order_card_fill, order_id=order_id, card=card)
    if standing is None:
        return status, body, None
    return (
        status,
        with_place(body, position=standing.position, estimate=standing.estimate),
        standing.estimate,
    )


def _quietly(read_or_fill, **kwargs):
    """A card operation whose failure only means going to PostgreSQL instead."""
    try:
        return read_or_fill(**kwargs)
    except redis.RedisError:
        logger.warning(
            "card unavailable: Redis unavailable",
            extra={k: v for k, v in kwargs.items() if k.endswith("_id")},
        )
        return None


def order_list(
    *, user_id: int, is_admin: bool, event_id: int | None = None, status: str | None = None
) -> QuerySet[Order]:
    """Newest first: the caller's orders, or every order (filterable) for an Admin."""
    orders = Order.objects.all() if is_admin else Order.objects.filter(user_id=user_id)
    if is_admin and event_id is not None:
        orders = orders.filter(event_id=event_id)
    if is_admin and status:
        orders = orders.filter(status=status)
    return orders.order_by("-created_at", "-id")


def _epoch(value) -> float:
    return value.timestamp() if value else 0.0


def event_sale_window(*, event: Event) -> tuple[float, float, int]:
    """Return the gate's (starts, ends, per-user limit); sales end when the event starts."""
    ends = min(filter(None, [event.sale_ends_at, event.date]))
    return _epoch(event.sale_starts_at), _epoch(ends), event.max_tickets_per_user or 0


# --- What is left to sell ------------------------------------------------------------
# total - sold - pending - offered. PostgreSQL sells at commit while the gate takes stock
# at accept, so the tickets of pending orders are out of the gate but not yet sold; the
# tickets of waitlist offers not yet taken are held for their buyers. This is what the
# gate must hold free (reconciliation writes it, /ops/queues/ compares it) and what an
# event's new total may not take below zero. One definition, for one event or many.


def _remaining(total, sold, pending, offered):
    # Written once for integers and for query expressions alike.
    return total - sold - pending - offered


def event_remaining(*, event: Event) -> int:
    """Return what is left to sell of `event`: total - sold - pending - offered (one query).

    Total and sold are taken from `event` as the caller holds it (locked, or changed and
    not saved yet); pending and offered are read from PostgreSQL.
    """
    figures = (
        Event.objects.filter(pk=event.pk)
        .annotate(
            pending=Subquery(_pending_sum(event.pk)), offered=Subquery(_offered_sum(event.pk))
        )
        .values("pending", "offered")
        .first()
    ) or {}
    return _remaining(
        event.total_tickets,
        event.tickets_sold,
        figures.get("pending") or 0,
        figures.get("offered") or 0,
    )


def _pending_sum(event_id):
    pending = Order.objects.filter(event_id=event_id, status=Order.Status.PENDING)
    return pending.order_by().values("event_id").annotate(n=Sum("quantity")).values("n")


def _offered_sum(event_id):
    offers = offers_out(event_id)
    return offers.order_by().values("event_id").annotate(n=Sum("offered_quantity")).values("n")


def events_with_remaining(events: QuerySet[Event]) -> QuerySet[Event]:
    """Annotate `events` with `pending` (tickets in pending orders), `offered` (tickets of
    waitlist offers out) and `remaining` (total - sold - pending - offered), computed in
    the query that lists them."""
    return events.annotate(
        pending=Coalesce(Subquery(_pending_sum(OuterRef("pk"))), 0),
        offered=Coalesce(Subquery(_offered_sum(OuterRef("pk"))), 0),
    ).annotate(
        remaining=_remaining(F("total_tickets"), F("tickets_sold"), F("pending"), F("offered"))
    )


def event_gate_snapshot(*, event: Event) -> GateSnapshot:
    """Compute from PostgreSQL what the gate must hold: `event_remaining` free (on sale, or
    in the waitlist's pool while it is on and someone waits), the offers out, and each
    buyer's tickets held (pending or confirmed)."""
    free = event_remaining(event=event)
    held = (
        Order.objects.filter(
            Q(status=Order.Status.PENDING) | Q(status=Order.Status.CONFIRMED),
            event_id=event.pk,
        )
        .values_list("user_id")
        .annotate(n=Sum("quantity"))
        .order_by()
    )
    waitlist = Waitlist.objects.filter(event_id=event.pk).values_list("paused", flat=True).first()
    state = "" if waitlist is None else ("paused" if waitlist else "on")
    # Offers out stay their buyers' even once the waitlist is off (until taken or expired).
    offers = tuple(offers_out(event.pk).values_list("user_id", "offered_quantity", "pk"))
    pooled = False
    if state == "on":
        waiting = WaitlistEntry.objects.filter(
            event_id=event.pk, status=WaitlistEntry.Status.WAITING
        )
        pooled = waiting.exists()
    starts, ends, limit = event_sale_window(event=event)
    return GateSnapshot(
        remaining=0 if pooled else free,
        starts=starts,
        ends=ends,
        limit=limit,
        held_by_user=dict(held),
        pool=free if pooled else 0,
        waitlist=state,
        offers=offers,
    )


def orders_pending_stale(*, older_than_seconds: int) -> QuerySet[Order]:
    cutoff = timezone.now() - timedelta(seconds=older_than_seconds)
    return Order.objects.filter(status=Order.Status.PENDING, created_at__lt=cutoff)


def orders_stale_events(*, older_than_seconds: int | None = None) -> list[int]:
    """Return the events that have orders pending for longer than the threshold."""
    seconds = older_than_seconds or settings.ORDER_PENDING_RETRY_SECONDS
    return list(
        orders_pending_stale(older_than_seconds=seconds)
        .values_list("event_id", flat=True)
        .distinct()
        .order_by()
    )


def orders_pending_exist(*, event_id: int) -> bool:
    return Order.objects.filter(event_id=event_id, status=Order.Status.PENDING).exists()


def events_on_sale() -> QuerySet[Event]:
    return Event.objects.filter(date__gte=timezone.now())


def top_events_list(*, limit: int) -> tuple[list[TopEvent], datetime | None]:
    """Return the top `limit` upcoming events from the materialized view, and its age.

    Events that have started since the last refresh are left out.
    """
    rows = list(TopEvent.objects.filter(date__gte=timezone.now())[:limit])
    refreshed_at = (
        rows[0].refreshed_at
        if rows
        else (TopEvent.objects.values_list("refreshed_at", flat=True).first())
    )
    return rows, refreshed_at
