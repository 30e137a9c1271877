"""Operators see each room in /ops/queues/, `manage.py queues` and /metrics."""

import json
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from core.ops import waiting_room_summary
from core.services.waiting_room import waiting_room_configure, waiting_room_join

pytestmark = pytest.mark.django_db


@pytest.fixture
def busy_room(make_event, make_buyers):
    """A room on sale at 2/s with 10 buyers, of whom 2 were admitted (at once)."""
    event = make_event(sale_starts_at=timezone.now() - timedelta(minutes=1))
    waiting_room_configure(event_id=event.pk, rate=2, admission_seconds=60, paused=False)
    for buyer in make_buyers(10):
        waiting_room_join(event_id=event.pk, user_id=buyer.pk, rate=None)
    return event


def test_the_summary_has_each_rooms_figures(busy_room):
    (row,) = waiting_room_summary()

    assert row == {
        "event": busy_room.pk, "joined": 10, "waiting": 8, "serving": 2,
        "admitted_per_second": 0.2, "admitted_not_bought": 2, "expired": 0,
        "capacity": 100, "rate": 2, "paused": False, "sold_out": False, "admitting": True,
    }  # fmt: skip


def test_ops_queues_and_the_command_show_the_rooms(busy_room, admin_client):
    body = admin_client.get("/ops/queues/").json()
    assert [row["event"] for row in body["waiting_rooms"]] == [busy_room.pk]

    out = StringIO()
    call_command("queues", stdout=out)
    assert f"room  {busy_room.pk:>6} joined       10 waiting        8" in out.getvalue()
    out = StringIO()
    call_command("queues", "--json", stdout=out)
    assert json.loads(out.getvalue())["waiting_rooms"][0]["serving"] == 2


def event_gauges(client, prefix: str, event_id: int) -> dict[str, float]:
    """The /metrics samples named `prefix`... with the label event=`event_id`."""
    text = client.get("/metrics").content.decode()
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name.startswith(prefix) and sample.labels == {"event": str(event_id)}
    }


def test_metrics_have_the_room_gauges(busy_room, client):
    found = event_gauges(client, "event_waiting_room_", busy_room.pk)
    assert found == {
        "event_waiting_room_joined": 10, "event_waiting_room_waiting": 8,
        "event_waiting_room_serving": 2, "event_waiting_room_admitted_per_second": 0.2,
        "event_waiting_room_admitted_not_bought": 2, "event_waiting_room_expired": 0,
        "event_waiting_room_capacity": 100, "event_waiting_room_admitting": 1,
    }  # fmt: skip
