"""Automatic admission follows what the sale can serve: the capacity is measured from
the event's real commit batches (the served log the workers write)."""

import math

import pytest
from django.conf import settings as django_settings

from core.gate.line import line_read
from core.models import WaitingRoom
from core.services.orders import orders_commit
from core.services.purchases import purchase_request
from core.services.waiting_room import waiting_room_configure, waiting_room_public
from core.services.waiting_room_persist import waiting_room_persist_all

pytestmark = pytest.mark.django_db


def test_the_capacity_is_the_measured_commit_rate_times_the_admission_lag(
    make_event, make_buyers, settings
):
    settings.WAITING_ROOM_MIN_CAPACITY = 1
    event = make_event(total_tickets=1000)
    for buyer in make_buyers(300):
        purchase_request(user_id=buyer.pk, event_id=event.pk, quantity=1)
    for _ in range(3):
        orders_commit(event_id=event.pk, limit=100)
    # Turned on after these sales (buying in a room needs an admission): the capacity
    # is measured from the commits all the same.
    waiting_room_configure(event_id=event.pk, rate=None, admission_seconds=60, paused=False)
    log = line_read(event_id=event.pk).log
    orders = sum(entry[1] for entry in log)
    busy = sum(entry[2] for entry in log)
    assert orders == 300 and busy > 0

    waiting_room_persist_all()

    lag = django_settings.WAITING_ROOM_ADMISSION_LAG_SECONDS
    expected = math.ceil(orders / busy * lag)
    assert WaitingRoom.objects.get(event=event).capacity == expected
    assert waiting_room_public(event_id=event.pk).capacity == expected
    print(f"\ncommitted {orders} orders in {busy:.3f} s of batches: capacity {expected}")
