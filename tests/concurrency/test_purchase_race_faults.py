"""The purchase race again, while things go wrong: the invariants must still hold."""

import signal
import threading

import psycopg
import pytest
from django.db import connection

from core.models import Order
from core.redis_client import get_redis
from tests.concurrency.conftest import login_all
from tests.concurrency.test_purchase_race import purchases
from tests.invariants import assert_invariants, wait_until_no_pending
from tests.live import LiveStack, fire
from workers.tasks import event_orders_commit_task

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]


def _connect() -> psycopg.Connection:
    db = connection.settings_dict
    return psycopg.connect(
        host=db["HOST"] or "127.0.0.1",
        port=db["PORT"] or 5432,
        user=db["USER"] or "postgres",
        dbname=db["NAME"],
        autocommit=False,
    )


def _sale_in_background(
    live: LiveStack, event_id: int, tokens, count: int
) -> tuple[threading.Thread, list]:
    results: list = []
    thread = threading.Thread(
        target=lambda: results.extend(
            fire(live.base_url, purchases(event_id, tokens, count), concurrency=32)
        )
    )
    thread.start()
    return thread, results


def _waiting_on_lock(conn: psycopg.Connection) -> int:
    with conn.cursor() as cur:
        cur.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
            "AND query LIKE '%FOR NO KEY UPDATE%' "
            "AND datname = current_database()"
        )
        return cur.fetchone()[0]


def test_worker_killed_while_committing_loses_nothing(stack, buyers, make_event):
    """SIGKILL the pool processes while they are inside the commit transaction."""
    tokens = login_all(stack, buyers)
    event = make_event(total_tickets=100)
    observer, blocker = _connect(), _connect()
    observer.autocommit = True
    # Hold the event row so every commit blocks inside its transaction.
    blocker.execute("SELECT id FROM core_event WHERE id = %s FOR NO KEY UPDATE", [event.pk])
    thread, results = _sale_in_background(stack, event.pk, tokens, 500)
    stack.wait_until(lambda: _waiting_on_lock(observer) >= 1, "a commit blocked on the row lock")
    children = stack.children("worker")
    for child in children:
        child.send_signal(signal.SIGKILL)
    blocker.rollback()
    thread.join()
    stack.wait_until(
        lambda: {c.pid for c in stack.children("worker")} - {c.pid for c in children},
        "replacement pool processes",
    )
    wait_until_no_pending(event.pk)
    observer.close()
    blocker.close()
    figures = assert_invariants(event.pk)
    assert figures["tickets_sold"] == sum(1 for status, _ in results if status == 202) == 100


def test_gate_keys_flushed_mid_sale_are_rebuilt_without_overselling(
    stack_with_beat, buyers, make_event
):
    tokens = login_all(stack_with_beat, buyers)
    event = make_event(total_tickets=100)
    redis = get_redis()
    thread, results = _sale_in_background(stack_with_beat, event.pk, tokens, 600)
    stack_with_beat.wait_until(
        lambda: Order.objects.filter(event_id=event.pk).count() >= 30, "the sale to start"
    )
    for key in redis.scan_iter(match=f"gate:{{ev:{event.pk}}}*"):
        redis.delete(key)
    thread.join()
    wait_until_no_pending(event.pk)
    # Beat reconciles every second: wait for the gate to agree, then check everything.
    stack_with_beat.wait_until(
        lambda: _gate_agrees(event.pk), "reconciliation of the rebuilt gate", timeout=20
    )
    figures = assert_invariants(event.pk)
    assert figures["tickets_sold"] == 100


def _gate_agrees(event_id: int) -> bool:
    try:
        assert_invariants(event_id)
    except AssertionError:
        return False
    return True


def test_duplicated_task_messages_never_buy_twice(stack, buyers, make_event):
    tokens = login_all(stack, buyers)
    event = make_event(total_tickets=100)
    thread, results = _sale_in_background(stack, event.pk, tokens, 500)
    for _ in range(20):
        event_orders_commit_task.apply_async(args=[event.pk])
    thread.join()
    for _ in Order.objects.filter(event_id=event.pk).values_list("pk", flat=True):
        # Two more drains per order, each a duplicate of the one that commits it.
        event_orders_commit_task.apply_async(args=[event.pk])
        event_orders_commit_task.apply_async(args=[event.pk])
    wait_until_no_pending(event.pk)
    # Let the duplicates run out before checking.
    stack.wait_until(lambda: get_redis().llen("purchases") == 0, "the queue to drain")
    figures = assert_invariants(event.pk)
    assert figures["tickets_sold"] == 100
