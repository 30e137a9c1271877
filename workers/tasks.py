"""Celery tasks: take ids, call a service, decide about retries. No business rules here."""

import logging
from contextlib import contextmanager

import redis
from celery import shared_task
from django.conf import settings
from django.db import DatabaseError

from core.metrics import TOP_EVENTS_REFRESH
from core.redis_client import get_redis
from core.selectors import orders_stale_events
from core.services.drain import drain_publish, drain_run
from core.services.gate import gate_reconcile_all
from core.services.top_events import top_events_refresh as top_events_refresh_service

logger = logging.getLogger(__name__)

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
    """Drain an event's pending orders (core/services/drain.py); return how many were made
    final. A database or Redis failure retries the task with backoff.

    Runs ORDER_COMMIT_DELAY_SECONDS after it is queued, so that during a sale one batch
    carries every order accepted meanwhile.
    """
    result = drain_run(event_id=event_id)
    if result.again:
        drain_publish(event_id=event_id, countdown=settings.ORDER_COMMIT_DELAY_SECONDS)
    return result.committed


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
            drain_publish(event_id=event_id)
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
