"""OWASP API1 (object), API2 (authentication), API3 (property) and API5 (function) access.

tests/api/test_permissions.py holds the status matrix (every endpoint x anonymous, User,
Admin) and the plain cross-user read and cancel; test_accounts.py the privilege fields
of registration. What is added here: that nothing leaks or moves when access is refused,
that ids cannot be walked, that filters cannot widen a User's view, that alternative
methods do not get round a role check, and that no writable endpoint lets a body set a
field it should not (mass assignment), checked in the database and the gate.
"""

from datetime import timedelta

import jwt
import pytest
from django.test import Client
from django.utils import timezone
from rest_framework_simplejwt.tokens import RefreshToken

from core.gate.store import gate_held, gate_remaining
from core.models import Event, Order, Ticket, User
from core.redis_client import get_redis
from core.services.gate import gate_ensure
from tests.factories import confirmed_order, pending_order

pytestmark = [pytest.mark.security, pytest.mark.django_db]

PASSWORD = "correct-horse-battery"


def assert_error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.content[:300]
    assert response.json()["code"] == code
    return response.json()


def claims(token: str) -> dict:
    return jwt.decode(token, options={"verify_signature": False})


def later(days: int = 30) -> str:
    return (timezone.now() + timedelta(days=days)).isoformat()


@pytest.fixture
def alice(make_user) -> User:
    return make_user(username="alice")


@pytest.fixture
def mallory(make_user) -> User:
    return make_user(username="mallory")


@pytest.fixture
def sale(alice, mallory, make_event):
    """Two events on sale; Alice holds a confirmed and a pending order, Mallory one order."""
    concert, match = make_event(name="Concert", total_tickets=50), make_event(name="Match")
    orders = {
        "alice_confirmed": confirmed_order(user=alice, event=concert, quantity=3),
        "alice_pending": pending_order(user=alice, event=match, quantity=2),
        "mallory": confirmed_order(user=mallory, event=match, quantity=1),
    }
    for event in (concert, match):
        gate_ensure(event_id=event.pk)
    return {"concert": concert, "match": match, **orders}


def state(*events: Event) -> dict:
    """Return what a refused or ignored request must leave as it was.

    How many events, orders and tickets exist; every user; the given events with their
    orders, tickets and gate.
    """
    ids = [e.pk for e in events]
    return {
        "counts": [model.objects.count() for model in (Event, Order, Ticket)],
        "users": list(
            User.objects.order_by("pk").values_list("pk", "role", "is_staff", "is_superuser")
        ),
        "events": list(Event.objects.filter(pk__in=ids).order_by("pk").values()),
        "orders": list(Order.objects.filter(event__in=ids).order_by("pk").values()),
        "tickets": list(
            Ticket.objects.filter(event__in=ids)
            .order_by("pk")
            .values_list("pk", "order_id", "quantity")
        ),
        "gate": [
            (
                gate_remaining(event_id=pk),
                get_redis().hgetall(f"gate:{{ev:{pk}}}:buyers"),
            )
            for pk in ids
        ],
    }


# --- API1: broken object level authorization --------------------------------------


def test_walking_the_order_ids_finds_only_the_callers_own_orders(client_for, mallory, sale):
    client = client_for(mallory)
    highest = Order.objects.order_by("-pk").values_list("pk", flat=True).first()
    missing = client.get(f"/orders/{highest + 1}/")

    seen = {}
    for order_id in range(1, highest + 1):
        response = client.get(f"/orders/{order_id}/")
        seen[order_id] = response.status_code
        if response.status_code == 404:
            # Someone else's order reads exactly like one that does not exist.
            assert response.json() == missing.json()

    assert {pk for pk, status in seen.items() if status == 200} == {sale["mallory"].pk}
    assert set(seen.values()) == {200, 404}
    assert_error(missing, 404, "not_found")


@pytest.mark.parametrize("target", ["alice_confirmed", "alice_pending"])
def test_cancelling_another_users_order_moves_neither_the_order_nor_the_stock(
    client_for, mallory, sale, target
):
    before = state(sale["concert"], sale["match"])

    response = client_for(mallory).post(f"/orders/{sale[target].pk}/cancel/")

    assert_error(response, 404, "not_found")
    assert state(sale["concert"], sale["match"]) == before


@pytest.mark.parametrize(
    "query",
    [
        "",
        "?status=pending",
        "?status=confirmed",
        "?event={match}",
        "?event={concert}&status=confirmed",
        "?page_size=100",
    ],
)
def test_order_list_filters_never_widen_a_users_view_to_others_orders(
    client_for, mallory, sale, query
):
    query = query.format(match=sale["match"].pk, concert=sale["concert"].pk)

    body = client_for(mallory).get(f"/orders/{query}").json()

    # Filters are an Admin's; a User always gets exactly their own orders.
    assert [o["id"] for o in body["results"]] == [sale["mallory"].pk]
    assert body["count"] == 1


def test_admin_filters_do_see_every_users_orders(admin_client, sale):
    body = admin_client.get(f"/orders/?event={sale['match'].pk}").json()

    assert {o["id"] for o in body["results"]} == {sale["alice_pending"].pk, sale["mallory"].pk}


@pytest.mark.parametrize("path", ["/orders/", "/orders/{order}/", "/events/{event}/purchase/"])
def test_an_order_as_shown_to_its_buyer_names_no_user_and_no_idempotency_key(
    client_for, alice, sale, path
):
    client = client_for(alice)
    path = path.format(order=sale["alice_confirmed"].pk, event=sale["concert"].pk)
    if "purchase" in path:
        response = client.post(path, {"quantity": 1}, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    else:
        response = client.get(path)

    body = response.json()
    shown = body["results"] if "results" in body else [body]
    assert shown
    for order in shown:
        # A pending order answered by the purchase or its poll adds its place in line.
        line = {"position", "estimated_wait_seconds"} if order.keys() & {"position"} else set()
        assert not line or (order["status"] == "pending" and path != "/orders/")
        assert (
            order.keys()
            == {
                "id",
                "status",
                "event",
                "quantity",
                "reason",
                "created_at",
                "updated_at",
                "finalized_at",
            }
            | line
        )


# --- API2: broken authentication (what test_accounts/test_tokens do not cover) ------


def test_login_answers_alike_for_an_unknown_user_a_wrong_password_and_a_disabled_account(
    anon, make_user
):
    disabled = make_user(username="disabled", is_active=False)
    make_user(username="known")

    answers = [
        anon.post("/login/", {"username": "nobody-here", "password": PASSWORD}, format="json"),
        anon.post("/login/", {"username": "known", "password": PASSWORD + "x"}, format="json"),
        anon.post("/login/", {"username": disabled.username, "password": PASSWORD}, format="json"),
    ]

    for response in answers:
        assert_error(response, 401, "authentication_failed")
    assert len({response.content for response in answers}) == 1  # nothing tells them apart


# --- API5: broken function level authorization -------------------------------------

ADMIN_OPERATIONS = {
    "events-create": (
        "post",
        "/events/",
        lambda e: {"name": "Mine", "date": later(), "total_tickets": 5},
    ),
    "events-put": (
        "put",
        "/events/{event}/",
        lambda e: {"name": "Mine", "date": later(), "total_tickets": 1},
    ),
    "events-patch": (
        "patch",
        "/events/{event}/",
        lambda e: {"total_tickets": 1, "max_tickets_per_user": 100},
    ),
    "events-delete": ("delete", "/events/{event}/", None),
    "ops-queues": ("get", "/ops/queues/", None),
    "waiting-room-put": (
        "put",
        "/events/{event}/waiting-room/",
        lambda e: {"rate": None, "admission_seconds": 60},
    ),
    "waiting-room-delete": ("delete", "/events/{event}/waiting-room/", None),
}


@pytest.mark.parametrize("name", ADMIN_OPERATIONS)
def test_a_user_refused_an_admin_operation_changes_nothing_anywhere(
    client_for, mallory, sale, name
):
    method, template, body = ADMIN_OPERATIONS[name]
    event = sale["match"]
    before = state(sale["concert"], event)
    kwargs = {"data": body(event), "format": "json"} if body else {}

    response = getattr(client_for(mallory), method)(template.format(event=event.pk), **kwargs)

    assert_error(response, 403, "permission_denied")
    assert "queues" not in response.json()
    assert state(sale["concert"], event) == before


@pytest.mark.parametrize("path", ["/ops/queues/", "/events/{event}/"])
def test_options_tells_a_user_nothing_an_admin_operation_would(client_for, mallory, sale, path):
    response = client_for(mallory).options(path.format(event=sale["match"].pk))

    if path == "/ops/queues/":
        assert_error(response, 403, "permission_denied")
    else:
        # Reading an event is allowed; the metadata lists no writable fields to a User.
        assert response.status_code == 200
        assert "actions" not in response.json()


def test_head_on_an_admin_operation_is_refused_to_a_user(client_for, mallory):
    response = client_for(mallory).head("/ops/queues/")

    # A HEAD answer has no body to carry a `code`; the status is the refusal.
    assert response.status_code == 403
    assert not response.content


@pytest.mark.parametrize(
    "header", ["HTTP_X_HTTP_METHOD_OVERRIDE", "HTTP_X_METHOD_OVERRIDE", "HTTP_X_HTTP_METHOD"]
)
@pytest.mark.parametrize(
    "caller, status, code",
    [("User", 403, "permission_denied"), ("Admin", 405, "method_not_allowed")],
)
def test_a_method_override_header_does_not_turn_a_post_into_a_delete(
    client_for, mallory, admin, sale, header, caller, status, code
):
    event = sale["match"]
    before = state(event)
    client = client_for(mallory if caller == "User" else admin)

    response = client.post(f"/events/{event.pk}/", {}, format="json", **{header: "DELETE"})

    # The method is the request line's: a User's POST is refused as a write, an
    # Admin's as a method this URL does not have; nothing is deleted either way.
    assert_error(response, status, code)
    assert state(event) == before


def test_a_user_cannot_sign_into_the_django_admin_with_their_password(mallory):
    browser = Client()

    response = browser.post(
        "/admin/login/?next=/admin/", {"username": mallory.username, "password": PASSWORD}
    )

    # Django's admin answers HTML: the refusal is the login form again, then a redirect.
    assert response.status_code == 200 and b"errornote" in response.content
    assert browser.get("/admin/").status_code == 302


def test_an_admin_role_is_what_opens_the_django_admin(admin):
    browser = Client()

    browser.post("/admin/login/?next=/admin/", {"username": admin.username, "password": PASSWORD})

    assert browser.get("/admin/").status_code == 200


# --- API3: broken object property level authorization (mass assignment) -------------


def hostile_fields(*, other_user: User, other_event: Event, other_order: Order) -> dict:
    """Every field a client must not be able to set, aimed at someone else's objects."""
    return {
        "id": other_order.pk,
        "user": other_user.pk,
        "user_id": other_user.pk,
        "event": other_event.pk,
        "event_id": other_event.pk,
        "role": "Admin",
        "is_staff": True,
        "is_superuser": True,
        "is_active": True,
        "status": "confirmed",
        "tickets_sold": 0,
        "quantity": 9,
        "created_at": "2000-01-01T00:00:00Z",
        "finalized_at": "2000-01-01T00:00:00Z",
    }


@pytest.fixture
def hostile(alice, sale) -> dict:
    return hostile_fields(
        other_user=alice, other_event=sale["concert"], other_order=sale["alice_confirmed"]
    )


def test_register_takes_no_privilege_or_identity_from_the_body(anon, hostile, sale):
    fields = {k: v for k, v in hostile.items() if k != "role"}
    before = state(sale["concert"], sale["match"])

    response = anon.post(
        "/register/", {"username": "newcomer", "password": PASSWORD, **fields}, format="json"
    )

    assert response.status_code == 201
    user = User.objects.get(username="newcomer")
    assert (user.role, user.is_staff, user.is_superuser, user.is_active) == (
        "User",
        False,
        False,
        True,
    )
    assert user.pk not in (hostile["id"], hostile["user"])
    assert response.json() == {"id": user.pk, "username": "newcomer", "role": "User"}
    after = state(sale["concert"], sale["match"])
    assert after["users"] == before["users"] + [(user.pk, "User", False, False)]
    assert {**after, "users": None} == {**before, "users": None}


def test_register_with_the_admin_role_and_privilege_fields_is_refused_whole(
    anon, hostile, settings
):
    settings.ADMIN_SIGNUP_CODE = "let-me-in"
    users = User.objects.count()

    response = anon.post(
        "/register/", {"username": "newcomer", "password": PASSWORD, **hostile}, format="json"
    )

    assert_error(response, 403, "permission_denied")
    assert User.objects.count() == users


@pytest.mark.parametrize("endpoint", ["login", "refresh"])
def test_tokens_take_no_role_or_identity_from_the_body(anon, mallory, alice, hostile, endpoint):
    if endpoint == "login":
        body = {"username": mallory.username, "password": PASSWORD}
    else:
        body = {"refresh": str(RefreshToken.for_user(mallory))}

    response = anon.post(
        f"/{'login' if endpoint == 'login' else 'token/refresh'}/",
        {**body, **hostile},
        format="json",
    )

    assert response.status_code == 200
    access = claims(response.json()["access"])
    assert (access["role"], str(access["user_id"])) == ("User", str(mallory.pk))
    assert User.objects.filter(
        pk=mallory.pk, role="User", is_staff=False, is_superuser=False
    ).exists()


def test_creating_an_event_takes_no_counter_or_identity_from_the_body(admin_client, hostile, sale):
    before = state(sale["concert"], sale["match"])
    body = {
        **hostile,
        "id": sale["concert"].pk,
        "tickets_sold": 40,
        "name": "New",
        "date": later(),
        "total_tickets": 10,
    }

    response = admin_client.post("/events/", body, format="json")

    assert response.status_code == 201
    created = Event.objects.get(pk=response.json()["id"])
    assert created.pk not in (sale["concert"].pk, sale["match"].pk)
    assert (created.tickets_sold, created.total_tickets) == (0, 10)
    assert created.created_at.year > 2000
    assert gate_remaining(event_id=created.pk) == 10
    assert not Order.objects.filter(event=created).exists()
    after = state(sale["concert"], sale["match"])
    assert after["counts"] == [before["counts"][0] + 1, *before["counts"][1:]]  # one event
    assert {**after, "counts": None} == {**before, "counts": None}


@pytest.mark.parametrize("method", ["put", "patch"])
def test_changing_an_event_takes_no_counter_or_identity_from_the_body(
    admin_client, hostile, sale, method
):
    target, other = sale["match"], sale["concert"]
    body = {
        **hostile,
        "id": other.pk,
        "tickets_sold": 0,
        "name": "Renamed",
        "date": later(9),
        "total_tickets": 60,
    }
    sold_before = target.tickets_sold

    response = getattr(admin_client, method)(f"/events/{target.pk}/", body, format="json")

    assert response.status_code == 200
    assert response.json()["id"] == target.pk
    target.refresh_from_db()
    assert (target.name, target.total_tickets, target.tickets_sold) == ("Renamed", 60, sold_before)
    assert target.created_at.year > 2000
    other_after = Event.objects.get(pk=other.pk)
    assert (other_after.name, other_after.total_tickets, other_after.tickets_sold) == (
        "Concert",
        50,
        3,
    )
    assert Order.objects.filter(event=other).count() == 1
    # The gate moved by the total's change only: 60 - sold - pending.
    assert gate_remaining(event_id=target.pk) == 60 - sold_before - sale["alice_pending"].quantity


def test_a_purchase_takes_its_buyer_event_and_status_from_the_token_and_path_only(
    client_for, mallory, alice, hostile, sale
):
    event, other = sale["match"], sale["concert"]
    before = state(other)
    alices_orders = list(Order.objects.filter(user=alice).order_by("pk").values())

    response = client_for(mallory).post(
        f"/events/{event.pk}/purchase/", {**hostile, "quantity": 2}, format="json"
    )

    assert response.status_code == 202
    order = Order.objects.get(pk=response.json()["id"])
    assert (order.user_id, order.event_id, order.status, order.quantity) == (
        mallory.pk,
        event.pk,
        "pending",
        2,
    )
    assert order.pk != hostile["id"] and order.created_at.year > 2000 and order.finalized_at is None
    assert list(Order.objects.filter(user=alice).order_by("pk").values()) == alices_orders
    after = state(other)
    assert after["counts"] == [before["counts"][0], before["counts"][1] + 1, before["counts"][2]]
    assert {**after, "counts": None} == {**before, "counts": None}
    assert gate_held(event_id=event.pk, user_id=mallory.pk) == 1 + 2
    assert gate_held(event_id=event.pk, user_id=alice.pk) == sale["alice_pending"].quantity


def test_a_cancel_takes_nothing_from_the_body(client_for, alice, mallory, sale):
    order, other = sale["alice_confirmed"], sale["mallory"]
    hostile = hostile_fields(other_user=mallory, other_event=sale["match"], other_order=other)
    hostile.update(status="confirmed", quantity=50, tickets_sold=50)
    match_before = state(sale["match"])

    response = client_for(alice).post(f"/orders/{order.pk}/cancel/", hostile, format="json")

    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"
    order.refresh_from_db()
    assert (order.status, order.quantity, order.user_id, order.event_id) == (
        "cancelled",
        3,
        alice.pk,
        sale["concert"].pk,
    )
    concert = Event.objects.get(pk=sale["concert"].pk)
    assert concert.tickets_sold == 0  # exactly the order's 3 tickets came back, not 50
    assert gate_remaining(event_id=concert.pk) == 50
    after = state(sale["match"])
    assert after["counts"] == [*match_before["counts"][:2], match_before["counts"][2] - 1]
    assert {**after, "counts": None} == {**match_before, "counts": None}
