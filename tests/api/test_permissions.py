"""Who may call what: anonymous, User and Admin against every endpoint.

Anonymous callers get 401 on protected endpoints, Users 403 on Admin-only ones, and
Admins 403 on purchase (only the User role buys tickets).
"""

from datetime import timedelta

import pytest
from django.urls import get_resolver
from django.utils import timezone
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import RefreshToken

from core.models import Event, Order, Ticket
from core.services.waiting_room import waiting_room_configure
from core.services.waitlists import waitlist_configure

pytestmark = pytest.mark.django_db

ANON, USER, ADMIN = "anonymous", "User", "Admin"


PASSWORD = "correct-horse-battery"


def event_body(world=None) -> dict:
    date = (timezone.now() + timedelta(days=10)).isoformat()
    return {"name": "Matrix", "date": date, "total_tickets": 50}


def register_body(world) -> dict:
    return {"username": f"new-{world['role']}", "password": PASSWORD}


def login_body(world) -> dict:
    return {"username": world["buyer"].username, "password": PASSWORD}


ROOM_BODY = {"rate": 10, "admission_seconds": 60, "paused": False}

# name: (method, path template, body maker); the body maker gets the test's world.
ENDPOINTS = {
    "register": ("post", "/register/", register_body),
    "login": ("post", "/login/", login_body),
    "refresh": ("post", "/token/refresh/", lambda w: {"refresh": w["refresh"]}),
    "logout": ("post", "/logout/", lambda w: {"refresh": w["refresh"]}),
    "events-list": ("get", "/events/", None),
    "events-create": ("post", "/events/", event_body),
    "events-top": ("get", "/events/top/", None),
    "events-detail": ("get", "/events/{event}/", None),
    "events-put": ("put", "/events/{event}/", event_body),
    "events-patch": ("patch", "/events/{event}/", lambda w: {"venue": "Hall 9"}),
    "events-delete": ("delete", "/events/{event}/", None),
    "purchase": ("post", "/events/{event}/purchase/", lambda w: {"quantity": 1}),
    "orders-list": ("get", "/orders/", None),
    "orders-detail": ("get", "/orders/{order}/", None),
    "orders-cancel": ("post", "/orders/{order}/cancel/", None),
    "ops-queues": ("get", "/ops/queues/", None),
    # The waiting-room endpoints run on the world's second event, which has a room.
    "room-public": ("get", "/events/{event}/waiting-room/", None),
    "room-put": ("put", "/events/{event}/waiting-room/", lambda w: ROOM_BODY),
    "room-delete": ("delete", "/events/{event}/waiting-room/", None),
    "room-join": ("post", "/events/{event}/waiting-room/join/", None),
    "room-me": ("get", "/events/{event}/waiting-room/me/", None),
    # The waitlist endpoints run on the world's sold-out event, which has a waitlist.
    "list-get": ("get", "/events/{event}/waitlist/", None),
    "list-put": ("put", "/events/{event}/waitlist/", lambda w: {"offer_seconds": 300}),
    "list-delete": ("delete", "/events/{event}/waitlist/", None),
    "list-join": ("post", "/events/{event}/waitlist/join/", lambda w: {"quantity": 1}),
    "list-me": ("get", "/events/{event}/waitlist/me/", None),
    "list-leave": ("delete", "/events/{event}/waitlist/me/", None),
    "health": ("get", "/health/", None),
    "ready": ("get", "/ready/", None),
    "schema": ("get", "/schema/?format=json", None),
    "docs": ("get", "/docs/", None),
    "buyer-page": ("get", "/buyer/", None),
}

# Expected status per endpoint for (anonymous, User, Admin).
MATRIX = {
    "register": (201, 201, 201),
    "login": (200, 200, 200),
    "refresh": (200, 200, 200),
    "logout": (200, 200, 200),
    "events-list": (401, 200, 200),
    "events-create": (401, 403, 201),
    "events-top": (401, 200, 200),
    "events-detail": (401, 200, 200),
    "events-put": (401, 403, 200),
    "events-patch": (401, 403, 200),
    "events-delete": (401, 403, 204),
    "purchase": (401, 202, 403),
    "orders-list": (401, 200, 200),
    "orders-detail": (401, 200, 200),
    "orders-cancel": (401, 200, 200),
    "ops-queues": (401, 403, 200),
    "room-public": (200, 200, 200),
    "room-put": (401, 403, 200),
    "room-delete": (401, 403, 204),
    "room-join": (401, 201, 403),
    "room-me": (401, 404, 403),  # the buyer has not joined: 404 not_in_waiting_room
    "list-get": (200, 200, 200),
    "list-put": (401, 403, 200),
    "list-delete": (401, 403, 204),
    "list-join": (401, 201, 403),
    "list-me": (401, 404, 403),  # the buyer has not joined: 404 not_on_waitlist
    "list-leave": (401, 404, 403),
    "health": (200, 200, 200),
    "ready": (200, 200, 200),
    "schema": (200, 200, 200),
    "docs": (200, 200, 200),
    "buyer-page": (200, 200, 200),  # static files: the page logs in by itself
}

CODES = {401: "not_authenticated", 403: "permission_denied"}

CASES = [
    pytest.param(name, role, status, id=f"{role}-{name}-{status}")
    for name, statuses in MATRIX.items()
    for role, status in zip((ANON, USER, ADMIN), statuses, strict=True)
]


@pytest.fixture
def world(buyer):
    """An event without sales and a confirmed, cancellable order of the buyer elsewhere."""
    event = Event.objects.create(
        name="Target", date=timezone.now() + timedelta(days=5), total_tickets=100
    )
    sold = Event.objects.create(
        name="Sold", date=timezone.now() + timedelta(days=5), total_tickets=10, tickets_sold=1
    )
    order = Order.objects.create(user=buyer, event=sold, quantity=1, status="confirmed")
    Ticket.objects.create(order=order, user=buyer, event=sold, quantity=1)
    refresh = str(RefreshToken.for_user(buyer))
    room_event = Event.objects.create(
        name="Room", date=timezone.now() + timedelta(days=5), total_tickets=100
    )
    waiting_room_configure(event_id=room_event.pk, **ROOM_BODY)
    # Sold out (to the buyer), with a waitlist.
    list_event = Event.objects.create(
        name="Waitlist", date=timezone.now() + timedelta(days=5), total_tickets=1, tickets_sold=1
    )
    sold_out = Order.objects.create(user=buyer, event=list_event, quantity=1, status="confirmed")
    Ticket.objects.create(order=sold_out, user=buyer, event=list_event, quantity=1)
    waitlist_configure(event_id=list_event.pk, offer_seconds=600, paused=False)
    return {
        "list_event": list_event,
        "event": event,
        "room_event": room_event,
        "order": order,
        "buyer": buyer,
        "refresh": refresh,
    }


def routed_paths() -> set[str]:
    """Every path of api.urls, spelled like the templates above."""
    names = {"<int:event_id>": "{event}", "<int:order_id>": "{order}"}
    paths = set()
    for pattern in get_resolver("api.urls").url_patterns:
        path = "/" + str(pattern.pattern)
        for converter, placeholder in names.items():
            path = path.replace(converter, placeholder)
        paths.add(path)
    return paths


def test_matrix_covers_every_endpoint():
    covered = {template.split("?")[0] for _, template, _ in ENDPOINTS.values()}

    assert MATRIX.keys() == ENDPOINTS.keys()
    assert routed_paths() <= covered, "add the new endpoint to the permission matrix"


@pytest.mark.parametrize("name, role, expected", CASES)
def test_each_role_gets_the_expected_status_from_each_endpoint(
    name, role, expected, world, client_for, buyer, admin
):
    client = {ANON: APIClient(), USER: client_for(buyer), ADMIN: client_for(admin)}[role]
    method, template, body = ENDPOINTS[name]
    event = {"room": world["room_event"], "list": world["list_event"]}.get(
        name.split("-")[0], world["event"]
    )
    path = template.format(event=event.pk, order=world["order"].pk)
    kwargs = {"format": "json"} if method != "get" else {}
    if body:
        kwargs["data"] = body({**world, "role": role})

    response = getattr(client, method)(path, **kwargs)

    assert response.status_code == expected, response.content[:300]
    if expected in CODES:
        assert response.json()["code"] == CODES[expected]


def test_an_admin_reads_any_users_order(admin_client, world):
    assert admin_client.get(f"/orders/{world['order'].pk}/").status_code == 200


def test_a_user_cannot_read_another_users_order(client_for, make_user, world):
    response = client_for(make_user()).get(f"/orders/{world['order'].pk}/")

    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


def test_a_user_cannot_cancel_another_users_order(client_for, make_user, world):
    response = client_for(make_user()).post(f"/orders/{world['order'].pk}/cancel/")

    assert response.status_code == 404
    assert response.json()["code"] == "not_found"
    world["order"].refresh_from_db()
    assert world["order"].status == "confirmed"
