"""Tasks, run in-process against the real PostgreSQL and Redis."""

from datetime import timedelta

import pytest
from django.utils import timezone

from core.gate.keys import drain_flag_key
from core.models import Order
from core.redis_client import get_redis
from tests.factories import pending_order
from workers.tasks import (
    event_orders_commit_task,
    gate_reconcile,
    orders_requeue_stale,
    single_flight,
)

pytestmark = pytest.mark.django_db


def test_drain_commits_every_pending_order_and_clears_its_flag(buyer, event, settings, redis_db):
    settings.ORDER_COMMIT_BATCH_SIZE = 2
    for _ in range(5):
        pending_order(user=buyer, event=event)
    redis_db.set(drain_flag_key(event.pk), 1)

    assert event_orders_commit_task.run(event.pk) == 5
    assert not Order.objects.filter(status="pending").exists()
    assert not redis_db.exists(drain_flag_key(event.pk))


def test_requeue_queues_a_drain_for_events_with_stale_orders(buyer, make_event, redis_db):
    stale_event, fresh_event = make_event(), make_event()
    stale = pending_order(user=buyer, event=stale_event)
    Order.objects.filter(pk=stale.pk).update(created_at=timezone.now() - timedelta(minutes=5))
    pending_order(user=buyer, event=fresh_event)

    assert orders_requeue_stale.run() == [stale_event.pk]
    assert redis_db.llen("purchases") == 1


def test_periodic_tasks_are_single_flight(event):
    with single_flight("gate-reconcile", ttl=30) as acquired:
        assert acquired
        assert gate_reconcile.run() is None  # another run holds the lock
    assert gate_reconcile.run() == {"built": 1}


def test_single_flight_lock_is_released_after_an_error():
    with pytest.raises(RuntimeError):
        with single_flight("boom", ttl=30):
            raise RuntimeError
    assert not get_redis().exists("lock:boom")
