"""The top-events materialized view and its refresh."""

import threading
from datetime import timedelta

import psycopg
import pytest
from django.db import connection
from django.utils import timezone

from core.models import TopEvent
from core.selectors import top_events_list
from core.services.top_events import top_events_refresh
from tests.factories import confirmed_order
from workers.tasks import top_events_refresh as top_events_refresh_task


def _connect(autocommit=True) -> psycopg.Connection:
    db = connection.settings_dict
    return psycopg.connect(
        host=db["HOST"] or "127.0.0.1",
        port=db["PORT"] or 5432,
        user=db["USER"] or "postgres",
        dbname=db["NAME"],
        autocommit=autocommit,
    )


@pytest.mark.django_db
def test_view_ranks_upcoming_events_by_tickets_sold_with_shared_ranks_for_ties(buyer, make_event):
    soon = timezone.now() + timedelta(days=1)
    a, b, c, d = (make_event(date=soon + timedelta(hours=i)) for i in range(4))
    confirmed_order(user=buyer, event=b, quantity=5)
    confirmed_order(user=buyer, event=c, quantity=3)
    confirmed_order(user=buyer, event=d, quantity=3)
    past = make_event(date=timezone.now() + timedelta(seconds=1))
    confirmed_order(user=buyer, event=past, quantity=9)
    type(past).objects.filter(pk=past.pk).update(date=timezone.now() - timedelta(days=1))

    assert top_events_refresh() is not None
    rows, refreshed_at = top_events_list(limit=10)

    assert [(r.event_id, r.tickets_sold, r.rank) for r in rows] == [
        (b.pk, 5, 1),
        (c.pk, 3, 2),
        (d.pk, 3, 2),
        (a.pk, 0, 4),
    ]
    assert refreshed_at is not None


@pytest.mark.django_db
def test_cancelled_orders_do_not_count(buyer_client, buyer, event):
    order = confirmed_order(user=buyer, event=event, quantity=4)
    buyer_client.post(f"/orders/{order.pk}/cancel/")
    top_events_refresh()
    assert TopEvent.objects.get(event_id=event.pk).tickets_sold == 0


@pytest.mark.django_db
def test_view_shows_sales_only_after_a_refresh(buyer, event):
    top_events_refresh()
    confirmed_order(user=buyer, event=event, quantity=2)
    assert TopEvent.objects.get(event_id=event.pk).tickets_sold == 0
    top_events_refresh()
    assert TopEvent.objects.get(event_id=event.pk).tickets_sold == 2


@pytest.mark.django_db(transaction=True)
def test_refreshes_never_overlap_and_never_block_readers(buyer, event):
    confirmed_order(user=buyer, event=event, quantity=2)
    top_events_refresh()
    holder = _connect(autocommit=False)
    # Another process is mid-refresh: it holds the single-flight lock and the view's
    # refresh lock, uncommitted.
    holder.execute("SELECT pg_advisory_xact_lock(%s)", [0x70E7E5])
    holder.execute("REFRESH MATERIALIZED VIEW CONCURRENTLY core_top_events")

    assert top_events_refresh() is None  # a second refresh gives way at once
    reader = _connect()
    reader.execute("SET statement_timeout = '2s'")
    rows = reader.execute("SELECT event_id, tickets_sold FROM core_top_events").fetchall()
    assert rows == [(event.pk, 2)]  # read while the refresh is still open
    holder.rollback()
    holder.close()
    reader.close()
    assert top_events_refresh() is not None


@pytest.mark.django_db(transaction=True)
def test_concurrent_refresh_tasks_run_one_at_a_time(event):
    results = []
    threads = [
        threading.Thread(target=lambda: results.append(top_events_refresh_task.run()))
        for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 4 and any(r is not None for r in results)
