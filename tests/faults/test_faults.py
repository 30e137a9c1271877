"""Faults injected into a live flash sale; afterwards every invariant must hold."""

import signal
import threading
import time
from collections import Counter
from contextlib import contextmanager

import psycopg
import pytest
import requests
from django.conf import settings
from django.db import connection

from core.models import Order, User
from core.redis_client import get_redis
from core.services.orders import orders_commit
from core.services.users import user_tokens_revoke
from tests.conftest import token_for
from tests.faults.tools import TcpProxy
from tests.live import LiveStack, fire

pytestmark = [pytest.mark.faults, pytest.mark.live, pytest.mark.django_db(transaction=True)]

REQUESTS = 400


def _pg(autocommit: bool = True) -> psycopg.Connection:
    db = connection.settings_dict
    return psycopg.connect(
        host=db["HOST"] or "127.0.0.1",
        port=db["PORT"] or 5432,
        user=db["USER"] or "postgres",
        dbname=db["NAME"],
        autocommit=autocommit,
    )


def _lock_waiters(conn: psycopg.Connection) -> int:
    return conn.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
        "AND query LIKE '%FOR NO KEY UPDATE%' "
        "AND datname = current_database()"
    ).fetchone()[0]


def test_worker_killed_with_sigkill_inside_the_commit(make_sale, reliability_rows):
    sale = make_sale()
    observer, blocker = _pg(), _pg(autocommit=False)
    # Hold the event row: every commit transaction blocks inside, holding its orders.
    blocker.execute("SELECT id FROM core_event WHERE id = %s FOR NO KEY UPDATE", [sale.event_id])
    thread = sale.start(REQUESTS)
    sale.live.wait_until(lambda: _lock_waiters(observer) >= 1, "a commit inside its transaction")
    killed = sale.live.children("worker")
    for child in killed:
        child.send_signal(signal.SIGKILL)
    blocker.rollback()
    row = sale.finish(thread)
    observer.close(), blocker.close()
    assert row["oversold"] == 0 and row["lost"] == 0
    assert row["tickets_sold"] == row["total"]
    reliability_rows["worker_sigkill"] = row


@contextmanager
def _services_on(redis_url: str):
    """Run the test process's services against another Redis (the sale's own)."""
    saved = settings.REDIS_URL
    settings.REDIS_URL = redis_url
    get_redis.cache_clear()
    try:
        yield
    finally:
        settings.REDIS_URL = saved
        get_redis.cache_clear()


def _answers(live: LiveStack, token: str, count: int = 6) -> list[str]:
    """The codes of `count` authenticated reads (both API workers answer some)."""
    codes = []
    for _ in range(count):
        response = requests.get(
            f"{live.base_url}/orders/", headers={"Authorization": f"Bearer {token}"}, timeout=10
        )
        codes.append(response.json().get("code", str(response.status_code)))
    return codes


def test_redis_restarted_empty_mid_sale(make_sale, make_user, private_redis, reliability_rows):
    # Production's per-process copy of the revocations (the tests' default reads Redis
    # on every request): the restart must not void a revocation through it either.
    sale = make_sale(env={"AUTH_REVOCATION_CACHE_SECONDS": "1"})
    fired = make_user(role=User.Role.ADMIN)
    token = token_for(fired)
    with _services_on(private_redis.url):
        user_tokens_revoke(user_id=fired.pk)  # as the admin's deactivation does
    assert set(_answers(sale.live, token)) == {"token_revoked"}
    thread = sale.start(REQUESTS)
    sale.wait_for_orders(40)
    private_redis.restart_empty()  # gate keys, queued and unacknowledged messages: gone
    fault_ended = time.monotonic()
    # The very next requests: from each process's copy, then from the hash rebuilt out
    # of PostgreSQL once the copies are older than the cache time.
    revoked = _answers(sale.live, token)
    time.sleep(1.5)
    revoked += _answers(sale.live, token)
    thread.join()
    row = sale.settle(fault_ended)  # recovery timed from the restart, not from the checks
    assert row["oversold"] == 0 and row["lost"] == 0
    assert row["tickets_sold"] == row["total"]
    assert set(revoked) == {"token_revoked"}, revoked
    row["revoked_token_answers"] = dict(Counter(revoked))
    reliability_rows["redis_restart"] = row


def test_postgres_connections_terminated_mid_sale(make_sale, reliability_rows):
    sale = make_sale()
    killer = _pg()
    with connection.cursor() as cursor:  # the test's own connection is spared
        cursor.execute("SELECT pg_backend_pid()")
        own_pid = cursor.fetchone()[0]
    thread = sale.start(REQUESTS)
    sale.wait_for_orders(30)
    terminated = 0
    for _ in range(10):
        terminated += sum(
            1
            for (ok,) in killer.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid NOT IN (pg_backend_pid(), %s)",
                [own_pid],
            ).fetchall()
            if ok
        )
        time.sleep(0.1)
    ended = time.monotonic()
    thread.join()
    killer.close()
    row = sale.settle(ended)
    assert terminated > 0
    assert row["oversold"] == 0 and row["lost"] == 0
    reliability_rows["pg_terminate"] = row


def test_postgres_unreachable_for_the_api_mid_sale(make_sale, reliability_rows):
    db = connection.settings_dict
    proxy = TcpProxy(int(db["PORT"] or 5432))
    url = f"postgres://{db['USER'] or 'postgres'}@127.0.0.1:{proxy.port}/{db['NAME']}"
    try:
        sale = make_sale(api_env={"DATABASE_URL": url})
        thread = sale.start(REQUESTS, concurrency=32)
        sale.wait_for_orders(30)
        proxy.down()
        time.sleep(2)
        proxy.up()
        row = sale.finish(thread)
    finally:
        proxy.close()
    assert row["answers"].get("database_unavailable", 0) > 0
    assert row["oversold"] == 0 and row["lost"] == 0
    reliability_rows["pg_unreachable"] = row


def test_broker_unreachable_at_enqueue_time(make_sale, private_redis, reliability_rows):
    proxy = TcpProxy(private_redis.port)
    try:
        sale = make_sale(env={"CELERY_BROKER_URL": f"redis://127.0.0.1:{proxy.port}/0"})
        # Down as the sale opens, so the first enqueues meet it (later accepted orders
        # ride on an already queued drain and never publish during a short outage).
        proxy.down()
        # The publisher gives up at once (one retry), so a buyer hears 503 in well under a
        # second and the API's workers are not held by the outage.
        first = time.monotonic()
        sale.results += fire(sale.live.base_url, [sale.purchase(0)], concurrency=1)
        first = time.monotonic() - first
        thread = sale.start(REQUESTS)
        time.sleep(4)
        proxy.up()
        row = sale.finish(thread)
    finally:
        proxy.close()
    assert row["answers"].get("queue_unavailable", 0) > 0
    assert sale.results[0][1]["code"] == "queue_unavailable" and first < 1.5, (
        sale.results[0],
        first,
    )
    assert row["oversold"] == 0 and row["lost"] == 0
    rejected = Order.objects.filter(event_id=sale.event_id, status="rejected")
    assert rejected.filter(reason__icontains="queue").count() == row["answers"]["queue_unavailable"]
    reliability_rows["broker_unreachable"] = row


def test_duplicate_delivery_and_two_workers_on_the_same_order(make_sale, reliability_rows):
    sale = make_sale(env={"ORDER_COMMIT_BATCH_SIZE": "5"})
    broker = sale.redis.client()
    thread = sale.start(REQUESTS)
    sale.wait_for_orders(20)
    # Duplicate every commit message the API queued, repeatedly, while the sale runs.
    for _ in range(20):
        for message in broker.lrange("purchases", 0, -1):
            broker.rpush("purchases", message)
        time.sleep(0.05)
    thread.join()
    ended = time.monotonic()
    row = sale.settle(ended)
    assert row["oversold"] == 0 and row["lost"] == 0
    reliability_rows["duplicate_delivery"] = row


def test_two_commits_of_the_same_order_at_once_make_one_ticket(buyer, make_event):
    event = make_event(total_tickets=5)
    order = Order.objects.create(user=buyer, event=event, quantity=2)
    barrier = threading.Barrier(4)

    def commit():
        barrier.wait()
        try:
            orders_commit(event_id=event.pk)
        finally:
            connection.close()

    threads = [threading.Thread(target=commit) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    event.refresh_from_db()
    assert event.tickets_sold == 2
    assert Order.objects.get(pk=order.pk).status == "confirmed"
    assert event.tickets.count() == 1


def test_two_beat_processes_stay_single_flight(make_sale, tmp_path, reliability_rows):
    sale = make_sale(beats=2, env={"TOP_EVENTS_REFRESH_SECONDS": "1"})
    thread = sale.start(REQUESTS)
    thread.join()
    ended = time.monotonic()
    time.sleep(3)  # let both beats send their due tasks a few times
    row = sale.settle(ended)
    assert row["oversold"] == 0 and row["lost"] == 0
    worker_log = sale.live.log("worker")
    assert "Traceback" not in worker_log, worker_log[-3000:]
    reliability_rows["two_beats"] = row
