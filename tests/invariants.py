"""The system's invariants, checked after a sale's queue has drained."""

import time

from django.db.models import Sum

from core.models import Event, Order, Ticket
from core.redis_client import get_redis


def wait_until_no_pending(event_id: int, timeout: float = 90.0) -> float:
    """Wait until no order of the event is pending; return how long it took."""
    start = time.monotonic()
    while Order.objects.filter(event_id=event_id, status=Order.Status.PENDING).exists():
        if time.monotonic() - start > timeout:
            pending = Order.objects.filter(event_id=event_id, status="pending").count()
            raise AssertionError(f"{pending} orders still pending after {timeout}s")
        time.sleep(0.2)
    return time.monotonic() - start


def sold_figures(event_id: int, redis_client=None) -> dict[str, int]:
    event = Event.objects.get(pk=event_id)
    confirmed = Order.objects.filter(event_id=event_id, status="confirmed")
    remaining = (redis_client or get_redis()).hget(f"gate:{{ev:{event_id}}}", "remaining")
    tickets = Ticket.objects.filter(event_id=event_id)
    return {
        "total": event.total_tickets,
        "tickets_sold": event.tickets_sold,
        "confirmed_quantity": confirmed.aggregate(n=Sum("quantity"))["n"] or 0,
        "ticket_quantity": Ticket.objects.filter(event_id=event_id).aggregate(n=Sum("quantity"))[
            "n"
        ]
        or 0,
        "one_ticket_per_order": tickets.values("order_id").distinct().count() == tickets.count(),
        "pending": Order.objects.filter(event_id=event_id, status="pending").count(),
        "gate_remaining": None if remaining is None else int(remaining),
    }


def assert_invariants(event_id: int, redis_client=None) -> dict[str, int]:
    """Nothing oversold, nothing pending, one ticket per order, gate == database."""
    figures = sold_figures(event_id, redis_client)
    assert figures["tickets_sold"] <= figures["total"], figures
    assert figures["confirmed_quantity"] == figures["tickets_sold"] == figures["ticket_quantity"], (
        figures
    )
    assert figures["one_ticket_per_order"], figures
    assert figures["pending"] == 0, figures
    assert figures["gate_remaining"] == figures["total"] - figures["tickets_sold"], figures
    return figures


def invariants_hold(event_id: int, redis_client=None) -> bool:
    try:
        assert_invariants(event_id, redis_client)
    except AssertionError:
        return False
    return True
