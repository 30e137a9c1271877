"""Operators see each waitlist in /ops/queues/, `manage.py queues` and /metrics."""

from io import StringIO

import pytest
from django.core.management import call_command
from prometheus_client.parser import text_string_to_metric_families

from core.services.waitlist_offers import waitlist_offer
from tests.waitlist.conftest import join

pytestmark = pytest.mark.django_db


@pytest.fixture
def busy_list(sold_out, buyers):
    """A sold-out event of 2 whose waitlist has 3 entries, one of them offered."""
    event, orders = sold_out(total=2)
    _, clients = buyers(3)
    for client in clients:
        join(client, event)
    holder, order_id = orders[0]
    assert holder.post(f"/orders/{order_id}/cancel/").status_code == 200
    waitlist_offer(event_id=event.pk)
    return event


def test_ops_queues_and_the_command_show_the_waitlists(busy_list, admin_client):
    body = admin_client.get("/ops/queues/").json()
    assert body["waitlists"] == [
        {"event": busy_list.pk, "offer_seconds": 600,
         "paused": False, "waiting": 2, "offers_out": 1, "offers_taken": 0,
         "offers_expired": 0}
    ]  # fmt: skip
    assert body["disagreements"] == 0  # the offer is held in both stores
    out = StringIO()
    call_command("queues", stdout=out)
    assert f"list  {busy_list.pk:>6} waiting        2 offers out      1" in out.getvalue()


def test_metrics_have_the_waitlist_gauges(busy_list, client):
    text = client.get("/metrics").content.decode()

    found = {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name.startswith("event_waitlist_")
        and sample.labels == {"event": str(busy_list.pk)}
    }
    assert found == {
        "event_waitlist_waiting": 2, "event_waitlist_offers_out": 1,
        "event_waitlist_offers_taken": 0, "event_waitlist_offers_expired": 0,
        "event_waitlist_paused": 0,
    }  # fmt: skip
