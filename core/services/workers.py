"""Workers announce themselves, so operators' reads never have to ping them."""

import time

from core.ops import WORKERS_KEY, worker_alive_window
from core.redis_client import get_redis


def worker_heartbeat(*, name: str) -> None:
    """Record that worker `name` is alive now, and forget workers long gone.

    Called every WORKER_HEARTBEAT_SECONDS by each worker (a bootstep timer in
    workers/celery.py); the only writer of WORKERS_KEY besides worker_forget.
    """
    now = time.time()
    pipe = get_redis().pipeline(transaction=False)
    pipe.zadd(WORKERS_KEY, {name: now})
    # Workers killed without a warm shutdown never remove themselves.
    pipe.zremrangebyscore(WORKERS_KEY, "-inf", now - 10 * worker_alive_window())
    pipe.execute()


def worker_forget(*, name: str) -> None:
    """Drop worker `name` at once (warm shutdown), instead of after the alive window."""
    get_redis().zrem(WORKERS_KEY, name)
