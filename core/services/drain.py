"""The drain: at most one task per event at a time commits its pending orders.

The protocol, whole, in this module:

- The event's drain flag (``gate:{ev:N}:drain``) lives while a drain of the event is
  queued or running. An accept claims it (`drain_claim`, SET NX in the accept's own
  pipeline); the accept that set it publishes the task (`drain_publish`), the others
  rely on that drain.
- The task (workers/tasks.py `event_orders_commit`) calls `drain_run`: it keeps the
  flag alive, commits a batch (core/services/orders.py `orders_commit`), and goes on
  while batches come back full (a backlog), for at most DRAIN_BUDGET_SECONDS.
- A batch that is not full ends the drain: the flag is let go, and one more look
  catches an order recorded just before that (its request saw the flag still set and
  relied on this drain); such an order gets a new, delayed drain.
- A drain out of budget asks for its own continuation, so that one busy event never
  holds a worker past the broker's visibility timeout.

The flag's TTL only bounds the damage of a lost task message or a killed worker: the
next purchase then queues a new drain, and the requeue job is the last resort.
"""

import logging
import time
from dataclasses import dataclass

from django.conf import settings

from core.gate.keys import drain_flag_key
from core.metrics import ORDER_COMMIT_LATENCY, ORDERS_COMMITTED
from core.redis_client import get_redis
from core.selectors import orders_pending_exist
from core.services.orders import CommitResult, orders_commit

logger = logging.getLogger(__name__)

DRAIN_FLAG_SECONDS = 10
DRAIN_BUDGET_SECONDS = 20


def drain_claim(pipe, *, event_id: int) -> None:
    """Add to `pipe` the claim of the event's drain; its reply is True if this caller
    set the flag and must publish the drain (`drain_publish`)."""
    pipe.set(drain_flag_key(event_id), 1, nx=True, ex=DRAIN_FLAG_SECONDS)


def drain_unclaim(*, event_id: int) -> None:
    """Let the flag go (the drain this caller claimed was never published)."""
    get_redis().delete(drain_flag_key(event_id))


def drain_publish(*, event_id: int, **options) -> None:
    """Queue the event's drain task; `options` go to apply_async (countdown, retry)."""
    from workers.tasks import event_orders_commit_task

    event_orders_commit_task.apply_async(args=[event_id], **options)


@dataclass(frozen=True)
class DrainResult:
    committed: int  # orders made final
    again: bool  # a continuation must be queued (this drain holds the flag for it)


def drain_run(*, event_id: int) -> DrainResult:
    """Commit an event's pending orders, batch after batch, under the protocol above.

    Raises what a batch raises (database, Redis): the caller decides about retries.
    """
    flag = drain_flag_key(event_id)
    deadline = time.monotonic() + DRAIN_BUDGET_SECONDS
    batch_size = settings.ORDER_COMMIT_BATCH_SIZE
    committed = 0
    while True:
        get_redis().expire(flag, DRAIN_FLAG_SECONDS)
        result = orders_commit(event_id=event_id, limit=batch_size)
        committed += result.processed
        _record_batch(event_id, result)
        if result.processed < batch_size:
            return DrainResult(committed, again=_drain_end(event_id))
        if time.monotonic() >= deadline:
            return DrainResult(committed, again=True)


def _drain_end(event_id: int) -> bool:
    """Let the flag go; True if an order recorded meanwhile needs a drain and this one
    took the flag again for it."""
    redis_client = get_redis()
    flag = drain_flag_key(event_id)
    redis_client.delete(flag)
    if not orders_pending_exist(event_id=event_id):
        return False
    # False: another drain has been queued meanwhile.
    return bool(redis_client.set(flag, 1, nx=True, ex=DRAIN_FLAG_SECONDS))


def _record_batch(event_id: int, result: CommitResult) -> None:
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
