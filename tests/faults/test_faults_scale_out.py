"""Faults on the scale-out engines: a worker SIGKILLed with Celery on RabbitMQ, and a
Redis Cluster node killed mid-sale (no replica) then back empty."""

import signal
import threading
import time

import pytest
import requests

from core.gate.keys import inflight_key
from core.models import Order, User
from core.redis_client import get_redis, redis_slot_owner
from tests.concurrency.conftest import FAST_BEAT
from tests.conftest import token_for
from tests.engines import RedisClusterNodes
from tests.faults.test_faults import REQUESTS, _lock_waiters, _pg
from tests.invariants import assert_invariants, wait_until_no_pending
from tests.live import LiveStack, fire

pytestmark = [pytest.mark.faults, pytest.mark.live, pytest.mark.django_db(transaction=True)]


def test_worker_killed_with_sigkill_inside_the_commit_on_rabbitmq(make_sale, rabbitmq_url):
    # As test_faults' row, with the messages in quorum queues: the killed worker's
    # unacknowledged message returns when its connection closes, not after a timeout.
    sale = make_sale(env={"CELERY_BROKER_URL": rabbitmq_url})
    observer, blocker = _pg(), _pg(autocommit=False)
    blocker.execute("SELECT id FROM core_event WHERE id = %s FOR NO KEY UPDATE", [sale.event_id])
    thread = sale.start(REQUESTS)
    sale.live.wait_until(lambda: _lock_waiters(observer) >= 1, "a commit inside its transaction")
    for child in sale.live.children("worker"):
        child.send_signal(signal.SIGKILL)
    blocker.rollback()
    row = sale.finish(thread)
    observer.close(), blocker.close()
    assert row["oversold"] == 0 and row["lost"] == 0
    assert row["tickets_sold"] == row["total"]


@pytest.fixture
def private_cluster(settings):
    """A Redis Cluster of this test's own (its nodes get killed), for every process."""
    nodes = RedisClusterNodes().start()
    settings.REDIS_URL = nodes.url
    yield nodes
    nodes.stop()


def _event_on(make_event, node: str, total: int):
    for _ in range(200):
        event = make_event(total_tickets=total)
        if redis_slot_owner(inflight_key(event.pk)) == node:
            return event
    raise AssertionError(f"no event on {node}")


def _purchase(base_url: str, event_id: int, token: str) -> tuple[int, str, float]:
    started = time.monotonic()
    response = requests.post(
        f"{base_url}/events/{event_id}/purchase/",
        json={"quantity": 1},
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    return response.status_code, response.json().get("code", ""), time.monotonic() - started


def test_cluster_node_killed_mid_sale_stops_only_its_events(
    private_cluster, private_redis, transactional_db, tmp_path, make_user, make_event
):
    client = get_redis()
    # Keys every request needs (the revocations hash) stay up: that node is not the
    # victim. Losing it would stop authentication, which is why production runs replicas.
    shared = redis_slot_owner("auth:revocations")
    victim, other = [n.name for n in client.get_primaries() if n.name != shared][:2]
    lost = _event_on(make_event, victim, total=150)
    kept = _event_on(make_event, other, total=150)
    live = LiveStack(
        tmp_path,
        env={**FAST_BEAT, "REDIS_URL": private_cluster.url, "CELERY_BROKER_URL": private_redis.url},
    )
    try:
        live.start_api(workers=2)
        live.start_worker(concurrency=2)
        live.start_beat()
        tokens = [token_for(make_user(role=User.Role.USER)) for _ in range(40)]
        sale = [
            (f"/events/{e.pk}/purchase/", {"quantity": 1}, {"Authorization": f"Bearer {t}"})
            for i, t in enumerate(tokens * 3)
            for e in [(lost, kept)[i % 2]]
        ]
        first = fire(live.base_url, sale[:60], concurrency=20)
        assert {status for status, _ in first} == {202}

        private_cluster.kill(private_cluster.port_of(victim))
        during = [_purchase(live.base_url, lost.pk, tokens[i]) for i in range(10)]
        assert {(status, code) for status, code, _ in during} == {(503, "gate_unavailable")}
        assert max(seconds for _, _, seconds in during) < 1.0, during
        others = fire(live.base_url, sale[60:][1::2], concurrency=20)  # the kept event only
        assert {status for status, _ in others} == {202}, others

        private_cluster.restart(private_cluster.port_of(victim))  # empty: the gate is gone
        rest = []
        thread = threading.Thread(
            target=lambda: rest.extend(
                fire(live.base_url, [sale[i % 60] for i in range(400)], concurrency=20)
            )
        )
        thread.start()
        thread.join()
        assert {status for status, _ in rest} <= {202, 409}, {s for s, _ in rest}
        accepted = [body["id"] for status, body in first + others + rest if status == 202]
        for event in (lost, kept):
            wait_until_no_pending(event.pk)
            live.wait_until(lambda event=event: _agrees(event.pk), "the gate to agree", timeout=60)
            figures = assert_invariants(event.pk)
            assert figures["tickets_sold"] == figures["total"]  # sold out, none oversold
        assert not Order.objects.filter(pk__in=accepted, status="pending").exists()
        assert Order.objects.filter(pk__in=accepted).count() == len(accepted)  # none lost
    finally:
        live.stop_all()


def _agrees(event_id: int) -> bool:
    try:
        assert_invariants(event_id)
    except AssertionError:
        return False
    return True
