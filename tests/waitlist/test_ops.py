"""Operators see each waitlist in /ops/queues/, `manage.py queues` and /metrics (on the
`offered` event of conftest.py: 3 entries, one of them offered)."""

from io import StringIO

import pytest
from django.core.management import call_command

from tests.waiting_room.test_ops import event_gauges

pytestmark = pytest.mark.django_db


def test_ops_queues_and_the_command_show_the_waitlists(offered, admin_client):
    body = admin_client.get("/ops/queues/").json()
    assert body["waitlists"] == [
        {"event": offered.pk, "offer_seconds": 600,
         "paused": False, "waiting": 2, "offers_out": 1, "offers_taken": 0,
         "offers_expired": 0}
    ]  # fmt: skip
    assert body["disagreements"] == 0  # the offer is held in both stores
    out = StringIO()
    call_command("queues", stdout=out)
    assert f"list  {offered.pk:>6} waiting        2 offers out      1" in out.getvalue()


def test_metrics_have_the_waitlist_gauges(offered, client):
    assert event_gauges(client, "event_waitlist_", offered.pk) == {
        "event_waitlist_waiting": 2, "event_waitlist_offers_out": 1,
        "event_waitlist_offers_taken": 0, "event_waitlist_offers_expired": 0,
        "event_waitlist_paused": 0,
    }  # fmt: skip
