"""The process-wide Redis client: every Redis use of the product goes through here."""

from __future__ import annotations

from functools import cache

import redis
from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver
from redis.backoff import ExponentialBackoff
from redis.cluster import RedisCluster
from redis.retry import Retry


@cache
def get_redis() -> redis.Redis | RedisCluster:
    """Return the process-wide client of REDIS_URL: a RedisCluster for `redis+cluster://`.

    On a cluster, each multi-key call (a script, a MULTI pipeline) names keys of one
    hash tag only; a plain pipeline may mix slots (RedisCluster splits it per node).
    Cached: a lookup of settings.REDIS_URL per call cost 1.2 us, several times per
    request; a changed REDIS_URL (tests, override_settings) drops the client through
    `redis_clients_forget`. Scripts are registered per client (core/gate/scripts.py),
    so dropping the client drops them too.
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


def redis_clients_forget() -> None:
    """Drop the client (the next call builds it anew, and registers the scripts on it)."""
    get_redis.cache_clear()


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
