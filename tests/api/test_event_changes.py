"""Events: the Admin's updates and deletes, the stock rules they keep, and the DB's guard."""

from datetime import timedelta

import pytest
from django.db import IntegrityError, transaction
from django.utils import timezone

from core.gate.store import gate_remaining
from core.models import Event, Order
from core.services import events as events_service
from core.services.gate import gate_ensure

pytestmark = pytest.mark.django_db


def valid(**overrides) -> dict:
    date = (timezone.now() + timedelta(days=30)).isoformat()
    return {"name": "Launch party", "date": date, "total_tickets": 100, **overrides}


def assert_error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.content
    assert response.json()["code"] == code
    return response.json()


def sell(event: Event, *, sold: int = 0, pending: int = 0, user) -> None:
    """Put the event in a state with `sold` tickets sold and `pending` reserved."""
    if sold:
        Event.objects.filter(pk=event.pk).update(tickets_sold=sold)
    if pending:
        Order.objects.create(user=user, event=event, quantity=pending)
    event.refresh_from_db()


# --- Updating ------------------------------------------------------------------------


def test_admin_patches_some_fields(admin_client, event):
    response = admin_client.patch(f"/events/{event.pk}/", {"venue": "Hall 2"}, format="json")

    assert response.status_code == 200
    event.refresh_from_db()
    assert (event.venue, event.total_tickets) == ("Hall 2", 100)


def test_admin_replaces_an_event(admin_client, event):
    body = valid(name="Renamed", total_tickets=120)

    response = admin_client.put(f"/events/{event.pk}/", body, format="json")

    assert response.status_code == 200
    event.refresh_from_db()
    assert (event.name, event.total_tickets) == ("Renamed", 120)


def test_put_requires_every_required_field(admin_client, event):
    response = admin_client.put(f"/events/{event.pk}/", {"name": "Only"}, format="json")

    errors = assert_error(response, 400, "invalid")["errors"]
    assert {"date", "total_tickets"} <= errors.keys()


def test_update_ignores_tickets_sold_in_the_body(admin_client, event):
    response = admin_client.patch(f"/events/{event.pk}/", {"tickets_sold": 99}, format="json")

    assert response.status_code == 200
    event.refresh_from_db()
    assert event.tickets_sold == 0


def test_update_validates_like_create(admin_client, event):
    response = admin_client.patch(f"/events/{event.pk}/", {"total_tickets": "5"}, format="json")

    assert "total_tickets" in assert_error(response, 400, "invalid")["errors"]


@pytest.mark.parametrize("method", ["put", "patch", "delete"])
def test_changes_are_refused_to_a_user(buyer_client, event, method):
    response = getattr(buyer_client, method)(f"/events/{event.pk}/", valid(), format="json")

    assert_error(response, 403, "permission_denied")
    assert Event.objects.filter(pk=event.pk, name=event.name).exists()


def test_update_of_an_unknown_event_is_404(admin_client):
    response = admin_client.patch("/events/999999/", {"name": "x"}, format="json")

    assert_error(response, 404, "not_found")


@pytest.mark.parametrize("with_gate", [False, True])
def test_total_cannot_drop_below_sold_plus_pending(admin_client, buyer, event, with_gate):
    sell(event, sold=30, pending=20, user=buyer)
    if with_gate:
        gate_ensure(event_id=event.pk)

    response = admin_client.patch(f"/events/{event.pk}/", {"total_tickets": 49}, format="json")

    assert_error(response, 409, "total_below_committed")
    event.refresh_from_db()
    assert event.total_tickets == 100
    assert gate_remaining(event_id=event.pk) == (50 if with_gate else None)


def test_a_decrease_refused_by_the_database_gives_the_gate_its_tickets_back(
    admin_client, buyer, event
):
    gate_ensure(event_id=event.pk)  # built before the sales below: the gate is stale
    sell(event, sold=30, pending=20, user=buyer)

    response = admin_client.patch(f"/events/{event.pk}/", {"total_tickets": 49}, format="json")

    body = assert_error(response, 409, "total_below_committed")
    assert body["minimum"] == 50  # sold + pending
    assert body["message"] == "total_tickets cannot drop below 50 (tickets sold or reserved)."
    assert gate_remaining(event_id=event.pk) == 100


def test_total_may_drop_to_exactly_sold_plus_pending(admin_client, buyer, event):
    sell(event, sold=30, pending=20, user=buyer)
    gate_ensure(event_id=event.pk)

    response = admin_client.patch(f"/events/{event.pk}/", {"total_tickets": 50}, format="json")

    assert response.status_code == 200
    assert response.json()["tickets_available"] == 20
    assert gate_remaining(event_id=event.pk) == 0


@pytest.mark.parametrize("total, remaining", [(150, 140), (60, 50)])
def test_changing_the_total_moves_the_gate(admin_client, buyer, event, total, remaining):
    sell(event, sold=5, pending=5, user=buyer)
    gate_ensure(event_id=event.pk)
    assert gate_remaining(event_id=event.pk) == 90

    response = admin_client.patch(f"/events/{event.pk}/", {"total_tickets": total}, format="json")

    assert response.status_code == 200
    assert gate_remaining(event_id=event.pk) == remaining


def test_a_total_changed_by_another_admin_meanwhile_keeps_the_gate_in_step(
    admin_client, event, monkeypatch
):
    gate_ensure(event_id=event.pk)
    real_begin = events_service.gate_operation_begin

    def begin_after_another_admin(**kwargs):
        # Another Admin's change commits between this request's read and its lock.
        monkeypatch.setattr(events_service, "gate_operation_begin", real_begin)
        events_service.event_update(event_id=event.pk, data={"total_tickets": 150})
        return real_begin(**kwargs)

    monkeypatch.setattr(events_service, "gate_operation_begin", begin_after_another_admin)

    response = admin_client.patch(f"/events/{event.pk}/", {"total_tickets": 120}, format="json")

    assert response.status_code == 200
    event.refresh_from_db()
    assert event.total_tickets == 120
    assert gate_remaining(event_id=event.pk) == 120


def test_an_event_deleted_during_an_update_is_404(admin_client, event, monkeypatch):
    real_begin = events_service.gate_operation_begin

    def begin_after_a_delete(**kwargs):
        events_service.event_delete(event_id=event.pk)
        return real_begin(**kwargs)

    monkeypatch.setattr(events_service, "gate_operation_begin", begin_after_a_delete)

    response = admin_client.patch(f"/events/{event.pk}/", {"total_tickets": 120}, format="json")

    assert_error(response, 404, "not_found")


# --- Deleting and the database's own guard -------------------------------------------


def test_admin_deletes_an_event_without_sales(admin_client, event):
    gate_ensure(event_id=event.pk)

    response = admin_client.delete(f"/events/{event.pk}/")

    assert response.status_code == 204
    assert not Event.objects.filter(pk=event.pk).exists()
    assert gate_remaining(event_id=event.pk) is None
    assert_error(admin_client.get(f"/events/{event.pk}/"), 404, "not_found")


@pytest.mark.parametrize("sold, pending", [(1, 0), (0, 1)])
def test_an_event_with_sales_cannot_be_deleted(admin_client, buyer, event, sold, pending):
    sell(event, sold=sold, pending=pending, user=buyer)

    assert_error(admin_client.delete(f"/events/{event.pk}/"), 409, "event_has_sales")
    assert Event.objects.filter(pk=event.pk).exists()


def test_an_event_whose_orders_all_failed_or_were_cancelled_can_be_deleted(
    admin_client, buyer, event
):
    for status in ("rejected", "cancelled"):
        Order.objects.create(user=buyer, event=event, quantity=1, status=status)

    assert admin_client.delete(f"/events/{event.pk}/").status_code == 204
    assert not Order.objects.filter(event_id=event.pk).exists()


def test_delete_of_an_unknown_event_is_404(admin_client):
    assert_error(admin_client.delete("/events/999999/"), 404, "not_found")


@pytest.mark.parametrize("sold", [-1, 101])
def test_database_keeps_tickets_sold_within_the_total(event, sold):
    with pytest.raises(IntegrityError), transaction.atomic():
        Event.objects.filter(pk=event.pk).update(tickets_sold=sold)


def test_database_refuses_a_total_below_tickets_sold(event):
    Event.objects.filter(pk=event.pk).update(tickets_sold=10)

    with pytest.raises(IntegrityError), transaction.atomic():
        Event.objects.filter(pk=event.pk).update(total_tickets=9)
