"""The system's invariants, checked after a sale's queue has drained."""
import time

from django.db.models import Sum

from core.models import Event, Order, Ticket
from core.stock import stock_remaining


def wait_until_no_pending(event_id: int, timeout: float = 90.0) -> float:
    """Wait until no order of the event is pending; return how long it took."""
    start = time.monotonic()
    while Order.objects.filter(event_id=event_id, status=Order.Status.PENDING).exists():
        if time.monotonic() - start > timeout:
            pending = Order.objects.filter(event_id=event_id, status="pending").count()
            raise AssertionError(f"{pending} orders still pending after {timeout}s")
        time.sleep(0.2)
    return time.monotonic() - start


def sold_figures(event_id: int) -> dict[str, int]:
    event = Event.objects.get(pk=event_id)
    confirmed = Order.objects.filter(event_id=event_id, status="confirmed")
    return {
        "total": event.total_tickets,
        "tickets_sold": event.tickets_sold,
        "confirmed_quantity": confirmed.aggregate(n=Sum("quantity"))["n"] or 0,
        "ticket_quantity": Ticket.objects.filter(event_id=event_id).aggregate(n=Sum("quantity"))["n"] or 0,
        "tickets_per_order_max": max(
            [Ticket.objects.filter(order_id=pk).count() for pk in confirmed.values_list("pk", flat=True)] or [0]
        ),
        "pending": Order.objects.filter(event_id=event_id, status="pending").count(),
        "gate_remaining": stock_remaining(event_id=event_id),
    }


def assert_invariants(event_id: int) -> dict[str, int]:
    """Nothing oversold, nothing lost or pending, one ticket per order, gate == database."""
    figures = sold_figures(event_id)
    assert figures["tickets_sold"] <= figures["total"], figures
    assert figures["confirmed_quantity"] == figures["tickets_sold"] == figures["ticket_quantity"], figures
    assert figures["tickets_per_order_max"] <= 1, figures
    assert figures["pending"] == 0, figures
    assert figures["gate_remaining"] == figures["total"] - figures["tickets_sold"], figures
    return figures
