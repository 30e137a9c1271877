"""What is left to sell, total - sold - pending: one definition for one event or many."""

import pytest

from core.models import Event, Order
from core.selectors import event_remaining, events_with_remaining
from tests.factories import confirmed_order, pending_order

pytestmark = pytest.mark.django_db


@pytest.fixture
def half_sold(make_event, buyer) -> Event:
    """50 tickets: 5 sold, 2 + 3 pending, 4 rejected (back in stock)."""
    event = make_event(total_tickets=50)
    confirmed_order(user=buyer, event=event, quantity=5)
    pending_order(user=buyer, event=event, quantity=2)
    pending_order(user=buyer, event=event, quantity=3)
    Order.objects.create(user=buyer, event=event, quantity=4, status=Order.Status.REJECTED)
    return event


def test_remaining_leaves_out_sold_and_pending_tickets(half_sold, django_assert_num_queries):
    with django_assert_num_queries(1):
        assert event_remaining(event=half_sold) == 50 - 5 - (2 + 3)


def test_remaining_uses_the_total_and_sold_the_caller_holds(half_sold):
    half_sold.total_tickets = 8  # changed, not saved: what an update checks

    assert event_remaining(event=half_sold) == 8 - 5 - 5


def test_many_events_get_the_same_figure_in_one_query(
    half_sold, make_event, django_assert_num_queries
):
    untouched = make_event(total_tickets=7)

    with django_assert_num_queries(1):
        rows = {
            event.pk: (event.pending, event.remaining)
            for event in events_with_remaining(Event.objects.all())
        }

    assert rows == {half_sold.pk: (5, event_remaining(event=half_sold)), untouched.pk: (0, 7)}
