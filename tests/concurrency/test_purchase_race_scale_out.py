"""The race test on the scale-out engines: events spread over a Redis Cluster's nodes,
Celery on RabbitMQ's quorum queues, and both together."""

import itertools

import pytest

from core.gate.keys import inflight_key
from core.models import User
from core.redis_client import redis_slot_owner
from tests.conftest import token_for
from tests.invariants import assert_invariants, wait_until_no_pending
from tests.live import fire

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]


def events_on_distinct_nodes(make_event, count: int, total: int) -> list:
    """`count` events whose gates live on different nodes (any events on one Redis)."""
    events, nodes = [], set()
    for _ in range(200):
        event = make_event(total_tickets=total)
        node = redis_slot_owner(inflight_key(event.pk))
        if node and node in nodes:
            continue
        nodes.add(node)
        events.append(event)
        if len(events) == count:
            return events
    raise AssertionError(f"no {count} events on distinct nodes: {nodes}")


@pytest.mark.parametrize(
    ("redis_topology", "celery_broker"),
    [("cluster", "redis"), ("single", "rabbitmq"), ("cluster", "rabbitmq")],
    indirect=True,
)
def test_race_on_every_node_sells_exactly_the_stock(
    redis_topology, celery_broker, make_stack, make_user, make_event
):
    live = make_stack(env={"CELERY_BROKER_URL": celery_broker})
    tokens = [token_for(make_user(role=User.Role.USER)) for _ in range(40)]
    events = events_on_distinct_nodes(make_event, 3, total=60)
    cycle = itertools.cycle(tokens)
    sent = [
        (
            f"/events/{events[i % 3].pk}/purchase/",
            {"quantity": 1},
            {"Authorization": f"Bearer {next(cycle)}"},
        )
        for i in range(600)
    ]
    results = fire(live.base_url, sent, concurrency=40)

    statuses = [status for status, _ in results]
    assert set(statuses) <= {202, 409}, set(statuses)
    assert statuses.count(202) == 180
    assert {body["code"] for status, body in results if status == 409} == {"sold_out"}
    for event in events:
        wait_until_no_pending(event.pk)
        figures = assert_invariants(event.pk)
        assert figures["tickets_sold"] == 60
        assert figures["gate_remaining"] == 0
