"""Hostile request bodies on every writable endpoint: a 4xx JSON with a `code`, nothing stored.

tests/api/test_errors.py tries malformed JSON, other media types and an oversized body on
/register/; test_events.py and test_purchase.py the wrong types of `total_tickets` and
`quantity` on create and purchase. Here the same attacks reach every endpoint that takes
a body, every field gets every wrong JSON type, and the database and the gate are
compared before and after.
"""

import json
from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone
from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken
from rest_framework_simplejwt.tokens import RefreshToken

from core.gate.store import gate_held, gate_remaining
from core.models import Event, Order, Ticket, User
from core.services.gate import gate_ensure
from tests.factories import confirmed_order

pytestmark = [pytest.mark.security, pytest.mark.django_db]

PASSWORD = "correct-horse-battery"


def later(days: int = 30) -> str:
    return (timezone.now() + timedelta(days=days)).isoformat()


# name: (method, path, caller, valid body); paths take {event} and {order}.
ENDPOINTS = {
    "register": (
        "post",
        "/register/",
        "anonymous",
        lambda w: {"username": "newcomer", "password": PASSWORD},
    ),
    "login": (
        "post",
        "/login/",
        "anonymous",
        lambda w: {"username": w["buyer"].username, "password": PASSWORD},
    ),
    "refresh": ("post", "/token/refresh/", "anonymous", lambda w: {"refresh": w["refresh"]}),
    "logout": ("post", "/logout/", "anonymous", lambda w: {"refresh": w["logout_refresh"]}),
    "events-create": (
        "post",
        "/events/",
        "admin",
        lambda w: {"name": "New", "date": later(), "total_tickets": 10},
    ),
    "events-put": (
        "put",
        "/events/{event}/",
        "admin",
        lambda w: {"name": "Put", "date": later(), "total_tickets": 90},
    ),
    "events-patch": ("patch", "/events/{event}/", "admin", lambda w: {"venue": "Hall 9"}),
    "purchase": ("post", "/events/{event}/purchase/", "buyer", lambda w: {"quantity": 1}),
}
# POST /orders/<id>/cancel/ takes no body; see test_a_cancel_* at the end.

# Every field of every endpoint above, by the kind of JSON value it takes.
STRING_FIELDS = {
    "register": ["username", "password", "admin_code"],
    "login": ["username", "password"],
    "refresh": ["refresh"],
    "logout": ["refresh"],
    "events-create": ["name", "description", "venue"],
    "events-put": ["name", "description", "venue"],
    "events-patch": ["name", "description", "venue"],
}
INTEGER_FIELDS = {
    "events-create": ["total_tickets", "max_tickets_per_user"],
    "events-put": ["total_tickets", "max_tickets_per_user"],
    "events-patch": ["total_tickets", "max_tickets_per_user"],
    "purchase": ["quantity"],
}
DATETIME_FIELDS = {
    "events-create": ["date", "sale_starts_at", "sale_ends_at"],
    "events-put": ["date", "sale_starts_at", "sale_ends_at"],
    "events-patch": ["date", "sale_starts_at", "sale_ends_at"],
}
CHOICE_FIELDS = {"register": ["role"]}

NOT_A_STRING = [0, 123, 1.5, -1e308, True, False, [], ["x"], {}, {"x": "y"}]
NOT_AN_INTEGER = [
    "5",
    "5.0",
    "0x10",
    "",
    5.0,
    5.5,
    1e300,
    True,
    False,
    [5],
    {"n": 5},
    10**19,
    -(10**19),
]
NOT_A_DATETIME = [
    1893456000,
    1893456000.5,
    True,
    ["2030-01-01T00:00:00Z"],
    {"date": "2030-01-01"},
    "tomorrow",
    "",
]
NOT_A_CHOICE = [True, 1, ["User"], {"User": 1}, "user", "USER", "Admin "]


def cases(fields: dict[str, list[str]], values: list) -> list:
    return [
        pytest.param(endpoint, field, value, id=f"{endpoint}-{field}-{json.dumps(value)[:20]}")
        for endpoint, names in fields.items()
        for field in names
        for value in values
    ]


@pytest.fixture
def world(make_user, make_event, client_for, anon):
    buyer, admin = make_user(), make_user(role="Admin")
    event = make_event(total_tickets=100, max_tickets_per_user=10)
    order = confirmed_order(user=buyer, event=event, quantity=2)
    gate_ensure(event_id=event.pk)
    return {
        "buyer": buyer,
        "event": event,
        "order": order,
        "refresh": str(RefreshToken.for_user(buyer)),
        "logout_refresh": str(RefreshToken.for_user(buyer)),
        "clients": {"anonymous": anon, "buyer": client_for(buyer), "admin": client_for(admin)},
    }


def stored(world) -> dict:
    """Everything a refused request must leave as it was."""
    event_id = world["event"].pk
    return {
        "counts": [m.objects.count() for m in (User, Event, Order, Ticket, BlacklistedToken)],
        "event": Event.objects.filter(pk=event_id).values().first(),
        "orders": list(Order.objects.order_by("pk").values()),
        "gate": (
            gate_remaining(event_id=event_id),
            gate_held(event_id=event_id, user_id=world["buyer"].pk),
        ),
    }


def send(world, name: str, raw, content_type: str = "application/json"):
    method, template, caller, _ = ENDPOINTS[name]
    path = template.format(event=world["event"].pk, order=world["order"].pk)
    return getattr(world["clients"][caller], method)(path, raw, content_type=content_type)


def valid(world, name: str) -> dict:
    return ENDPOINTS[name][3](world)


def assert_refused(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.content[:300]
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert body["code"] == code and body["message"]
    return body


def test_every_endpoint_accepts_its_valid_body(world):
    # The baseline the refusals below differ from in one respect each.
    statuses = {
        name: send(world, name, json.dumps(valid(world, name))).status_code for name in ENDPOINTS
    }

    assert statuses == {
        "register": 201,
        "login": 200,
        "refresh": 200,
        "logout": 200,
        "events-create": 201,
        "events-put": 200,
        "events-patch": 200,
        "purchase": 202,
    }


# --- The body as a whole -------------------------------------------------------------

MALFORMED = [
    "{",
    '{"a": 1,}',
    "{'a': 1}",
    '{"a": 1} {"b": 2}',
    '{"a": NaN}',
    '{"a": -Infinity}',
    '{"a": 1' + "0" * 5000 + "}",  # more digits than Python converts
    "\ufeff{}",
    b'{"a": "\xff\xfe"}',
    "[" * 50_000,  # nested deeper than the parser recurses, well under the size limit
]


@pytest.mark.parametrize("name", ENDPOINTS)
@pytest.mark.parametrize("raw", MALFORMED, ids=lambda raw: repr(raw)[:16])
def test_malformed_json_is_a_400_and_stores_nothing(world, name, raw):
    before = stored(world)

    assert_refused(send(world, name, raw), 400, "malformed_request")
    assert stored(world) == before


@pytest.mark.parametrize("name", ENDPOINTS)
def test_a_key_given_twice_is_malformed(world, name):
    body = valid(world, name)
    first = next(iter(body))
    # The second value would pass validation too: the refusal is about the ambiguity.
    raw = json.dumps(body)[:-1] + f", {json.dumps(first)}: {json.dumps(body[first])}}}"
    before = stored(world)

    body = assert_refused(send(world, name, raw), 400, "malformed_request")

    assert "duplicate key" in body["message"]
    assert stored(world) == before


@pytest.mark.parametrize("name", ENDPOINTS)
@pytest.mark.parametrize("raw", ["[]", '[{"quantity": 1}]', '"text"', "42", "true", "null"])
def test_a_json_value_that_is_not_an_object_is_invalid(world, name, raw):
    before = stored(world)

    body = assert_refused(send(world, name, raw), 400, "invalid")

    assert body["errors"]
    assert stored(world) == before


@pytest.mark.parametrize("name", ENDPOINTS)
@pytest.mark.parametrize(
    "content_type",
    [
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=xyz",
        "text/plain",
        "text/json",
        "application/xml",
        "application/vnd.api+json",
        "application/json-patch+json",
    ],
)
def test_a_body_of_another_media_type_is_a_415(world, name, content_type):
    before = stored(world)
    raw = json.dumps(valid(world, name))  # even a JSON text is refused under another name

    assert_refused(send(world, name, raw, content_type=content_type), 415, "unsupported_media_type")
    assert stored(world) == before


@pytest.mark.parametrize("name", ENDPOINTS)
@pytest.mark.parametrize("charset", ["bz2_codec", "zlib_codec", "base64_codec", "rot13"])
def test_a_charset_that_is_not_a_text_encoding_is_refused(world, name, charset):
    # bz2/zlib would inflate a body after its size was checked: a decompression bomb.
    before = stored(world)
    raw = json.dumps(valid(world, name))

    assert_refused(
        send(world, name, raw, content_type=f"application/json; charset={charset}"),
        400,
        "malformed_request",
    )
    assert stored(world) == before


@pytest.mark.parametrize("name", ENDPOINTS)
def test_a_body_over_the_size_limit_is_a_413(world, name):
    before = stored(world)
    padding = "x" * settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    raw = json.dumps({**valid(world, name), "padding": padding})

    assert_refused(send(world, name, raw), 413, "payload_too_large")
    assert stored(world) == before


@pytest.mark.parametrize("name", [n for n in ENDPOINTS if n != "events-patch"])
def test_an_empty_body_lacks_the_required_fields(world, name):
    before = stored(world)

    body = assert_refused(send(world, name, ""), 400, "invalid")

    assert body["errors"]
    assert stored(world) == before


# --- Each field, every wrong JSON type -------------------------------------------------


def assert_field_refused(world, name: str, field: str, value) -> None:
    before = stored(world)
    body = {**valid(world, name), field: value}
    if name == "events-put" and field in ("sale_starts_at", "sale_ends_at", "max_tickets_per_user"):
        body.setdefault("total_tickets", 90)

    errors = assert_refused(send(world, name, json.dumps(body)), 400, "invalid")["errors"]

    assert field in errors, errors
    assert stored(world) == before


@pytest.mark.parametrize("name, field, value", cases(STRING_FIELDS, NOT_A_STRING))
def test_a_string_field_refuses_every_other_json_type(world, name, field, value):
    assert_field_refused(world, name, field, value)


@pytest.mark.parametrize("name, field, value", cases(INTEGER_FIELDS, NOT_AN_INTEGER))
def test_an_integer_field_refuses_strings_floats_booleans_containers_and_huge_numbers(
    world, name, field, value
):
    assert_field_refused(world, name, field, value)


@pytest.mark.parametrize("name, field, value", cases(DATETIME_FIELDS, NOT_A_DATETIME))
def test_a_datetime_field_refuses_numbers_booleans_containers_and_prose(world, name, field, value):
    assert_field_refused(world, name, field, value)


@pytest.mark.parametrize("name, field, value", cases(CHOICE_FIELDS, NOT_A_CHOICE))
def test_a_choice_field_refuses_anything_but_an_exact_choice(world, name, field, value):
    assert_field_refused(world, name, field, value)


@pytest.mark.parametrize(
    "name, field",
    [
        (n, f)
        for n, fs in {**STRING_FIELDS, **INTEGER_FIELDS, **DATETIME_FIELDS}.items()
        for f in fs
        if f
        not in (
            "sale_starts_at",
            "sale_ends_at",
            "max_tickets_per_user",
            "description",
            "venue",
            "admin_code",
        )
    ],
)
def test_null_is_refused_where_a_value_is_required(world, name, field):
    assert_field_refused(world, name, field, None)


@pytest.mark.parametrize("name", ["events-create", "events-put", "events-patch"])
@pytest.mark.parametrize("field", ["name", "venue"])
@pytest.mark.parametrize(
    "text",
    [
        "Bell\x07",
        "Null\x00",
        "Two\nLines",
        "Esc\x1b[2J",
        "C1\x9b",
        "Line\u2028Sep",
        "Para\u2029Sep",
        "Invoice \u202egnp.exe",
        "Isolate\u2066x\u2069",
        "Embed\u202ax\u202c",
    ],
    ids=lambda text: repr(text)[:14],
)
def test_names_and_venues_refuse_control_line_separator_and_bidi_characters(
    world, name, field, text
):
    assert_field_refused(world, name, field, text)


@pytest.mark.parametrize("name", ["events-create", "events-put", "events-patch"])
@pytest.mark.parametrize("field", ["name", "venue", "description"])
def test_a_lone_surrogate_is_refused_not_a_database_error(world, name, field):
    before = stored(world)
    raw = json.dumps({**valid(world, name), field: "x"}).replace('"x"', '"\\ud800x"')

    errors = assert_refused(send(world, name, raw), 400, "invalid")["errors"]

    assert field in errors
    assert stored(world) == before


# --- Unicode that is welcome, and usernames -----------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "Ünïcödé Nacht ☃",
        "東京ドーム公演",
        "حفل موسيقي",
        "👩‍👩‍👧 Family day",
        "e\u0301te\u0301",
        "Ｗｉｄｅ",
    ],
)
def test_printable_unicode_in_event_text_is_stored_exactly(world, text):
    body = {
        "name": text,
        "venue": text,
        "description": f"{text}\n{text}",
        "date": later(),
        "total_tickets": 5,
    }

    response = send(world, "events-create", json.dumps(body))

    assert response.status_code == 201, response.content
    event = Event.objects.get(pk=response.json()["id"])
    assert (event.name, event.venue, event.description) == (text, text, f"{text}\n{text}")


def test_a_username_is_normalized_so_lookalikes_cannot_coexist(world, anon, make_user):
    make_user(username="admin")

    for lookalike in ["ａｄｍｉｎ", "ADMIN", "Admin", "ᵃdmin"]:
        body = assert_refused(
            anon.post("/register/", {"username": lookalike, "password": PASSWORD}, format="json"),
            400,
            "invalid",
        )
        assert "username" in body["errors"]
    assert User.objects.filter(username__iexact="admin").count() == 1


def test_a_fullwidth_username_registers_and_logs_in_as_its_plain_form(anon):
    response = anon.post("/register/", {"username": "ｚｏｅ", "password": PASSWORD}, format="json")

    assert response.status_code == 201
    assert response.json()["username"] == "zoe"
    for spelling in ("zoe", "ｚｏｅ"):
        assert (
            anon.post(
                "/login/", {"username": spelling, "password": PASSWORD}, format="json"
            ).status_code
            == 200
        )


@pytest.mark.parametrize(
    "password",
    ["  correct-horse-battery  ", "\tcorrect horse battery\n", "mot de passe très sûr ✓"],
)
def test_a_password_logs_in_exactly_as_it_was_registered(anon, password):
    assert (
        anon.post(
            "/register/", {"username": "pat", "password": password}, format="json"
        ).status_code
        == 201
    )

    exact = anon.post("/login/", {"username": "pat", "password": password}, format="json")
    trimmed = anon.post("/login/", {"username": "pat", "password": password.strip()}, format="json")

    assert exact.status_code == 200
    if password.strip() != password:
        assert_refused(trimmed, 401, "authentication_failed")


# --- Path segments -------------------------------------------------------------------


@pytest.mark.parametrize(
    "method, template, caller",
    [
        ("get", "/events/{id}/", "buyer"),
        ("put", "/events/{id}/", "admin"),
        ("patch", "/events/{id}/", "admin"),
        ("delete", "/events/{id}/", "admin"),
        ("post", "/events/{id}/purchase/", "buyer"),
        ("get", "/orders/{id}/", "buyer"),
        ("post", "/orders/{id}/cancel/", "buyer"),
    ],
)
@pytest.mark.parametrize("event_id", ["0", "9" * 19, "9" * 40, "-1", "1e3", "0x1", "１"])
def test_an_id_out_of_range_or_not_a_number_is_a_404(world, method, template, caller, event_id):
    before = stored(world)
    body = {"quantity": 1, "name": "x", "date": later(), "total_tickets": 5}

    response = getattr(world["clients"][caller], method)(
        template.format(id=event_id), body, format="json"
    )

    assert_refused(response, 404, "not_found")
    assert stored(world) == before


# --- The cancel endpoint, which takes no body ------------------------------------------


@pytest.mark.parametrize(
    "raw, content_type",
    [
        ('{"status": "confirmed", "quantity": 99}', "application/json"),
        ("[]", "application/json"),
        ("", "application/json"),
    ],
)
def test_a_cancel_ignores_a_well_formed_body(world, raw, content_type):
    client = world["clients"]["buyer"]

    response = client.post(f"/orders/{world['order'].pk}/cancel/", raw, content_type=content_type)

    assert response.status_code == 200
    order = Order.objects.get(pk=world["order"].pk)
    assert (order.status, order.quantity) == ("cancelled", 2)


@pytest.mark.parametrize(
    "raw, content_type, status, code",
    [
        ("{", "application/json", 400, "malformed_request"),
        ("status=pending", "text/plain", 415, "unsupported_media_type"),
    ],
)
def test_a_cancel_with_a_malformed_body_is_refused_and_cancels_nothing(
    world, raw, content_type, status, code
):
    before = stored(world)

    response = world["clients"]["buyer"].post(
        f"/orders/{world['order'].pk}/cancel/", raw, content_type=content_type
    )

    assert_refused(response, status, code)
    assert stored(world) == before
