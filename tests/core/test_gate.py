"""The Redis gate: Lua scripts, lazy rebuild and reconciliation with PostgreSQL."""

import pytest

from core.gate.keys import (
    drain_flag_key,
    gate_keys,
    idempotency_key,
    inflight_key,
    key_or_absent,
    rate_key,
)
from core.gate.reserve import PurchaseAsk, gate_release, gate_reserve
from core.gate.store import GateSnapshot, gate_held, gate_load, gate_observe, gate_remaining
from core.redis_client import get_redis, redis_slot_owner
from core.services.gate import gate_ensure, gate_reconcile_all, gate_reconcile_event
from tests.factories import confirmed_order, pending_order

pytestmark = [
    pytest.mark.django_db,
    # Every test on the single Redis and on a three-node Redis Cluster.
    pytest.mark.parametrize("redis_topology", ["single", "cluster"], indirect=True),
]


def reserve(event, user_id=1, quantity=1, op="buy:t"):
    return gate_reserve(PurchaseAsk(user_id, event.pk, quantity, operation_id=op))


def test_gate_is_built_from_total_minus_sold_minus_pending(buyer, make_event):
    event = make_event(total_tickets=10)
    confirmed_order(user=buyer, event=event, quantity=3)
    pending_order(user=buyer, event=event, quantity=2)
    gate_ensure(event_id=event.pk)
    assert gate_remaining(event_id=event.pk) == 5
    assert gate_held(event_id=event.pk, user_id=buyer.pk) == 5


def test_build_does_not_overwrite_an_existing_gate(make_event):
    event = make_event(total_tickets=10)
    gate_ensure(event_id=event.pk)
    reserve(event, quantity=4)
    gate_ensure(event_id=event.pk)
    assert gate_remaining(event_id=event.pk) == 6


def test_reserve_answers_missing_before_the_gate_exists(event):
    assert reserve(event).status == "missing"


def test_keys_of_one_event_share_a_cluster_hash_tag(event):
    keys = [*gate_keys(event.pk), drain_flag_key(event.pk)]
    keys.append(idempotency_key(event_id=event.pk, user_id=1, key="k"))
    keys.append(rate_key(event_id=event.pk, user_id=1, window=7))
    keys.append(key_or_absent("", event.pk))
    assert {key[key.index("{") : key.index("}") + 1] for key in keys} == {f"{{ev:{event.pk}}}"}


def test_reconcile_corrects_a_drifted_gate(buyer, make_event):
    event = make_event(total_tickets=10)
    confirmed_order(user=buyer, event=event, quantity=2)
    gate_ensure(event_id=event.pk)
    get_redis().hset(f"gate:{{ev:{event.pk}}}", "remaining", 1)

    assert gate_reconcile_event(event_id=event.pk) == "fixed"
    assert gate_remaining(event_id=event.pk) == 8
    assert gate_reconcile_event(event_id=event.pk) == "ok"


def test_reconcile_waits_while_an_operation_is_in_flight(make_event):
    event = make_event(total_tickets=10)
    gate_ensure(event_id=event.pk)
    reserve(event, quantity=3)  # reserved in Redis, order not yet in PostgreSQL
    assert gate_reconcile_event(event_id=event.pk) == "busy"
    assert gate_remaining(event_id=event.pk) == 7


def test_reconcile_gives_up_when_the_gate_moved_since_its_snapshot(make_event):
    event = make_event(total_tickets=10)
    gate_ensure(event_id=event.pk)
    seq = gate_observe(event_id=event.pk).seq
    reserve(event, quantity=2)
    get_redis().zrem(inflight_key(event.pk), "buy:t")
    snapshot = GateSnapshot(remaining=10, starts=0, ends=0, limit=0, held_by_user={})
    assert gate_load(event_id=event.pk, snapshot=snapshot, expected_seq=seq) is False
    assert gate_remaining(event_id=event.pk) == 8


def test_reconcile_drops_operations_of_dead_processes(make_event, redis_db):
    event = make_event(total_tickets=10)
    gate_ensure(event_id=event.pk)
    reserve(event, quantity=3)
    redis_db.zadd(inflight_key(event.pk), {"buy:t": 1})  # started long ago, never ended
    assert gate_reconcile_event(event_id=event.pk) == "fixed"
    assert gate_remaining(event_id=event.pk) == 10


def test_reconcile_builds_a_missing_gate_and_skips_past_events(make_event):
    event = make_event(total_tickets=4)
    assert gate_reconcile_all() == {"built": 1}
    assert gate_remaining(event_id=event.pk) == 4


def test_release_on_a_lost_gate_does_not_create_a_partial_one(event):
    gate_release(event_id=event.pk, operation_id="x", holdings=[(1, 2)])
    assert gate_remaining(event_id=event.pk) is None


def test_events_on_every_cluster_node_reserve_release_and_reconcile(
    redis_topology, buyer, make_event
):
    events = [make_event(total_tickets=5) for _ in range(12)]
    nodes = {redis_slot_owner(f"gate:{{ev:{e.pk}}}") for e in events}
    assert len(nodes) == (3 if redis_topology == "cluster" else 1)
    for event in events:
        gate_ensure(event_id=event.pk)
        ask = PurchaseAsk(buyer.pk, event.pk, 2, "k", rate=(10, 60), operation_id="buy:x")
        answer = gate_reserve(ask)
        assert (answer.status, answer.tickets_left) == ("ok", 3)
        assert answer.place.number == 1  # the first accept of the event's line
        gate_release(event_id=event.pk, operation_id="buy:x", holdings=[(buyer.pk, 2)])
        assert gate_remaining(event_id=event.pk) == 5
    assert gate_reconcile_all() == {"ok": len(events)}
