"""Redis Cluster and RabbitMQ in process: the settings that pick them, the operators'
reads across nodes, and what an accept costs on the cluster."""

import os
import subprocess
import sys

import kombu
import pytest

from core import ops
from core.gate.keys import inflight_key
from core.redis_client import get_redis, redis_slot_owner
from core.services.gate import gate_ensure
from tests.api.test_hot_paths import buy, redis_round_trips

pytestmark = pytest.mark.django_db


def _settings_of(**env) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            sys.executable,
            "-c",
            "from django.conf import settings; settings.INSTALLED_APPS;"
            "print(settings.CACHES['default']['BACKEND'], settings.CELERY_BROKER_URL)",
        ],
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "core.settings", "DJANGO_DEBUG": "1",
             "CELERY_BROKER_URL": "", "CACHE_URL": "", **env},
        capture_output=True,
        text=True,
    )  # fmt: skip


def test_a_cluster_redis_url_without_a_broker_of_its_own_is_refused():
    result = _settings_of(REDIS_URL="redis+cluster://127.0.0.1:7000")
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert "cannot be Celery's broker" in result.stderr


def test_a_cluster_broker_or_cache_url_is_refused():
    cluster = "redis+cluster://127.0.0.1:7000"
    for env in ({"CELERY_BROKER_URL": cluster}, {"CACHE_URL": cluster}):
        result = _settings_of(REDIS_URL=cluster, **{"CELERY_BROKER_URL": "amqp://h//", **env})
        assert result.returncode != 0 and "ImproperlyConfigured" in result.stderr, env


def test_on_a_cluster_the_broker_is_rabbitmq_and_the_cache_stays_in_process():
    result = _settings_of(
        REDIS_URL="redis+cluster://127.0.0.1:7000", CELERY_BROKER_URL="amqp://g:g@h:5672//"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [
        "django.core.cache.backends.locmem.LocMemCache",
        "amqp://g:g@h:5672//",
    ]


@pytest.mark.parametrize("redis_topology", ["cluster"], indirect=True)
def test_gate_agreement_reads_events_on_every_node_in_one_pipeline(redis_topology, make_event):
    events = [make_event() for _ in range(12)]
    for event in events:
        gate_ensure(event_id=event.pk)
    nodes = {redis_slot_owner(inflight_key(e.pk)) for e in events}
    assert len(nodes) == 3
    get_redis().hset(f"gate:{{ev:{events[-1].pk}}}", "remaining", 7)

    rows = ops.gate_agreement()

    assert {row["event"]: row["gate_remaining"] for row in rows} == {
        e.pk: 7 if e is events[-1] else 100 for e in events
    }
    assert [row["event"] for row in rows if not row["agrees"]] == [events[-1].pk]


@pytest.mark.parametrize("redis_topology", ["cluster"], indirect=True)
def test_an_accept_on_the_cluster_costs_a_script_and_a_pipeline_per_node_it_touches(
    redis_topology, buyer_client, make_event, settings
):
    settings.AUTH_REVOCATION_CACHE_SECONDS = 60  # as test_hot_paths: the request's own trips
    # The order's card (`order:<id>`, read by polls that know only the id) hashes apart
    # from the event's keys: the pipeline after the INSERT reaches one node or two.
    event = make_event()
    assert buy(buyer_client, event).status_code == 202  # queues the drain, reads revocations
    counts = set()
    for _ in range(12):
        with redis_round_trips() as sent:
            assert buy(buyer_client, event).status_code == 202
        counts.add(len(sent))
    assert counts == {2, 3}


def test_queue_depths_count_ready_messages_on_rabbitmq(rabbitmq_url, settings):
    settings.CELERY_BROKER_URL = rabbitmq_url
    with kombu.Connection(rabbitmq_url) as conn:
        purchases = kombu.Queue("purchases", queue_arguments={"x-queue-type": "quorum"})
        default = kombu.Queue("default", queue_arguments={"x-queue-type": "quorum"})
        producer = conn.Producer()
        for queue in (purchases, default):
            queue(conn.default_channel).declare()
            queue(conn.default_channel).purge()
        for _ in range(2):
            producer.publish({"n": 1}, routing_key="purchases", declare=[purchases])
        try:
            assert ops.queue_depths() == {"purchases": 2, "default": 0}
            assert ops.queue_summary()["queues"] == {"purchases": 2, "default": 0}
        finally:
            purchases(conn.default_channel).purge()


def test_queue_depths_report_an_unreachable_rabbitmq(settings):
    settings.CELERY_BROKER_URL = "amqp://guest:guest@127.0.0.1:1//"
    assert "error" in ops.queue_summary()["queues"]
