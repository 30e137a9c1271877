"""Operators' views: /ops/queues/, /metrics and `manage.py queues`."""

import io
import time

import pytest
import requests
from django.core.management import call_command
from prometheus_client.parser import text_string_to_metric_families

from core import ops
from core.redis_client import get_redis
from core.selectors import event_gate_snapshot
from core.services.gate import gate_ensure
from core.services.workers import worker_forget, worker_heartbeat
from tests.live import LiveStack, free_port
from workers.celery import app
from workers.tasks import event_orders_commit_task

pytestmark = pytest.mark.django_db


def buy(client, event, quantity=1):
    return client.post(f"/events/{event.pk}/purchase/", {"quantity": quantity}, format="json")


def test_ops_queues_is_for_admins_only(anon, buyer_client):
    assert anon.get("/ops/queues/").status_code == 401
    response = buyer_client.get("/ops/queues/")
    assert response.status_code == 403
    assert response.json()["code"] == "permission_denied"


def test_ops_queues_reports_real_queued_messages_and_pending_orders(
    admin_client, buyer_client, make_event
):
    first, second = make_event(), make_event()
    for event in (first, second, second):
        assert buy(buyer_client, event).status_code == 202

    body = admin_client.get("/ops/queues/").json()

    assert body["queues"] == {"purchases": 2, "default": 0}  # one drain per event
    assert body["orders"]["pending"] == 3
    assert body["orders"]["oldest_pending_seconds"] > 0
    assert body["workers"] == []
    assert {row["event"]: row["gate_remaining"] for row in body["events"]} == {
        first.pk: 99,
        second.pk: 98,
    }
    assert body["disagreements"] == 0


def test_ops_queues_flags_a_gate_that_disagrees_with_postgres(admin_client, event):
    gate_ensure(event_id=event.pk)
    get_redis().hset(f"gate:{{ev:{event.pk}}}", "remaining", 7)
    body = admin_client.get("/ops/queues/").json()
    assert body["disagreements"] == 1
    assert (
        body["events"][0] | {"gate_remaining": 7, "database_remaining": 100, "agrees": False}
        == body["events"][0]
    )


@pytest.mark.live
@pytest.mark.django_db(transaction=True)
def test_ops_queues_sees_live_workers_and_recent_commits(
    admin_client, buyer_client, event, tmp_path
):
    port = free_port()
    live = LiveStack(
        tmp_path, env={"WORKER_METRICS_PORT": str(port), "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    )
    try:
        live.start_worker(concurrency=1)
        assert buy(buyer_client, event, 2).status_code == 202
        live.wait_until(
            lambda: admin_client.get("/ops/queues/").json()["orders"]["pending"] == 0, "commit"
        )
        body = admin_client.get("/ops/queues/").json()
        worker_metrics = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        live.stop("worker")  # a warm shutdown: the worker takes its announcement back
        after_stop = admin_client.get("/ops/queues/").json()
    finally:
        live.stop_all()
    # The worker announced itself when it started: it is listed in the first summary.
    assert len(body["workers"]) == 1 and body["workers"][0].startswith("worker@")
    assert after_stop["workers"] == []
    assert body["orders"]["finalized_last_minute"] == 1
    # The worker serves its pool processes' counters itself.
    assert 'orders_committed_total{status="confirmed"} 1.0' in worker_metrics
    assert "order_commit_latency_seconds_count 1.0" in worker_metrics


def _samples(text: str) -> dict:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, []).append(sample.labels | {"_value": sample.value})
    return found


def test_metrics_expose_latency_outcomes_queues_and_commit_latency(
    client, buyer_client, make_event
):
    event, sold_out = make_event(), make_event(total_tickets=1)
    buy(buyer_client, event)
    buy(buyer_client, sold_out)
    buy(buyer_client, sold_out)
    event_orders_commit_task.run(event.pk)

    response = client.get("/metrics")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    samples = _samples(response.content.decode())
    outcomes = {s["code"] for s in samples["purchase_requests_total"] if s["_value"] > 0}
    assert {"accepted", "sold_out"} <= outcomes
    routes = {
        (s["method"], s["route"], s["status"])
        for s in samples["http_request_duration_seconds_count"]
    }
    assert ("POST", "events/<int:event_id>/purchase/", "202") in routes
    assert ("POST", "events/<int:event_id>/purchase/", "409") in routes
    assert {s["queue"] for s in samples["queue_depth"]} == {"purchases", "default"}
    assert samples["orders_pending"][0]["_value"] == 1  # the sold-out event's, not committed
    assert samples["gate_disagreements"][0]["_value"] == 0
    assert samples["workers_alive"][0]["_value"] == 0
    assert samples["order_commit_latency_seconds_count"][0]["_value"] >= 1
    assert samples["orders_committed_total"]


def test_metrics_require_the_token_when_one_is_set(client, settings):
    settings.METRICS_TOKEN = "s3cret"
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer s3cret").status_code == 200


def test_queues_command_prints_the_summary(buyer_client, event):
    buy(buyer_client, event)
    out = io.StringIO()
    call_command("queues", stdout=out)
    text = out.getvalue()
    assert "queue purchases         1 waiting" in text
    assert "orders pending 1" in text
    assert f"event {event.pk:>6} gate       99 database       99  ok" in text


def test_ops_knows_the_celery_queues_by_name():
    # core/ does not import the worker package, so the names are written twice.
    assert set(ops.QUEUES) == {queue.name for queue in app.conf.task_queues}


def test_a_worker_is_alive_from_its_heartbeat_until_its_window_passes(admin_client, settings):
    settings.WORKER_HEARTBEAT_SECONDS = 0.2
    worker_heartbeat(name="worker@a")
    worker_heartbeat(name="worker@b")

    assert admin_client.get("/ops/queues/").json()["workers"] == ["worker@a", "worker@b"]
    worker_forget(name="worker@b")
    assert ops.workers_alive() == ["worker@a"]
    time.sleep(3 * 0.2 + 0.1)  # no announcement for three periods: presumed dead
    assert ops.workers_alive() == []


def test_a_heartbeat_drops_workers_long_gone(redis_db, settings):
    settings.WORKER_HEARTBEAT_SECONDS = 1
    redis_db.zadd(ops.WORKERS_KEY, {"worker@gone": time.time() - 3600})

    worker_heartbeat(name="worker@new")

    assert redis_db.zrange(ops.WORKERS_KEY, 0, -1) == ["worker@new"]


def test_metrics_count_the_live_workers(client):
    worker_heartbeat(name="worker@a")

    samples = _samples(client.get("/metrics").content.decode())

    assert samples["workers_alive"][0]["_value"] == 1


def test_ops_queues_costs_the_same_few_queries_whatever_the_number_of_events(
    admin_client, make_event, django_assert_num_queries
):
    for _ in range(5):
        make_event()
    # Pending orders (2: the summary, the last minute's), events on sale with their
    # pending tickets (1), the waiting rooms of events on sale (1), the waitlists of
    # events on sale (1; their figures: none here). Authentication and the permission
    # check read nothing.
    with django_assert_num_queries(5):
        response = admin_client.get("/ops/queues/")

    assert response.status_code == 200
    assert len(response.json()["events"]) == 5


def test_ops_database_figure_is_the_gate_snapshot_s(buyer_client, make_event):
    busy, quiet = make_event(total_tickets=50), make_event()
    for quantity in (2, 3):
        assert buy(buyer_client, busy, quantity).status_code == 202
    busy.refresh_from_db()

    rows = {row["event"]: row for row in ops.gate_agreement()}

    assert rows[busy.pk]["database_remaining"] == event_gate_snapshot(event=busy).remaining == 45
    assert rows[quiet.pk]["database_remaining"] == event_gate_snapshot(event=quiet).remaining
    assert rows[busy.pk]["gate_remaining"] == 45 and rows[busy.pk]["agrees"]
    assert rows[quiet.pk]["gate_remaining"] is None  # no gate yet: nothing to disagree with
