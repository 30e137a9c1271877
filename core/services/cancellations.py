"""Orders made final outside a commit batch: abandoned (the broker refused the accept's
drain) or cancelled (confirmed, by its buyer or an Admin; the tickets go back on sale)."""

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from core.cards import event_card_drop, order_card_of, order_cards_write
from core.exceptions import OrderNotCancellableError
from core.gate.keys import new_operation_id
from core.gate.reserve import gate_release
from core.gate.store import gate_operation_begin
from core.models import Event, Order, Ticket
from core.selectors import access_order
from core.services.waitlist_offers import waitlist_offer_soon


def order_abandon(*, order_id: int, reason: str) -> bool:
    """Reject a still-pending order that could not be queued; return True if it was."""
    with transaction.atomic(durable=True):
        updated = Order.objects.filter(pk=order_id, status=Order.Status.PENDING).update(
            status=Order.Status.REJECTED,
            reason=reason,
            finalized_at=timezone.now(),
            updated_at=timezone.now(),
            # A rejected order takes no waitlist offer: the entry's offer is out again
            # (the caller gives its tickets back to it).
            waitlist_entry=None,
        )
    if updated:
        order_cards_write([(order_id, order_card_of(Order.objects.get(pk=order_id)))])
    return bool(updated)


def order_cancel(*, order_id: int, user_id: int, is_admin: bool) -> Order:
    """Cancel a confirmed order of an event that has not started; twice is a no-op.

    The tickets go back on sale: `tickets_sold` drops under the event-row lock, and the
    gate gets them back after the commit (to the waitlist's pool while the event has one
    on, and an offer round is queued: core/services/waitlists.py).
    """
    order = access_order(order_id=order_id, user_id=user_id, is_admin=is_admin)
    operation_id = new_operation_id("cancel")
    gate_operation_begin(event_id=order.event_id, operation_id=operation_id)
    released: list[tuple[int, int]] = []
    pooled = False
    try:
        with transaction.atomic(durable=True):
            # NO KEY on both rows: tickets_sold and the order's status change, no key.
            event = Event.objects.select_for_update(no_key=True).get(pk=order.event_id)
            order = Order.objects.select_for_update(no_key=True).get(pk=order_id)
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
        pooled = gate_release(event_id=order.event_id, operation_id=operation_id, holdings=released)
    order_cards_write([(order.pk, order_card_of(order))])
    event_card_drop(event_id=order.event_id)
    if pooled:
        waitlist_offer_soon(event_id=order.event_id)
    return order
