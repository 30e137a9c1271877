"""The place in line through faults of a live sale: recounted or null, never wrong.

Commits are held back by a lock on the event row (as in test_faults.py), so the line
stands still while the positions are read: each must then be the one the gate gave at
accept (nothing was served), or, where the line cannot be trusted any more, PostgreSQL's
count. Afterwards the sale settles and no final order carries a position.
"""

import signal

import psycopg
import pytest
import requests
from django.db import connection

from core.models import Order
from tests.faults.test_faults import _lock_waiters, _pg

pytestmark = [pytest.mark.faults, pytest.mark.live, pytest.mark.django_db(transaction=True)]

REQUESTS = 60


def _poll(sale, i: int, order_id: int) -> requests.Response:
    _, _, headers = sale.purchase(i)
    return requests.get(f"{sale.live.base_url}/orders/{order_id}/", headers=headers, timeout=10)


def _pending_ahead(event_id: int, order_id: int) -> int:
    return Order.objects.filter(event_id=event_id, status="pending", pk__lt=order_id).count()


def _accepted(sale) -> list[tuple[int, dict]]:
    return [(i, body) for i, (status, body) in enumerate(sale.results) if status == 202]


def _hold_commits(sale) -> tuple[psycopg.Connection, psycopg.Connection]:
    observer, blocker = _pg(), _pg(autocommit=False)
    blocker.execute("SELECT id FROM core_event WHERE id = %s FOR NO KEY UPDATE", [sale.event_id])
    return observer, blocker


def _assert_settled_without_positions(sale, accepted) -> None:
    for i, body in accepted[:10]:
        final = _poll(sale, i, body["id"])
        assert final.json()["status"] in ("confirmed", "rejected")
        assert "position" not in final.json() and "Retry-After" not in final


def test_positions_hold_when_a_worker_is_killed_inside_its_commit(make_sale):
    sale = make_sale()
    observer, blocker = _hold_commits(sale)
    sale.start(REQUESTS).join()
    sale.live.wait_until(lambda: _lock_waiters(observer) >= 1, "a commit inside its transaction")
    for child in sale.live.children("worker"):
        child.send_signal(signal.SIGKILL)
    accepted = _accepted(sale)
    assert len(accepted) == REQUESTS
    # Nothing was served: the gate's numbers stand, the line's positions with them.
    at_accept = sorted(body["position"] for _, body in accepted)
    assert at_accept == list(range(REQUESTS))
    for i, body in accepted:
        polled = _poll(sale, i, body["id"]).json()
        # Once the killed batch counts as dead (BATCH_STALE_SECONDS), PostgreSQL counts.
        recounted = _pending_ahead(sale.event_id, body["id"])
        assert polled["position"] in (body["position"], recounted), (polled, body, recounted)
        assert polled["estimated_wait_seconds"] > 0
    blocker.rollback()
    row = sale.settle(0)
    observer.close(), blocker.close()
    assert row["oversold"] == 0 and row["lost"] == 0
    _assert_settled_without_positions(sale, accepted)


def test_positions_are_recounted_after_redis_restarts_empty(make_sale, private_redis):
    sale = make_sale()
    observer, blocker = _hold_commits(sale)
    sale.start(REQUESTS // 2).join()
    private_redis.restart_empty()  # the cards, the gate and its line: gone
    before = _accepted(sale)
    sale.results.clear()
    thread = sale.start(REQUESTS // 2)
    thread.join()
    after = _accepted(sale)
    assert before and after
    # A line opened on the rebuilt gate does not know the older orders: null at accept.
    assert {body["position"] for _, body in after} == {None}
    connection.close()  # see the orders the live API committed
    for i, body in before + after:
        polled = _poll(sale, i, body["id"]).json()
        assert polled["status"] == "pending"
        assert polled["position"] == _pending_ahead(sale.event_id, body["id"])
    blocker.rollback()
    observer.close(), blocker.close()
    sale.results.extend((202, body) for _, body in before)
    row = sale.settle(0)
    assert row["oversold"] == 0 and row["lost"] == 0
    _assert_settled_without_positions(sale, after)
