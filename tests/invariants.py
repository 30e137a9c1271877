"""The system's invariants, checked once a sale's queue has drained: by the tests that
cross processes and by every scenario of the load tools (loadtests/).

Importable before Django is set up (the load tools set it up after parsing their options).
"""

from __future__ import annotations

import time


class InvariantError(AssertionError):
    """A sale ended oversold, with orders lost or pending, or Redis and PostgreSQL disagreeing."""


def wait_until_no_pending(*event_ids: int, timeout: float = 90.0) -> float:
    """Wait until no order of these events is pending; return how long it took.

    Raises InvariantError if some are still pending after `timeout` seconds."""
    from core.models import Order

    start = time.monotonic()
    pending = Order.objects.filter(event_id__in=event_ids, status=Order.Status.PENDING)
    while pending.exists():
        if time.monotonic() - start > timeout:
            raise InvariantError(f"{pending.count()} orders still pending after {timeout}s")
        time.sleep(0.05)
    return time.monotonic() - start


def sold_figures(event_id: int, redis_client=None, *, gate: bool = True) -> dict:
    """What PostgreSQL and the Redis gate (unless `gate` is False) say about one event."""
    from django.db.models import Count, Sum

    from core.gate.keys import gate_keys, offers_key
    from core.models import Event, Order, Ticket, WaitlistEntry
    from core.redis_client import get_redis
    from core.selectors import event_remaining

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
    client = redis_client or get_redis()
    remaining, pool = client.hmget(gate_keys(event_id)[0], "remaining", "pool")
    free = None if remaining is None else int(remaining) + int(pool or 0)
    offers_out = WaitlistEntry.objects.filter(
        event_id=event_id, status=WaitlistEntry.Status.OFFERED, orders__isnull=True
    )
    confirmed = orders.get("confirmed") or {}
    return {
        "total": event.total_tickets,
        "tickets_sold": event.tickets_sold,
        "confirmed_quantity": confirmed.get("qty") or 0,
        "confirmed_orders": confirmed.get("n") or 0,
        "rejected_orders": (orders.get("rejected") or {}).get("n") or 0,
        "pending_orders": (orders.get("pending") or {}).get("n") or 0,
        "ticket_quantity": tickets["qty"] or 0,
        "one_ticket_per_order": tickets["n"] == tickets["orders"] == (confirmed.get("n") or 0),
        # Free in the gate: on sale plus the waitlist's pool of returned tickets.
        "gate_remaining": free if gate else None,
        # total - sold - pending - offered, as the gate's rebuild and /ops/queues/ compute it
        "database_remaining": event_remaining(event=event),
        # Waitlist offers out: {user id: (tickets, entry id)}, in each store.
        "gate_offers": _gate_offers(client, offers_key(event_id)) if gate else None,
        "database_offers": {
            user: (tickets, entry)
            for user, tickets, entry in offers_out.values_list("user_id", "offered_quantity", "pk")
        },
    }


def _gate_offers(client, key: str) -> dict:
    offers = {}
    for user, value in client.hgetall(key).items():
        tickets, entry = (value.decode() if isinstance(value, bytes) else value).split(":")
        offers[int(user)] = (int(tickets), int(entry))
    return offers


def assert_invariants(
    event_id: int,
    redis_client=None,
    *,
    label: str = "",
    gate: bool = True,
    accepted_ids=None,
    unanswered_purchases: int = 0,
    expect_sold_out: bool = False,
) -> dict:
    """Nothing oversold, nothing pending, one ticket per confirmed order, gate == database;
    raise InvariantError listing every broken invariant, else return the figures.

    `accepted_ids`: the orders clients were told about; each must exist, and no more
    orders than `unanswered_purchases` (answers that never arrived) may be unknown to
    them. `expect_sold_out`: clients heard sold_out, so every ticket must be sold.
    `gate=False` for a design without the Redis gate (the benchmark's naive baseline)."""
    from core.models import Order

    figures = sold_figures(event_id, redis_client, gate=gate)
    problems = []
    if figures["tickets_sold"] > figures["total"]:
        problems.append("OVERSOLD: tickets_sold > total")
    if not figures["confirmed_quantity"] == figures["tickets_sold"] == figures["ticket_quantity"]:
        problems.append("confirmed quantity, event.tickets_sold and ticket quantity differ")
    if not figures["one_ticket_per_order"]:
        problems.append("not exactly one ticket row per confirmed order")
    if figures["pending_orders"]:
        problems.append(f"{figures['pending_orders']} orders still pending")
    if gate and figures["gate_remaining"] != figures["database_remaining"]:
        problems.append(
            "Redis gate remaining != PostgreSQL's remaining (total - sold - pending - offered)"
        )
    if gate and figures["gate_offers"] != figures["database_offers"]:
        problems.append("the gate's waitlist offers != PostgreSQL's offers out")
    if accepted_ids is not None:
        in_db = set(Order.objects.filter(event_id=event_id).values_list("id", flat=True))
        seen = {int(i) for i in accepted_ids}
        figures["orders_lost"] = len(seen - in_db)
        figures["orders_unseen_by_clients"] = len(in_db - seen)
        figures["purchases_unanswered"] = unanswered_purchases
        if seen - in_db:
            problems.append(f"LOST: {len(seen - in_db)} accepted orders missing from PostgreSQL")
        # A purchase whose answer never arrived (time-out, socket error) may have been
        # accepted: its order is in PostgreSQL, final, and a retry with the same
        # Idempotency-Key would find it. More such orders than such requests is a bug.
        if len(in_db - seen) > unanswered_purchases:
            problems.append(
                f"{len(in_db - seen)} orders in PostgreSQL no client was told about "
                f"(only {unanswered_purchases} purchases went unanswered)"
            )
    if expect_sold_out and figures["tickets_sold"] != figures["total"]:
        unsold = figures["total"] - figures["tickets_sold"]
        problems.append(f"clients were told sold_out but {unsold} tickets never sold")
    figures.update(ok=not problems, problems=problems)
    if problems:
        raise InvariantError(f"{label or event_id}: " + "; ".join(problems) + f" -- {figures}")
    return figures


def invariants_hold(event_id: int, redis_client=None) -> bool:
    try:
        assert_invariants(event_id, redis_client)
    except AssertionError:
        return False
    return True
