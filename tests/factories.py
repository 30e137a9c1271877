"""Data builders for tests that need orders in a given state."""

from core.models import Event, Order, Ticket


def confirmed_order(*, user, event: Event, quantity: int = 1) -> Order:
    """A confirmed order with its ticket, counted in `tickets_sold` (as a worker leaves it)."""
    order = Order.objects.create(user=user, event=event, quantity=quantity, status="confirmed")
    Ticket.objects.create(order=order, user=user, event=event, quantity=quantity)
    Event.objects.filter(pk=event.pk).update(tickets_sold=event.tickets_sold + quantity)
    event.refresh_from_db()
    return order


def pending_order(*, user, event: Event, quantity: int = 1) -> Order:
    return Order.objects.create(user=user, event=event, quantity=quantity)
