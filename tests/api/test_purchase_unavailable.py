"""A dependency down after the reservation: 503 with a clear code, nothing half-done."""

import pytest
import requests

from core.gate.keys import drain_flag_key
from core.gate.store import gate_held, gate_remaining
from core.models import Order
from core.redis_client import get_redis
from core.services.gate import gate_ensure
from tests.conftest import token_for
from tests.live import LiveStack, free_port
from workers import app


@pytest.fixture
def broker_down():
    """Point the Celery producer at a port where nothing listens, then restore it."""
    url = app.conf.broker_url

    def reset_producers():
        app._pool = None
        app.amqp._producer_pool = None

    app.conf.broker_url = f"redis://127.0.0.1:{free_port()}/0"
    reset_producers()
    yield
    app.conf.broker_url = url
    reset_producers()


@pytest.mark.django_db
def test_broker_down_rejects_the_order_and_releases_the_stock(
    buyer_client, buyer, event, broker_down
):
    gate_ensure(event_id=event.pk)
    response = buyer_client.post(
        f"/events/{event.pk}/purchase/", {"quantity": 2}, format="json", HTTP_IDEMPOTENCY_KEY="k"
    )
    assert response.status_code == 503
    assert response.json()["code"] == "queue_unavailable"
    assert response["Retry-After"]
    assert gate_remaining(event_id=event.pk) == 100
    assert gate_held(event_id=event.pk, user_id=buyer.pk) == 0
    assert list(Order.objects.values_list("status", flat=True)) == ["rejected"]
    assert not get_redis().exists(drain_flag_key(event.pk))


@pytest.mark.django_db
def test_any_failure_after_the_order_insert_still_answers_202_with_the_order_pending(
    buyer_client, buyer, event, monkeypatch, caplog
):
    from core.services import purchases

    def publish_fails(**options):
        raise RuntimeError("a bug in the publish step")

    monkeypatch.setattr(purchases, "drain_publish", publish_fails)
    gate_ensure(event_id=event.pk)
    response = buyer_client.post(f"/events/{event.pk}/purchase/", {"quantity": 2}, format="json")

    assert response.status_code == 202
    order = Order.objects.get()
    assert (response.json()["id"], order.status) == (order.pk, "pending")
    assert gate_held(event_id=event.pk, user_id=buyer.pk) == 2  # the requeue job commits it
    logged = [r for r in caplog.records if r.getMessage().startswith("order accepted, its")]
    assert logged and logged[0].exc_info and logged[0].order_id == order.pk


@pytest.mark.live
@pytest.mark.django_db(transaction=True)
def test_database_down_answers_503_and_releases_the_reservation(buyer, event, tmp_path):
    gate_ensure(event_id=event.pk)
    live = LiveStack(
        tmp_path, env={"DATABASE_URL": f"postgres://postgres@127.0.0.1:{free_port()}/x"}
    )
    try:
        live.start_api(workers=1)
        response = requests.post(
            f"{live.base_url}/events/{event.pk}/purchase/",
            json={"quantity": 3},
            headers={"Authorization": f"Bearer {token_for(buyer)}"},
            timeout=30,
        )
        ready = requests.get(f"{live.base_url}/ready/", timeout=30)
    finally:
        live.stop_all()
    assert response.status_code == 503
    assert response.json()["code"] == "database_unavailable"
    assert gate_remaining(event_id=event.pk) == 100
    assert gate_held(event_id=event.pk, user_id=buyer.pk) == 0
    assert not Order.objects.exists()
    assert ready.status_code == 503
    assert ready.json()["checks"]["database"] != "ok"
    assert "database" in ready.json()["message"]
