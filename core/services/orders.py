"""Making orders final: commit (by the workers), cancel, and recovery of stale orders."""

import logging
from dataclasses import dataclass, field

from django.conf import settings
from django.db import transaction
from django.db.models import F, Sum
from django.utils import timezone

from core.cards import event_card_drop, order_card, order_card_of, order_cards_write
from core.exceptions import OrderNotCancellableError
from core.line import line_batch_begin, line_batch_done
from core.models import Event, Order, Ticket
from core.selectors import order_get, orders_pending_stale
from core.stock import new_operation_id, stock_operation_begin, stock_release

logger = logging.getLogger(__name__)

REJECT_REASON_STOCK = "Not enough tickets left when the order was processed."
REJECT_REASON_LIMIT = "The per-user ticket limit for this event would be exceeded."


def _held_by_buyers(*, event: Event, user_ids: set[int]) -> dict[int, int]:
    """Tickets each buyer already holds (confirmed) for the event, if it has a limit."""
    if not event.max_tickets_per_user:
        return {}
    return dict(
        Order.objects.filter(event_id=event.pk, status=Order.Status.CONFIRMED, user_id__in=user_ids)
        .values_list("user_id")
        .annotate(n=Sum("quantity"))
        .order_by()
    )


def _refusal(quantity: int, available: int, held: dict, user_id: int, limit: int | None) -> str:
    """Why PostgreSQL refuses an order ('' if it does not): the gate can have been lost."""
    if quantity > available:
        return REJECT_REASON_STOCK
    if limit and held.get(user_id, 0) + quantity > limit:
        return REJECT_REASON_LIMIT
    return ""


@dataclass
class CommitResult:
    confirmed: list[int] = field(default_factory=list)
    rejected: list[int] = field(default_factory=list)
    # Finalized orders: (order id, created_at) for the commit-latency metric.
    latencies: list[float] = field(default_factory=list)
    # (order id, card) of every order made final, written to Redis after the commit.
    cards: list[tuple[int, str]] = field(default_factory=list)
    # created_at of every order made final, for the event's line (core/line.py).
    created: list = field(default_factory=list)

    @property
    def processed(self) -> int:
        return len(self.confirmed) + len(self.rejected)


def orders_commit(
    *, event_id: int, limit: int | None = None, order_ids: list[int] | None = None
) -> CommitResult:
    """Commit up to `limit` pending orders of one event in one transaction.

    Locks the event row (`select_for_update(no_key=True)`), then the pending orders it takes
    (`skip_locked`, so concurrent committers never wait on each other's orders).
    PostgreSQL decides: orders are confirmed in id order while stock lasts, the rest
    rejected and their reservations given back to the gate. Orders that are already
    final are skipped, so a duplicated or redelivered task changes nothing.
    The batch is counted in the event's line (core/line.py): one Redis round trip before
    the transaction, one after.
    """
    limit = limit or settings.ORDER_COMMIT_BATCH_SIZE
    operation_id = new_operation_id("commit")
    # Marked in flight first, so a reconciliation cannot read PostgreSQL between our
    # commit and the gate release of any rejected order.
    stock_operation_begin(event_id=event_id, operation_id=operation_id)
    result, released = CommitResult(), []
    try:
        batch = line_batch_begin(event_id=event_id, batch_id=operation_id)
        with transaction.atomic():
            result, released = _orders_commit_locked(
                event_id=event_id, limit=limit, order_ids=order_ids
            )
    finally:
        stock_release(event_id=event_id, operation_id=operation_id, holdings=released)
    # Not in a finally: a batch that failed stays unfinished in the line, which then
    # stops trusting its count (its commit may or may not have landed).
    line_batch_done(batch, created=result.created)
    if result.cards:
        order_cards_write(result.cards)
    return result


def _orders_commit_locked(
    *, event_id: int, limit: int, order_ids: list[int] | None
) -> tuple[CommitResult, list[tuple[int, int]]]:
    # FOR NO KEY UPDATE: we change tickets_sold, never the key. A plain FOR UPDATE would
    # also block the foreign-key check (FOR KEY SHARE) that every purchase's order
    # insert takes on this row, stalling the API behind each batch.
    event = Event.objects.select_for_update(no_key=True).filter(pk=event_id).first()
    result = CommitResult()
    if event is None:
        return result, []
    pending = Order.objects.select_for_update(skip_locked=True).filter(
        event_id=event_id, status=Order.Status.PENDING
    )
    if order_ids is not None:
        pending = pending.filter(pk__in=order_ids)
    rows = list(
        pending.order_by("id").values_list("id", "user_id", "quantity", "created_at")[:limit]
    )
    if not rows:
        return result, []
    available = event.total_tickets - event.tickets_sold
    held = _held_by_buyers(event=event, user_ids={row[1] for row in rows})
    now = timezone.now()
    tickets, released, sold = [], [], 0
    rejected: dict[str, list[int]] = {}
    for order_id, user_id, quantity, created_at in rows:
        result.latencies.append((now - created_at).total_seconds())
        result.created.append(created_at)
        reason = _refusal(quantity, available, held, user_id, event.max_tickets_per_user)
        if reason:
            rejected.setdefault(reason, []).append(order_id)
            result.rejected.append(order_id)
            released.append((user_id, quantity))
            continue
        available -= quantity
        sold += quantity
        held[user_id] = held.get(user_id, 0) + quantity
        result.confirmed.append(order_id)
        tickets.append(
            Ticket(order_id=order_id, user_id=user_id, event_id=event_id, quantity=quantity)
        )
    if tickets:
        Ticket.objects.bulk_create(tickets)
        Order.objects.filter(pk__in=result.confirmed).update(
            status=Order.Status.CONFIRMED, finalized_at=now, updated_at=now
        )
        Event.objects.filter(pk=event_id).update(tickets_sold=F("tickets_sold") + sold)
    for reason, order_ids_ in rejected.items():
        Order.objects.filter(pk__in=order_ids_).update(
            status=Order.Status.REJECTED, reason=reason, finalized_at=now, updated_at=now
        )
    reasons = {order_id: reason for reason, ids in rejected.items() for order_id in ids}
    for order_id, user_id, quantity, created_at in rows:
        reason = reasons.get(order_id, "")
        result.cards.append(
            (
                order_id,
                order_card(
                    id=order_id,
                    user_id=user_id,
                    event_id=event_id,
                    quantity=quantity,
                    status=Order.Status.REJECTED if reason else Order.Status.CONFIRMED,
                    reason=reason,
                    created_at=created_at,
                    updated_at=now,
                    finalized_at=now,
                ),
            )
        )
    return result, released


def order_commit(*, order_id: int) -> Order | None:
    """Commit one order if it is still pending; safe to run any number of times."""
    event_id = Order.objects.filter(pk=order_id).values_list("event_id", flat=True).first()
    if event_id is None:
        return None
    orders_commit(event_id=event_id, limit=1, order_ids=[order_id])
    return Order.objects.get(pk=order_id)


def order_abandon(*, order_id: int, reason: str) -> bool:
    """Reject a still-pending order that could not be queued; return True if it was."""
    with transaction.atomic():
        updated = Order.objects.filter(pk=order_id, status=Order.Status.PENDING).update(
            status=Order.Status.REJECTED,
            reason=reason,
            finalized_at=timezone.now(),
            updated_at=timezone.now(),
        )
    if updated:
        order_cards_write([(order_id, order_card_of(Order.objects.get(pk=order_id)))])
    return bool(updated)


def order_cancel(*, order_id: int, user_id: int, is_admin: bool) -> Order:
    """Cancel a confirmed order of an event that has not started; twice is a no-op.

    The tickets go back on sale: `tickets_sold` drops under the event-row lock, and the
    gate gets them back after the commit.
    """
    order = order_get(order_id=order_id, user_id=user_id, is_admin=is_admin)
    operation_id = new_operation_id("cancel")
    stock_operation_begin(event_id=order.event_id, operation_id=operation_id)
    released: list[tuple[int, int]] = []
    try:
        with transaction.atomic():
            event = Event.objects.select_for_update(no_key=True).get(pk=order.event_id)
            order = Order.objects.select_for_update().get(pk=order_id)
            if order.status == Order.Status.CANCELLED:
                return order
            if order.status != Order.Status.CONFIRMED:
                raise OrderNotCancellableError(
                    f"Only confirmed orders can be cancelled; this one is {order.status}."
                )
            if event.date <= timezone.now():
                raise OrderNotCancellableError("The event has already started.")
            Ticket.objects.filter(order_id=order.pk).delete()
            Event.objects.filter(pk=event.pk).update(
                tickets_sold=F("tickets_sold") - order.quantity
            )
            order.status = Order.Status.CANCELLED
            order.reason = "Cancelled by " + (
                "an admin." if order.user_id != user_id else "the buyer."
            )
            order.save(update_fields=["status", "reason", "updated_at"])
            released = [(order.user_id, order.quantity)]
    finally:
        stock_release(event_id=order.event_id, operation_id=operation_id, holdings=released)
    order_cards_write([(order.pk, order_card_of(order))])
    event_card_drop(event_id=order.event_id)
    return order


def orders_stale_events(*, older_than_seconds: int | None = None) -> list[int]:
    """Return the events that have orders pending for longer than the threshold."""
    seconds = older_than_seconds or settings.ORDER_PENDING_RETRY_SECONDS
    return list(
        orders_pending_stale(older_than_seconds=seconds)
        .values_list("event_id", flat=True)
        .distinct()
        .order_by()
    )
