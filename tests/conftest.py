"""Shared fixtures: real PostgreSQL (pytest-django's test database) and real Redis."""

import itertools
import os
import socket
from datetime import timedelta

import pytest
import redis
from django.conf import settings
from django.utils import timezone
from redis.cluster import RedisCluster
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import RefreshToken

from api.serializers import role_claims
from core.models import Event, User
from core.redis_client import get_redis
from core.services.users import REVOCATIONS_KEY
from tests.engines import RedisClusterNodes, rabbitmq_vhost

_names = itertools.count()


@pytest.fixture(scope="session")
def redis_cluster():
    """A three-node Redis Cluster of this test session's own (started on first use)."""
    nodes = RedisClusterNodes().start()
    yield nodes
    nodes.stop()


@pytest.fixture(scope="session")
def rabbitmq_url():
    """CELERY_BROKER_URL of a RabbitMQ vhost of this suite's own (127.0.0.1:5672,
    guest/guest), deleted with its queues at the end. Skipped when RabbitMQ does not
    answer, unless REQUIRE_RABBITMQ=1 (CI), which fails instead."""
    try:
        socket.create_connection(("127.0.0.1", 5672), timeout=1).close()
    except OSError:
        if os.environ.get("REQUIRE_RABBITMQ") == "1":
            raise
        pytest.skip("RabbitMQ does not answer on 127.0.0.1:5672")
    with rabbitmq_vhost(os.environ.get("TEST_DATABASE_NAME", "test_ticketing")) as url:
        yield url


@pytest.fixture
def celery_broker(request) -> str:
    """CELERY_BROKER_URL for the live processes: 'redis' (the tests' single Redis) or,
    parametrized indirectly, 'rabbitmq'."""
    if getattr(request, "param", "redis") == "rabbitmq":
        return request.getfixturevalue("rabbitmq_url")
    return settings.CELERY_BROKER_URL


@pytest.fixture
def redis_topology(request, settings) -> str:
    """'single' (REDIS_URL) or, parametrized indirectly, 'cluster': REDIS_URL then names
    the session's cluster, for this process and the live processes a test starts.

    TEST_REDIS_TOPOLOGY=cluster makes 'cluster' the default of every test.
    """
    topology = getattr(request, "param", os.environ.get("TEST_REDIS_TOPOLOGY", "single"))
    if topology == "cluster":
        settings.REDIS_URL = request.getfixturevalue("redis_cluster").url
    return topology


@pytest.fixture(autouse=True)
def redis_db(redis_topology):
    """Give every test an empty Redis database of its own number (never FLUSHALL).

    On the cluster (the session's own, all of it), every primary is flushed.
    """
    client = get_redis()
    if isinstance(client, RedisCluster):
        broker = redis.Redis.from_url(settings.CELERY_BROKER_URL)  # the tests' single Redis

        def flush():
            client.flushdb(target_nodes=RedisCluster.PRIMARIES)
            broker.flushdb()
    else:
        number = client.connection_pool.connection_kwargs.get("db", 0)
        assert number != 0, "tests must not run against Redis database 0"
        flush = client.flushdb
    flush()
    # The test database starts with no revocation: say so, as a warm system would have
    # it, so that query counts measure the request and not the cache's first load.
    client.hset(REVOCATIONS_KEY, "_loaded", 1)
    yield client
    flush()


def token_for(user: User) -> str:
    refresh = RefreshToken.for_user(user)
    role_claims(refresh, user)
    return str(refresh.access_token)


@pytest.fixture
def make_user(db):
    def make(role: str = User.Role.USER, **fields) -> User:
        fields.setdefault("username", f"user{next(_names)}")
        user = User(role=role, **fields)
        user.set_password("correct-horse-battery")
        user.save()
        return user

    return make


@pytest.fixture
def buyer(make_user) -> User:
    return make_user()


@pytest.fixture
def admin(make_user) -> User:
    return make_user(role=User.Role.ADMIN)


@pytest.fixture
def anon() -> APIClient:
    return APIClient()


@pytest.fixture
def client_for():
    def make(user: User) -> APIClient:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {token_for(user)}")
        return client

    return make


@pytest.fixture
def buyer_client(client_for, buyer) -> APIClient:
    return client_for(buyer)


@pytest.fixture
def admin_client(client_for, admin) -> APIClient:
    return client_for(admin)


@pytest.fixture
def make_event(db):
    def make(**fields) -> Event:
        fields.setdefault("name", f"Event {next(_names)}")
        fields.setdefault("date", timezone.now() + timedelta(days=30))
        fields.setdefault("total_tickets", 100)
        return Event.objects.create(**fields)

    return make


@pytest.fixture
def event(make_event) -> Event:
    return make_event()
