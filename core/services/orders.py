"""Writes to orders: the accept's INSERT, and the commit (by the workers).

A commit batch reads top to bottom: `orders_commit` (a transaction of its own) →
`_commit_locked` (locks, takes pending orders) → `commit_decide` (the rules, pure) →
`_commit_write` (the SQL) → `_commit_result` (what it made final, and the cards).

The gate (core/gate/reserve.lua) decides tickets left and the per-user limit first; the
commit decides them again in PostgreSQL's figures, since the gate can have been lost
and rebuilt (tests/core/test_rules_table.py holds both to one table of cases). The sale
window is checked only at the gate, on purpose: an order accepted inside the window is
honoured, however late its commit runs.
"""

import logging
import select
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import datetime

import psycopg
from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.db.models import F, Sum
from django.utils import timezone

from core.cards import order_card, order_cards_write
from core.exceptions import DatabaseUnavailableError
from core.gate.keys import new_operation_id
from core.gate.line import line_batch_begin, line_batch_done
from core.gate.reserve import gate_release
from core.gate.store import gate_operation_begin
from core.models import Event, Order, Ticket

logger = logging.getLogger(__name__)

REJECT_REASON_STOCK = "Not enough tickets left when the order was processed."
REJECT_REASON_LIMIT = "The per-user ticket limit for this event would be exceeded."


# --- The accept's INSERT ----------------------------------------------------------------

_INSERT = (
    f"INSERT INTO {Order._meta.db_table} "
    "(user_id, event_id, quantity, status, reason, idempotency_key, created_at, updated_at, "
    "waitlist_entry_id) VALUES (%s, %s, %s, %s, '', %s, %s, %s, %s) RETURNING id"
)


def order_insert_pending(
    *,
    user_id: int,
    event_id: int,
    quantity: int,
    idempotency_key: str | None,
    waitlist_entry_id: int | None = None,
) -> Order:
    """INSERT a pending order and return it, as Order.objects.create would.

    `waitlist_entry_id`: the waitlist offer the order takes (its tickets stop counting as
    offered in the same INSERT that makes them pending).

    Raises DatabaseUnavailableError when there is no connection (nothing was sent),
    IntegrityError on a conflict (a replayed key, a deleted event), another
    DatabaseError when the outcome is unknown (the connection broke during the insert).
    Raw SQL: the ORM's create was ~0.45 ms of a ~1.5 ms accept (query compilation and
    save machinery for one fixed statement; docs/benchmarks/bottlenecks.md).
    """
    try:
        _drop_connection_closed_by_server()
        connection.ensure_connection()
    except DatabaseError:
        raise DatabaseUnavailableError() from None
    now = timezone.now()
    # One INSERT commits by itself in autocommit mode; inside a caller's transaction a
    # savepoint keeps a conflict from breaking it.
    with transaction.atomic() if connection.in_atomic_block else nullcontext():
        with connection.cursor() as cursor:
            cursor.execute(
                _INSERT,
                [
                    *(user_id, event_id, quantity, Order.Status.PENDING, idempotency_key),
                    *(now, now, waitlist_entry_id),
                ],
            )
            (order_id,) = cursor.fetchone()
    order = Order(
        id=order_id,
        user_id=user_id,
        event_id=event_id,
        quantity=quantity,
        status=Order.Status.PENDING,
        reason="",
        idempotency_key=idempotency_key,
        created_at=now,
        updated_at=now,
        finalized_at=None,
        waitlist_entry_id=waitlist_entry_id,
    )
    order._state.adding = False
    return order


def _drop_connection_closed_by_server() -> None:
    """Close a persistent connection the server has ended while it sat idle.

    Replaces CONN_HEALTH_CHECKS' `SELECT 1` round trip before every request: a live
    idle connection has nothing to read, one the server closed (restart, killed
    backend) has its goodbye or EOF waiting. Checking costs a poll() of the socket, and
    the order INSERT then never goes out on a dead connection, where its outcome would
    be unknown.
    """
    raw = connection.connection
    if raw is None or connection.in_atomic_block:
        return
    try:
        readable, _, _ = select.select([raw.pgconn.socket], [], [], 0)
    except (OSError, ValueError, psycopg.Error):
        readable = True
    if readable:
        connection.close()


# --- The commit of a batch -------------------------------------------------------------


@dataclass(frozen=True)
class PendingRow:
    """A pending order taken for a commit batch."""

    order_id: int
    user_id: int
    quantity: int
    created_at: datetime


@dataclass
class CommitResult:
    confirmed: list[int] = field(default_factory=list)
    rejected: list[int] = field(default_factory=list)
    # Seconds from each finalized order's created_at to the commit, for the metric.
    latencies: list[float] = field(default_factory=list)
    # (order id, card) of every order made final, written to Redis after the commit.
    cards: list[tuple[int, str]] = field(default_factory=list)
    # created_at of every order made final, for the event's line (core/gate/line.py).
    created: list = field(default_factory=list)

    @property
    def processed(self) -> int:
        return len(self.confirmed) + len(self.rejected)


def orders_commit(*, event_id: int, limit: int | None = None) -> CommitResult:
    """Commit up to `limit` pending orders of one event in one transaction of its own.

    PostgreSQL decides: orders are confirmed in id order while its tickets last, the rest
    rejected and their reservations given back to the gate. Orders already final are
    skipped, so a duplicated or redelivered task changes nothing. The batch is counted
    in the event's line (core/gate/line.py): one Redis round trip before the
    transaction, one after.
    """
    limit = limit or settings.ORDER_COMMIT_BATCH_SIZE
    operation_id = new_operation_id("commit")
    # Marked in flight first, so a reconciliation cannot read PostgreSQL between our
    # commit and the gate release of any rejected order.
    gate_operation_begin(event_id=event_id, operation_id=operation_id)
    result, released = CommitResult(), []
    try:
        batch = line_batch_begin(event_id=event_id, batch_id=operation_id)
        with transaction.atomic(durable=True):
            result, released = _commit_locked(event_id=event_id, limit=limit)
    finally:
        gate_release(event_id=event_id, operation_id=operation_id, holdings=released)
    # Not in a finally: a batch that failed stays unfinished in the line, which then
    # stops trusting its count (its commit may or may not have landed).
    line_batch_done(batch, created=result.created)
    if result.cards:
        order_cards_write(result.cards)
    return result


def _commit_locked(*, event_id: int, limit: int) -> tuple[CommitResult, list[tuple[int, int]]]:
    """Decide and write one batch; return it and the (user, quantity) to give back.

    Must run inside transaction.atomic(); locks the Event row (FOR NO KEY UPDATE) and
    the pending orders it takes (FOR NO KEY UPDATE SKIP LOCKED, so concurrent
    committers never wait on each other's orders).
    """
    assert connection.in_atomic_block, "_commit_locked needs the caller's transaction"
    # NO KEY: we change tickets_sold, never the key. A plain FOR UPDATE would also block
    # the foreign-key check (FOR KEY SHARE) that every purchase's order insert takes on
    # this row, stalling the API behind each batch.
    event = Event.objects.select_for_update(no_key=True).filter(pk=event_id).first()
    if event is None:
        return CommitResult(), []
    rows = [
        PendingRow(*values)
        for values in Order.objects.select_for_update(no_key=True, skip_locked=True)
        .filter(event_id=event_id, status=Order.Status.PENDING)
        .order_by("id")
        .values_list("id", "user_id", "quantity", "created_at")[:limit]
    ]
    if not rows:
        return CommitResult(), []
    reasons = commit_decide(
        rows,
        available=event.total_tickets - event.tickets_sold,
        held=_held_by_buyers(event=event, user_ids={row.user_id for row in rows}),
        limit=event.max_tickets_per_user,
    )
    now = timezone.now()
    _commit_write(event_id=event_id, rows=rows, reasons=reasons, now=now)
    released = [(r.user_id, r.quantity) for r, reason in zip(rows, reasons, strict=True) if reason]
    return _commit_result(event_id=event_id, rows=rows, reasons=reasons, now=now), released


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


def commit_decide(
    rows: Sequence[PendingRow], *, available: int, held: dict[int, int], limit: int | None
) -> list[str]:
    """For each row, in order: '' to confirm it, or why it is rejected.

    `available`: tickets not sold yet; `held`: tickets each buyer holds already;
    `limit`: tickets per buyer (None or 0: no limit). Pure: no query, no lock. The same
    rules as the gate's (core/gate/reserve.lua), except the sale window (module docstring).
    """
    held = dict(held)
    reasons = []
    for row in rows:
        if row.quantity > available:
            reasons.append(REJECT_REASON_STOCK)
        elif limit and held.get(row.user_id, 0) + row.quantity > limit:
            reasons.append(REJECT_REASON_LIMIT)
        else:
            available -= row.quantity
            held[row.user_id] = held.get(row.user_id, 0) + row.quantity
            reasons.append("")
    return reasons


def _commit_write(
    *, event_id: int, rows: list[PendingRow], reasons: list[str], now: datetime
) -> None:
    """Write the decisions: tickets, order statuses, the event's sold count.

    Must run inside transaction.atomic(), holding the locks `_commit_locked` took.
    """
    assert connection.in_atomic_block, "_commit_write needs the caller's transaction"
    confirmed = [row for row, reason in zip(rows, reasons, strict=True) if not reason]
    if confirmed:
        Ticket.objects.bulk_create(
            Ticket(order_id=r.order_id, user_id=r.user_id, event_id=event_id, quantity=r.quantity)
            for r in confirmed
        )
        Order.objects.filter(pk__in=[r.order_id for r in confirmed]).update(
            status=Order.Status.CONFIRMED, finalized_at=now, updated_at=now
        )
        sold = sum(r.quantity for r in confirmed)
        Event.objects.filter(pk=event_id).update(tickets_sold=F("tickets_sold") + sold)
    rejected: dict[str, list[int]] = {}
    for row, reason in zip(rows, reasons, strict=True):
        if reason:
            rejected.setdefault(reason, []).append(row.order_id)
    for reason, order_ids in rejected.items():
        Order.objects.filter(pk__in=order_ids).update(
            status=Order.Status.REJECTED, reason=reason, finalized_at=now, updated_at=now
        )


def _commit_result(
    *, event_id: int, rows: list[PendingRow], reasons: list[str], now: datetime
) -> CommitResult:
    """What the batch made final, and the card of each of its orders."""
    result = CommitResult()
    for row, reason in zip(rows, reasons, strict=True):
        (result.rejected if reason else result.confirmed).append(row.order_id)
        result.latencies.append((now - row.created_at).total_seconds())
        result.created.append(row.created_at)
        card = order_card(
            id=row.order_id,
            user_id=row.user_id,
            event_id=event_id,
            quantity=row.quantity,
            status=Order.Status.REJECTED if reason else Order.Status.CONFIRMED,
            reason=reason,
            created_at=row.created_at,
            updated_at=now,
            finalized_at=now,
        )
        result.cards.append((row.order_id, card))
    return result
