"""The Redis availability gate: a fast, atomic, rebuildable copy of each event's stock.

PostgreSQL is the authority. The gate answers "is there stock for this buyer?" in one
Lua call so that rejections never reach the database or the queue. Each event's keys
share the hash tag ``{ev:<id>}``, so every script touches one Redis Cluster slot.

Per event:
  ``gate:{ev:N}``           hash: remaining, starts, ends, limit (0 = none), seq, and the
                            buyers' line: line (its name), arrived, served, trusted
  ``gate:{ev:N}:buyers``    hash: user id -> tickets held (reserved or sold)
  ``gate:{ev:N}:inflight``  zset: operations between their Redis and PostgreSQL halves
  ``gate:{ev:N}:idem:...``  idempotency record of one purchase request
  ``gate:{ev:N}:rate:U:W``  purchase requests of buyer U in rate window W (the throttle)
  ``gate:{ev:N}:served``    list: the last commit batches, "<epoch s>:<orders>:<seconds>"
  ``gate:{ev:N}:batches``   hash: commit batch id -> when it began, while it runs
"""

from __future__ import annotations

import hashlib
import time
import uuid
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import redis
from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver
from redis.backoff import ExponentialBackoff
from redis.cluster import RedisCluster
from redis.retry import Retry

_LUA_DIR = Path(__file__).resolve().parent
# An operation older than this is taken to have died; reconciliation stops waiting for it.
INFLIGHT_STALE_SECONDS = 60
# While this flag lives, a drain task for the event is queued or running (and keeps it
# alive); the TTL only bounds the damage of a lost task message or a killed worker
# (the next purchase then queues a new drain; the requeue job is the last resort).
DRAIN_FLAG_SECONDS = 10


@cache
def get_redis() -> redis.Redis | RedisCluster:
    """Return the process-wide client of REDIS_URL: a RedisCluster for `redis+cluster://`.

    Every Redis use of the product goes through here. On a cluster, each multi-key call
    (a script, a MULTI pipeline) names keys of one hash tag only; a plain pipeline may
    mix slots (RedisCluster splits it per node). Cached: a lookup of settings.REDIS_URL
    per call cost 1.2 us, several times per request; a changed REDIS_URL (tests,
    override_settings) drops the client through `redis_clients_forget`.
    """
    return _client(settings.REDIS_URL)


def is_cluster_url(url: str) -> bool:
    return url.split("://", 1)[0] in ("redis+cluster", "rediss+cluster")


def _client(url: str) -> redis.Redis | RedisCluster:
    # One pooled client per process (redis-py resets its pools after a fork).
    options = {
        "socket_timeout": 2,
        "socket_connect_timeout": 2,
        "health_check_interval": 30,
        "decode_responses": True,
    }
    if not is_cluster_url(url):
        return redis.Redis.from_url(url, **options)
    # A node that is down answers "connection refused" at once; two quick retries (each
    # re-reads the slot map) follow a failover, and a slot whose node is gone for good
    # fails in milliseconds: a purchase answers 503 instead of waiting (redis-py's
    # default is 10 retries with up to 1 s between them).
    return RedisCluster.from_url(
        url.replace("+cluster", "", 1),
        retry=Retry(ExponentialBackoff(cap=0.05, base=0.005), 2),
        **options,
    )


@cache
def _script(name: str):
    return get_redis().register_script((_LUA_DIR / f"stock_{name}.lua").read_text())


def redis_clients_forget() -> None:
    """Drop the client and the scripts bound to it (the next call builds them anew)."""
    _get_redis_cache_clear()
    _script.cache_clear()


_get_redis_cache_clear = get_redis.cache_clear
get_redis.cache_clear = redis_clients_forget  # callers that clear the client clear its scripts


@receiver(setting_changed)
def _redis_url_changed(*, setting: str, **kwargs) -> None:
    if setting == "REDIS_URL":
        redis_clients_forget()


def redis_slot_owner(key: str) -> str:
    """`host:port` of the cluster node serving `key` ("" on a single Redis)."""
    client = get_redis()
    if not isinstance(client, RedisCluster):
        return ""
    return client.get_node_from_key(key).name


def _keys(event_id: int) -> tuple[str, str, str]:
    base = f"gate:{{ev:{event_id}}}"
    return base, f"{base}:buyers", f"{base}:inflight"


def _given_or_absent(key: str, event_id: int) -> str:
    # An optional key a script does not use, named in the event's slot (see stock_reserve.lua).
    return key or f"{_keys(event_id)[0]}:-"


def idempotency_key(*, event_id: int, user_id: int, key: str) -> str:
    digest = hashlib.sha256(key.encode()).hexdigest()[:32]
    return f"gate:{{ev:{event_id}}}:idem:{user_id}:{digest}"


def inflight_key(event_id: int) -> str:
    return _keys(event_id)[2]


def rate_key(*, event_id: int, user_id: int, window: int) -> str:
    return f"gate:{{ev:{event_id}}}:rate:{user_id}:{window}"


def line_keys(event_id: int) -> tuple[str, str, str]:
    """The gate hash (which holds the line's counters), the served log, the batches."""
    base = f"gate:{{ev:{event_id}}}"
    return base, f"{base}:served", f"{base}:batches"


def drain_flag_key(event_id: int) -> str:
    return f"gate:{{ev:{event_id}}}:drain"


def new_operation_id(prefix: str) -> str:
    return f"{prefix}:{uuid.uuid4().hex}"


@dataclass(frozen=True)
class GateAnswer:
    status: str  # ok | replay | missing | sale_not_open | sold_out | insufficient | limit
    value: str | int = 0
    # With 'ok': the accept's place in the event's line, and the line as it stood
    # (line name, number, served, trusted, served log, batch starts; core/line.py).
    line: tuple = ()


@dataclass(frozen=True)
class GateSnapshot:
    """What PostgreSQL says the gate of one event should hold."""

    remaining: int
    starts: float
    ends: float
    limit: int
    held_by_user: dict[int, int]

    def as_args(self) -> list:
        args: list = [self.remaining, self.starts, self.ends, self.limit]
        for user_id, held in self.held_by_user.items():
            args += [user_id, held]
        return args


def stock_reserve(
    *,
    event_id: int,
    user_id: int,
    quantity: int,
    operation_id: str,
    idem_key: str = "",
    fingerprint: str = "",
    rate: tuple[int, int] | None = None,
) -> GateAnswer:
    """Reserve `quantity` for `user_id` if the buyer's request rate on this event (`rate`:
    requests allowed, per seconds), the sale window, the stock and the per-user limit allow.

    A throttled answer carries the seconds left in the rate window as its value; an
    accept carries its number in the event's line, given in the same call.
    """
    now = time.time()
    counter, allowed, period = "", 0, 0
    if rate:
        allowed, period = rate
        counter = rate_key(event_id=event_id, user_id=user_id, window=int(now // period))
    status, value, *line = _script("reserve")(
        keys=[
            *_keys(event_id),
            _given_or_absent(idem_key, event_id),
            _given_or_absent(counter, event_id),
            *line_keys(event_id)[1:],
        ],
        args=[
            user_id,
            quantity,
            f"{now:.3f}",
            operation_id,
            fingerprint,
            settings.IDEMPOTENCY_KEY_TTL_SECONDS,
            allowed,
            period,
        ],
    )
    if status == "throttled":
        value = max(1, int(period - now % period + 0.999))
    return GateAnswer(status, value, tuple(line))


def stock_release(
    *,
    event_id: int,
    operation_id: str,
    holdings: list[tuple[int, int]],
    idem_key: str = "",
) -> None:
    """Give (user id, quantity) pairs back to the gate and end `operation_id`."""
    args: list = [operation_id]
    for user_id, quantity in holdings:
        args += [user_id, quantity]
    _script("release")(keys=[*_keys(event_id), _given_or_absent(idem_key, event_id)], args=args)


def stock_operation_begin(*, event_id: int, operation_id: str, delta: int = 0) -> GateAnswer:
    """Mark an operation in flight, taking `-delta` tickets out first when delta < 0."""
    gate, _, inflight = _keys(event_id)
    status, value = _script("adjust")(
        keys=[gate, inflight], args=[min(delta, 0), operation_id, "begin", "", "", ""]
    )
    return GateAnswer(status, value)


def stock_operation_end(
    *,
    event_id: int,
    operation_id: str,
    delta: int = 0,
    window: tuple[float, float, int] | None = None,
) -> GateAnswer:
    """End an operation, adding `delta` tickets and storing a new sale window/limit."""
    gate, _, inflight = _keys(event_id)
    starts, ends, limit = window if window else ("", "", "")
    status, value = _script("adjust")(
        keys=[gate, inflight], args=[delta, operation_id, "end", starts, ends, limit]
    )
    return GateAnswer(status, value)


def stock_line(mode: str, *, event_id: int, name: str, args: tuple = ()):
    """Record in the event's line: a commit batch's 'begin' or 'done', a number given to
    an accept that recorded no order ('skip'), or the line's 'trust' or 'doubt'.

    See core/stock_line.lua for each mode's arguments.
    """
    return _script("line")(keys=list(line_keys(event_id)), args=[mode, name, *args])


def stock_load(*, event_id: int, snapshot: GateSnapshot, expected_seq: str | None = None) -> bool:
    """Write the gate from `snapshot`: when missing (init) or unchanged since `expected_seq`."""
    mode = "init" if expected_seq is None else "reconcile"
    written = _script("load")(
        keys=list(_keys(event_id)), args=[mode, expected_seq or "", *snapshot.as_args()]
    )
    return bool(written)


def stock_observe(*, event_id: int) -> tuple[str | None, int, int | None]:
    """Return (seq, live operations in flight, remaining), dropping dead operations first."""
    gate, _, inflight = _keys(event_id)
    pipe = get_redis().pipeline(transaction=True)
    pipe.zremrangebyscore(inflight, "-inf", time.time() - INFLIGHT_STALE_SECONDS)
    pipe.hget(gate, "seq")
    pipe.zcard(inflight)
    pipe.hget(gate, "remaining")
    _, seq, live, remaining = pipe.execute()
    return seq, live, None if remaining is None else int(remaining)


def stock_remaining(*, event_id: int) -> int | None:
    value = get_redis().hget(_keys(event_id)[0], "remaining")
    return None if value is None else int(value)


def stock_held(*, event_id: int, user_id: int) -> int:
    return int(get_redis().hget(_keys(event_id)[1], str(user_id)) or 0)


def stock_forget(*, event_id: int) -> None:
    """Drop an event's gate (the event is gone); idempotency records expire by themselves."""
    get_redis().delete(*_keys(event_id), drain_flag_key(event_id))
