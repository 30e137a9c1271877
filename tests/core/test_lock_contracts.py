"""Lock contracts are enforced, not described: every row lock names its strength, a
batch that must be its own transaction says so, and a step that needs the caller's
transaction refuses to run without one."""

import ast
from pathlib import Path

import pytest
from django.db import transaction

from core.models import Order
from core.services import orders
from core.services.cancellations import order_abandon

ROOT = Path(__file__).resolve().parents[2]


def locks_without_no_key(source: str) -> list[int]:
    """Lines of `source` with a select_for_update() call that does not name no_key."""
    return [
        node.lineno
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "select_for_update"
        and not any(keyword.arg == "no_key" for keyword in node.keywords)
    ]


def test_every_select_for_update_says_whether_it_changes_a_key():
    # FOR UPDATE also blocks the FOR KEY SHARE of every foreign-key check on the row (each
    # purchase's order insert on its event): no_key=True unless a key changes or the row
    # is deleted, no_key=False there, so that the choice is always made.
    unnamed = [
        f"{path.relative_to(ROOT)}:{line}"
        for package in ("core", "api", "workers")
        for path in sorted((ROOT / package).rglob("*.py"))
        for line in locks_without_no_key(path.read_text())
    ]
    assert unnamed == []


def test_the_scan_finds_a_lock_that_does_not_name_no_key():
    source = (
        "Event.objects.select_for_update(no_key=True).get(pk=1)\n"
        "Order.objects.select_for_update(skip_locked=True).filter(pk=1)\n"
    )
    assert locks_without_no_key(source) == [2]


def test_batches_that_must_be_their_own_transaction_refuse_to_nest(buyer, event, transactional_db):
    order = Order.objects.create(user=buyer, event=event, quantity=1)
    with transaction.atomic():
        with pytest.raises(RuntimeError, match="durable"):
            orders.orders_commit(event_id=event.pk)
        with pytest.raises(RuntimeError, match="durable"):
            order_abandon(order_id=order.pk, reason="test")


def test_the_locked_step_of_a_commit_refuses_to_run_outside_a_transaction(event, transactional_db):
    with pytest.raises(AssertionError, match="caller's transaction"):
        orders._commit_locked(event_id=event.pk, limit=1)
    with pytest.raises(AssertionError, match="caller's transaction"):
        orders._commit_write(event_id=event.pk, rows=[], reasons=[], now=None)
