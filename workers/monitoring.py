"""What operators watch: queue depths, pending orders, live workers, gate agreement."""
from __future__ import annotations

from datetime import timedelta

import redis
from django.db.models import Min
from django.utils import timezone

from core.models import Order
from core.selectors import event_gate_snapshot, events_on_sale
from core.stock import stock_remaining
from workers.celery import DEFAULT_QUEUE, PURCHASES_QUEUE, app

QUEUES = [PURCHASES_QUEUE, DEFAULT_QUEUE]


def queue_depths() -> dict[str, int]:
    """Messages waiting in each queue (the Redis broker keeps a queue as a list)."""
    broker = redis.Redis.from_url(app.conf.broker_url, socket_timeout=2)
    pipe = broker.pipeline(transaction=False)
    for queue in QUEUES:
        pipe.llen(queue)
    return dict(zip(QUEUES, pipe.execute()))


def workers_alive(timeout: float = 0.5) -> list[str]:
    replies = app.control.ping(timeout=timeout) or []
    return sorted(name for reply in replies for name in reply)


def orders_pending_summary() -> dict:
    pending = Order.objects.filter(status=Order.Status.PENDING).aggregate(
        oldest=Min("created_at")
    )
    count = Order.objects.filter(status=Order.Status.PENDING).count()
    oldest = pending["oldest"]
    age = (timezone.now() - oldest).total_seconds() if oldest else 0.0
    committed = Order.objects.filter(
        finalized_at__gte=timezone.now() - timedelta(minutes=1)
    ).count()
    return {"pending": count, "oldest_pending_seconds": round(age, 3), "finalized_last_minute": committed}


def gate_agreement(limit: int = 50) -> list[dict]:
    """For each event on sale (soonest first): the gate's stock beside PostgreSQL's.

    A difference while orders are in flight is normal for a moment; one that stays
    across reconciliations is not.
    """
    rows = []
    for event in events_on_sale().order_by("date", "id")[:limit]:
        database = event_gate_snapshot(event=event).remaining
        gate = stock_remaining(event_id=event.pk)
        rows.append(
            {
                "event": event.pk,
                "name": event.name,
                "gate_remaining": gate,
                "database_remaining": database,
                "agrees": gate is None or gate == database,
            }
        )
    return rows


def queue_summary(*, events_limit: int = 50) -> dict:
    """Everything above in one document (the /ops/queues/ body and `manage.py queues`)."""
    try:
        depths = queue_depths()
    except redis.RedisError as exc:
        depths = {"error": type(exc).__name__}
    try:
        gate = gate_agreement(limit=events_limit)
    except redis.RedisError:
        gate = []
    return {
        "queues": depths,
        "orders": orders_pending_summary(),
        "workers": workers_alive(),
        "events": gate,
        "disagreements": sum(1 for row in gate if not row["agrees"]),
        "checked_at": timezone.now().isoformat(),
    }

