"""Every error is JSON with a stable `code`, whoever raises it: DRF, Django or the domain."""

import json

import pytest
import requests
from django.conf import settings
from django.test import RequestFactory
from rest_framework.test import APIClient

from api.exceptions import handler400, handler403, handler404, handler500
from core.models import User
from core.redis_client import get_redis
from tests.conftest import token_for
from tests.live import LiveStack, free_port

pytestmark = pytest.mark.django_db

GOOD_USER = {"username": "alice", "password": "correct-horse-battery"}


def assert_json_error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.content[:300]
    assert response["Content-Type"].startswith("application/json")
    body = json.loads(response.content)
    assert body["code"] == code and body["message"]
    return body


def post_raw(client, path: str, body, content_type: str = "application/json"):
    return client.post(path, body, content_type=content_type)


@pytest.mark.parametrize(
    "raw",
    ["{bad", '{"username": "alice",}', "", '{"username": NaN}', b'{"username": "\xff"}'],
)
def test_malformed_json_is_a_400_malformed_request(anon, raw):
    response = post_raw(anon, "/register/", raw)

    if raw == "":  # an empty body is no data at all: the fields are missing
        assert_json_error(response, 400, "invalid")
    else:
        assert_json_error(response, 400, "malformed_request")
    assert not User.objects.exists()


def test_deeply_nested_json_is_malformed_not_a_crash(anon):
    response = post_raw(anon, "/register/", "[" * 50_000)

    assert_json_error(response, 400, "malformed_request")


def test_malformed_json_is_refused_on_authenticated_endpoints_too(admin_client):
    assert_json_error(post_raw(admin_client, "/events/", "{"), 400, "malformed_request")


@pytest.mark.parametrize("raw", ["[]", '"alice"', "42", "null"])
def test_a_json_body_that_is_not_an_object_is_invalid(anon, raw):
    body = assert_json_error(post_raw(anon, "/register/", raw), 400, "invalid")

    assert "non_field_errors" in body["errors"]


@pytest.mark.parametrize(
    "content_type",
    [
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=xyz",
        "text/plain",
        "application/xml",
    ],
)
def test_a_body_that_is_not_json_is_a_415(anon, content_type):
    response = post_raw(anon, "/register/", "username=alice", content_type=content_type)

    assert_json_error(response, 415, "unsupported_media_type")
    assert not User.objects.exists()


@pytest.mark.parametrize("path", ["/nope/", "/nope", "/events/abc/", "/events/1/nope/", "/api/"])
def test_an_unknown_url_is_a_json_404(anon, path):
    assert_json_error(anon.get(path), 404, "not_found")


@pytest.mark.parametrize(
    "caller, method, path",
    [
        ("anon", "get", "/register/"),
        ("anon", "get", "/login/"),
        ("anon", "put", "/health/"),
        ("admin", "delete", "/events/"),
        ("buyer", "get", "/events/1/purchase/"),
        ("buyer", "delete", "/orders/"),
    ],
)
def test_a_wrong_method_is_a_405(request, caller, method, path):
    fixture = {"anon": "anon", "admin": "admin_client", "buyer": "buyer_client"}[caller]
    client = request.getfixturevalue(fixture)

    assert_json_error(getattr(client, method)(path), 405, "method_not_allowed")


def test_an_accept_header_the_api_cannot_serve_is_a_406(anon):
    assert_json_error(anon.get("/health/", HTTP_ACCEPT="text/html"), 406, "not_acceptable")


def test_an_oversized_body_is_refused(anon):
    padding = "x" * (settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 1)

    response = anon.post("/register/", {**GOOD_USER, "padding": padding}, format="json")

    assert response.status_code in (400, 413)
    assert response.json()["code"] in ("payload_too_large", "malformed_request")
    assert not User.objects.exists()


def test_a_body_just_under_the_limit_is_read(anon):
    padding = "x" * (settings.DATA_UPLOAD_MAX_MEMORY_SIZE - 200)

    response = anon.post("/register/", {**GOOD_USER, "padding": padding}, format="json")

    assert response.status_code == 201


def test_a_disallowed_host_is_a_json_400():
    response = APIClient().get("/health/", HTTP_HOST="evil.example")

    assert_json_error(response, 400, "bad_request")


def test_validation_errors_name_every_bad_field(anon):
    body = assert_json_error(anon.post("/register/", {}, format="json"), 400, "invalid")

    assert {"username", "password"} <= body["errors"].keys()
    assert all(isinstance(v, list) and v for v in body["errors"].values())


def test_domain_errors_carry_their_code_and_details(buyer_client, make_event):
    event = make_event(total_tickets=1, tickets_sold=1)

    response = buyer_client.post(f"/events/{event.pk}/purchase/", {"quantity": 1}, format="json")

    body = assert_json_error(response, 409, "sold_out")
    assert body["tickets_available"] == 0


@pytest.fixture
def redis_down(settings, redis_db):
    """Point every Redis client (gate, revocations, throttles, cache) at a dead port."""
    dead = f"redis://127.0.0.1:{free_port()}/12"
    settings.REDIS_URL = dead
    settings.CACHES = {"default": {**settings.CACHES["default"], "LOCATION": dead}}
    get_redis.cache_clear()
    yield
    get_redis.cache_clear()


@pytest.mark.parametrize("path", ["/events/", "/orders/"])
def test_a_redis_outage_is_a_503_to_retry_not_a_500(buyer_client, redis_down, path):
    response = buyer_client.get(path)

    assert_json_error(response, 503, "service_unavailable")
    assert int(response["Retry-After"]) >= 1


@pytest.mark.live
@pytest.mark.django_db(transaction=True)
def test_a_database_outage_is_a_503_to_retry_not_a_500(buyer, tmp_path):
    dead = f"postgres://postgres@127.0.0.1:{free_port()}/x"
    live = LiveStack(tmp_path, env={"DATABASE_URL": dead})
    try:
        live.start_api(workers=1)
        headers = {"Authorization": f"Bearer {token_for(buyer)}"}
        events = requests.get(f"{live.base_url}/events/", headers=headers, timeout=30)
        login = requests.post(f"{live.base_url}/login/", json=GOOD_USER, timeout=30)
    finally:
        live.stop_all()

    for response in (events, login):
        assert response.status_code == 503, response.text[:300]
        assert response.json()["code"] == "database_unavailable"
        assert response.headers["Retry-After"]


@pytest.mark.parametrize(
    "handler, status, code",
    [
        (handler400, 400, "bad_request"),
        (handler403, 403, "permission_denied"),
        (handler404, 404, "not_found"),
    ],
)
def test_djangos_error_handlers_answer_json(handler, status, code):
    request = RequestFactory().get("/anything/")

    assert_json_error(handler(request, Exception("boom")), status, code)


def test_djangos_500_handler_answers_json():
    request = RequestFactory().get("/anything/")

    response = handler500(request)

    body = assert_json_error(response, 500, "server_error")
    assert "boom" not in json.dumps(body) and "Traceback" not in response.content.decode()
