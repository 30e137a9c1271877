"""Once a purchase's order is recorded, no failure after the INSERT answers 500.

Each step that runs after the INSERT is made to raise something nobody planned for (an
import that fails, as kombu's Redis transport did without `packaging`; a bug). The buyer
must get the 202 of its pending order, and the order must end final exactly once
through the requeue job, with the gate and PostgreSQL agreeing; or, where the queue
refused and the order was rejected, the coded 503 that says nothing was bought.
"""

import sys
from datetime import timedelta

import pytest
from kombu.exceptions import OperationalError

from core.gate.reserve import Line
from core.models import Order
from core.selectors import orders_stale_events
from core.services import purchases
from core.services.gate import gate_reconcile_all
from tests.invariants import assert_invariants
from workers.tasks import event_orders_commit_task

pytestmark = pytest.mark.django_db


class Unplanned(Exception):
    """Stands for any failure nobody wrote a handler for."""


def boom(*args, **kwargs):
    raise Unplanned("injected after the INSERT")


def buy(client, event_id, key):
    return client.post(f"/events/{event_id}/purchase/", {"quantity": 2}, format="json",
                       HTTP_IDEMPOTENCY_KEY=key)  # fmt: skip


def commit_through_the_requeue_job(event_id: int) -> None:
    """What the requeue job does once the order counts as stale: drain its event."""
    Order.objects.filter(event_id=event_id).update(
        created_at=Order.objects.get(event_id=event_id).created_at - timedelta(hours=1)
    )
    assert event_id in orders_stale_events()
    event_orders_commit_task(event_id)


STEPS_AFTER_THE_INSERT = {
    "place in line": lambda mp: mp.setattr(Line, "position", boom),
    "order card": lambda mp: mp.setattr(purchases, "order_card_of", boom),
    "card written": lambda mp: mp.setattr(purchases, "order_card_fill", boom),
    "task import": lambda mp: mp.setitem(sys.modules, "workers.tasks", None),
    "task publish": lambda mp: mp.setattr(event_orders_commit_task, "apply_async", boom),
    "wait estimate": lambda mp: mp.setattr(purchases, "wait_estimate", boom),
    "log line": lambda mp: mp.setattr(purchases.logger, "info", boom),
}


@pytest.mark.parametrize("step", STEPS_AFTER_THE_INSERT)
def test_a_failure_after_the_insert_answers_202_and_the_order_ends_confirmed_once(
    buyer_client, event, monkeypatch, step
):
    with monkeypatch.context() as patched:
        STEPS_AFTER_THE_INSERT[step](patched)
        response = buy(buyer_client, event.pk, key=f"after-insert-{step}")

    assert response.status_code == 202, response.content
    order = Order.objects.get(pk=response.json()["id"])
    assert order.status == "pending"
    assert response["Location"] == f"/orders/{order.pk}/"

    commit_through_the_requeue_job(event.pk)
    gate_reconcile_all()

    order.refresh_from_db()
    assert order.status == "confirmed"
    assert Order.objects.filter(event_id=event.pk).count() == 1
    figures = assert_invariants(event.pk)
    assert figures["tickets_sold"] == 2
    # A retry with the same key finds the same order and buys nothing more.
    retried = buy(buyer_client, event.pk, key=f"after-insert-{step}")
    assert retried.status_code == 202 and retried.json()["id"] == order.pk
    assert Order.objects.filter(event_id=event.pk).count() == 1


def test_a_failure_while_undoing_a_refused_queue_still_answers_nothing_was_bought(
    buyer_client, event, monkeypatch
):
    def queue_down(*args, **kwargs):
        raise OperationalError("broker down")

    with monkeypatch.context() as patched:
        patched.setattr(event_orders_commit_task, "apply_async", queue_down)
        patched.setattr(purchases, "gate_unreserve", boom)
        response = buy(buyer_client, event.pk, key="undo-fails")

    assert response.status_code == 503
    assert response.json()["code"] == "queue_unavailable"
    assert Order.objects.get(event_id=event.pk).status == "rejected"
    gate_reconcile_all()
    assert assert_invariants(event.pk)["tickets_sold"] == 0


def test_an_unplanned_failure_is_logged_with_its_traceback(buyer_client, event, monkeypatch,
                                                          caplog):  # fmt: skip
    monkeypatch.setattr(purchases, "order_card_of", boom)

    assert buy(buyer_client, event.pk, key="logged").status_code == 202

    [record] = [r for r in caplog.records if "requeue job" in r.getMessage()]
    assert record.levelname == "ERROR" and record.exc_info[0] is Unplanned
