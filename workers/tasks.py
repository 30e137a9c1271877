"""Celery tasks: take ids, call a service, decide about retries. No business rules here."""

import logging
import time
from contextlib import contextmanager

import redis
from celery import shared_task
from django.conf import settings
from django.db import DatabaseError

from core.metrics import ORDER_COMMIT_LATENCY, ORDERS_COMMITTED, TOP_EVENTS_REFRESH
from core.selectors import orders_pending_exist
from core.services.gate import gate_reconcile_all
from core.services.orders import order_commit as order_commit_service
from core.services.orders import orders_commit, orders_stale_events
from core.services.top_events import top_events_refresh as top_events_refresh_service
from core.stock import DRAIN_FLAG_SECONDS, drain_flag_key, get_redis

logger = logging.getLogger(__name__)

# A drain stops after this long and queues its own continuation, so that one busy event
# never holds a worker past the broker's visibility timeout.
DRAIN_BUDGET_SECONDS = 20
RETRYABLE = (DatabaseError, redis.RedisError)


@contextmanager
def single_flight(name: str, ttl: int):
    """Run the body in at most one process at a time across all machines (Redis lock)."""
    lock = get_redis().lock(f"lock:{name}", timeout=ttl, blocking=False)
    acquired = lock.acquire()
    try:
        yield acquired
    finally:
        if acquired:
            try:
                lock.release()
            except redis.exceptions.LockError:
                pass  # expired meanwhile: another run may hold it now


@shared_task(
    name="workers.tasks.event_orders_commit",
    bind=True,
    autoretry_for=RETRYABLE,
    retry_backoff=0.5,
    retry_backoff_max=10,
    max_retries=None,
)
def event_orders_commit(self, event_id: int) -> int:
    """Commit an event's pending orders; return how many were made final.

    Runs ORDER_COMMIT_DELAY_SECONDS after it is queued, so that during a sale one batch
    carries every order accepted meanwhile. The event's drain flag stays set while a
    drain is queued or running, so purchases in between queue nothing. A full batch
    means a backlog: the next follows at once. Otherwise the flag is let go and one more
    look catches an order recorded just before that (its request saw the flag still set
    and relied on this drain); such an order gets a new, delayed drain.
    """
    redis_client = get_redis()
    flag = drain_flag_key(event_id)
    deadline = time.monotonic() + DRAIN_BUDGET_SECONDS
    batch_size = settings.ORDER_COMMIT_BATCH_SIZE
    committed = 0
    while True:
        redis_client.expire(flag, DRAIN_FLAG_SECONDS)
        result = orders_commit(event_id=event_id, limit=batch_size)
        committed += result.processed
        _record_commit(event_id, result)
        if result.processed == batch_size and time.monotonic() < deadline:
            continue
        if result.processed < batch_size:
            redis_client.delete(flag)
            if not orders_pending_exist(event_id=event_id):
                return committed
            if not redis_client.set(flag, 1, nx=True, ex=DRAIN_FLAG_SECONDS):
                return committed  # another drain has been queued meanwhile
        event_orders_commit.apply_async(
            args=[event_id], countdown=settings.ORDER_COMMIT_DELAY_SECONDS
        )
        return committed


def _record_commit(event_id: int, result) -> None:
    for seconds in result.latencies:
        ORDER_COMMIT_LATENCY.observe(seconds)
    ORDERS_COMMITTED.labels("confirmed").inc(len(result.confirmed))
    ORDERS_COMMITTED.labels("rejected").inc(len(result.rejected))
    if result.processed:
        logger.info(
            "orders committed",
            extra={
                "event_id": event_id,
                "confirmed": len(result.confirmed),
                "rejected": len(result.rejected),
                "order_ids": result.confirmed + result.rejected,
            },
        )


@shared_task(
    name="workers.tasks.order_commit",
    autoretry_for=RETRYABLE,
    retry_backoff=0.5,
    retry_backoff_max=10,
    max_retries=None,
)
def order_commit(order_id: int) -> str | None:
    """Commit one order if it is still pending (safe to run twice)."""
    order = order_commit_service(order_id=order_id)
    if order is not None:
        logger.info("order committed", extra={"order_id": order_id, "status": order.status})
    return order.status if order else None


@shared_task(name="workers.tasks.gate_reconcile")
def gate_reconcile() -> dict | None:
    """Bring every on-sale event's gate in line with PostgreSQL (single-flight)."""
    with single_flight("gate-reconcile", ttl=120) as acquired:
        if not acquired:
            return None
        outcomes = gate_reconcile_all()
        logger.info("gate reconciled", extra={"outcomes": outcomes})
        return outcomes


@shared_task(name="workers.tasks.orders_requeue_stale")
def orders_requeue_stale() -> list[int] | None:
    """Queue a drain for every event with orders pending too long (lost messages)."""
    with single_flight("orders-requeue", ttl=60) as acquired:
        if not acquired:
            return None
        event_ids = orders_stale_events()
        for event_id in event_ids:
            event_orders_commit.apply_async(args=[event_id])
        if event_ids:
            logger.warning("stale orders requeued", extra={"event_ids": event_ids})
        return event_ids


@shared_task(name="workers.tasks.top_events_refresh")
def top_events_refresh() -> float | None:
    """Refresh the top-events view; a run that finds another one going does nothing."""
    seconds = top_events_refresh_service()
    if seconds is not None:
        TOP_EVENTS_REFRESH.observe(seconds)
        logger.info("top events refreshed", extra={"seconds": round(seconds, 3)})
    return seconds


event_orders_commit_task = event_orders_commit
order_commit_task = order_commit
