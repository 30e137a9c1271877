"""Hundreds of concurrent buyers against live API server and Celery processes."""

import itertools

import pytest

from tests.invariants import assert_invariants, wait_until_no_pending
from tests.live import fire

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]


def purchases(event_id: int, tokens: list[str], count: int, quantity=lambda i: 1):
    cycle = itertools.cycle(tokens)
    return [
        (
            f"/events/{event_id}/purchase/",
            {"quantity": quantity(i)},
            {"Authorization": f"Bearer {next(cycle)}"},
        )
        for i in range(count)
    ]


def test_race_sells_exactly_the_stock_and_no_more(stack, buyers_tokens, make_event):
    event = make_event(total_tickets=100)
    results = fire(stack.base_url, purchases(event.pk, buyers_tokens, 600), concurrency=40)

    statuses = [status for status, _ in results]
    assert set(statuses) <= {202, 409}, set(statuses)
    assert statuses.count(202) == 100
    assert {body["code"] for status, body in results if status == 409} == {"sold_out"}
    wait_until_no_pending(event.pk)
    figures = assert_invariants(event.pk)
    assert figures["tickets_sold"] == 100
    assert figures["gate_remaining"] == 0


def test_race_with_mixed_quantities_never_oversells(stack, buyers_tokens, make_event):
    event = make_event(total_tickets=100, max_tickets_per_user=6)
    results = fire(
        stack.base_url,
        purchases(event.pk, buyers_tokens, 500, quantity=lambda i: 1 + i % 4),
        concurrency=32,
    )
    accepted = [body["quantity"] for status, body in results if status == 202]
    codes = {body["code"] for status, body in results if status == 409}
    assert codes <= {"sold_out", "insufficient_tickets", "limit_exceeded"}
    wait_until_no_pending(event.pk)
    figures = assert_invariants(event.pk)
    assert sum(accepted) == figures["tickets_sold"] <= 100
    assert figures["tickets_sold"] >= 97  # only a tail smaller than a request can remain
