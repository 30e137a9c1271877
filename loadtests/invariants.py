"""The invariants every scenario ends with, checked against PostgreSQL and Redis."""

from __future__ import annotations

import time

import numpy as np


class InvariantError(AssertionError):
    """A sale ended oversold, with orders lost or pending, or Redis and PostgreSQL disagreeing."""


def wait_until_final(event_ids: list[int], timeout: float) -> float:
    """Wait until no order of these events is pending; return the wait in seconds."""
    from core.models import Order

    started = time.monotonic()
    while Order.objects.filter(event_id__in=event_ids, status="pending").exists():
        if time.monotonic() - started > timeout:
            break  # the invariants report what is left
        time.sleep(0.05)
    return time.monotonic() - started


def invariants_check(
    label: str,
    event_id: int,
    *,
    gate: bool = True,
    accepted_ids: np.ndarray | None = None,
    unanswered_purchases: int = 0,
    expect_sold_out: bool = False,
) -> dict:
    """Check a finished sale; raise InvariantError listing every broken invariant."""
    from django.db.models import Count, Sum

    from core.gate.store import gate_remaining
    from core.models import Event, Order, Ticket

    event = Event.objects.get(pk=event_id)
    orders = {
        row["status"]: row
        for row in Order.objects.filter(event_id=event_id)
        .values("status")
        .annotate(n=Count("id"), qty=Sum("quantity"))
        .order_by()
    }
    tickets = Ticket.objects.filter(event_id=event_id).aggregate(
        n=Count("id"), orders=Count("order_id", distinct=True), qty=Sum("quantity")
    )
    figures = {
        "total": event.total_tickets,
        "tickets_sold": event.tickets_sold,
        "confirmed_quantity": (orders.get("confirmed") or {}).get("qty") or 0,
        "confirmed_orders": (orders.get("confirmed") or {}).get("n") or 0,
        "rejected_orders": (orders.get("rejected") or {}).get("n") or 0,
        "pending_orders": (orders.get("pending") or {}).get("n") or 0,
        "ticket_quantity": tickets["qty"] or 0,
        "gate_remaining": gate_remaining(event_id=event_id) if gate else None,
    }
    problems = []
    if figures["tickets_sold"] > figures["total"]:
        problems.append("OVERSOLD: tickets_sold > total")
    if not figures["confirmed_quantity"] == figures["tickets_sold"] == figures["ticket_quantity"]:
        problems.append("confirmed quantity, event.tickets_sold and ticket quantity differ")
    if tickets["n"] != tickets["orders"] or tickets["n"] != figures["confirmed_orders"]:
        problems.append("not exactly one ticket row per confirmed order")
    if figures["pending_orders"]:
        problems.append(f"{figures['pending_orders']} orders still pending")
    if gate and figures["gate_remaining"] != figures["total"] - figures["tickets_sold"]:
        problems.append("Redis gate remaining != total - sold")
    if accepted_ids is not None:
        in_db = set(Order.objects.filter(event_id=event_id).values_list("id", flat=True))
        seen = set(int(i) for i in accepted_ids)
        figures["orders_lost"] = len(seen - in_db)
        figures["orders_unseen_by_clients"] = len(in_db - seen)
        if seen - in_db:
            problems.append(f"LOST: {len(seen - in_db)} accepted orders missing from PostgreSQL")
        # A purchase whose answer never arrived (time-out, socket error) may have been
        # accepted: its order is in PostgreSQL, final, and a retry with the same
        # Idempotency-Key would find it. More such orders than such requests is a bug.
        figures["purchases_unanswered"] = unanswered_purchases
        if len(in_db - seen) > unanswered_purchases:
            problems.append(
                f"{len(in_db - seen)} orders in PostgreSQL no client was told about "
                f"(only {unanswered_purchases} purchases went unanswered)"
            )
    if expect_sold_out and figures["tickets_sold"] != figures["total"]:
        unsold = figures["total"] - figures["tickets_sold"]
        problems.append(f"clients were told sold_out but {unsold} tickets never sold")
    figures["ok"] = not problems
    figures["problems"] = problems
    if problems:
        raise InvariantError(f"{label}: " + "; ".join(problems) + f" -- {figures}")
    return figures
