"""Workaround for a kombu bug that makes a worker exit when its Redis broker restarts.

With late acknowledgement a worker always holds unacknowledged messages. When the broker
connection drops, kombu later uses channels of the released connection (to restore the
unacknowledged messages on close, or to acknowledge a task that finished meanwhile);
building a Redis client for them dereferences the released connection's `None` info,
and the AttributeError escapes Celery's recoverable-error handling: the worker exits
with "Unrecoverable error" instead of reconnecting.

Raising the broker's own ConnectionError there instead makes it an ordinary connection
loss: Celery reconnects, the acknowledgement is dropped (the message is redelivered after
the visibility timeout and the commit task is idempotent), and beat re-queues stale
orders. tests/faults/test_faults.py restarts Redis mid-sale to keep this honest.
"""

import redis
from kombu.transport import redis as kombu_redis

_original_connparams = kombu_redis.Channel._connparams


def _connparams_of_live_connection(self, asynchronous=False):
    transport = self.connection
    if transport is None or getattr(transport, "client", None) is None:
        raise redis.exceptions.ConnectionError("The broker connection was released.")
    return _original_connparams(self, asynchronous=asynchronous)


def apply() -> None:
    kombu_redis.Channel._connparams = _connparams_of_live_connection
