"""The API takes the client's address from X-Forwarded-For only when the front door sent it.

Per-address limits read REMOTE_ADDR (api/throttles.py), so the login limit shows which
address the API saw: two buyers behind the door keep separate budgets, and a header sent
by anyone else changes nothing. tests/frontdoor/test_live.py checks the same through
the real HAProxy.
"""

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings
from rest_framework.test import APIClient

from core.middleware import ForwardedForMiddleware

pytestmark = pytest.mark.django_db

DOOR = "127.0.0.2"
BODY = {"username": "nobody-here", "password": "wrong"}


@pytest.fixture
def login_limit(settings):
    settings.TRUSTED_PROXY_ADDRESSES = [DOOR]
    config = dict(settings.REST_FRAMEWORK)
    config["DEFAULT_THROTTLE_RATES"] = {**config["DEFAULT_THROTTLE_RATES"], "login": "1/min"}
    settings.REST_FRAMEWORK = config


def login(peer: str, forwarded_for: str | None = None) -> int:
    # A new client per call: the handler (and its middleware) is built under the settings.
    headers = {"HTTP_X_FORWARDED_FOR": forwarded_for} if forwarded_for else {}
    return APIClient(REMOTE_ADDR=peer).post("/login/", BODY, format="json", **headers).status_code


def test_buyers_behind_the_front_door_are_limited_each_at_their_own_address(login_limit):
    assert login(DOOR, "203.0.113.1") == 401
    assert login(DOOR, "203.0.113.1") == 429
    assert login(DOOR, "203.0.113.2") == 401  # another buyer, not the door's address


def test_a_forwarded_for_header_from_any_other_peer_is_ignored(login_limit):
    assert login("198.51.100.7", "203.0.113.1") == 401
    assert login("198.51.100.7", "203.0.113.2") == 429  # still 198.51.100.7


def test_the_door_reports_its_peer_last_and_earlier_entries_are_not_believed(login_limit):
    # An appending proxy would pass the client's own claim first; only the last entry,
    # written by the door, counts.
    assert login(DOOR, "10.0.0.1, 203.0.113.9") == 401
    assert login(DOOR, "10.0.0.2, 203.0.113.9") == 429


def test_a_forwarded_for_value_that_is_no_address_leaves_the_peer(login_limit):
    assert login(DOOR, "not-an-address") == 401
    assert login(DOOR, "also-not-one") == 429  # both counted at the door's address


def test_networks_may_be_trusted(settings):
    settings.TRUSTED_PROXY_ADDRESSES = ["172.29.0.0/24"]
    middleware = ForwardedForMiddleware(lambda request: request)
    assert middleware._is_trusted("172.29.0.10") and not middleware._is_trusted("172.29.1.10")


def test_without_trusted_addresses_the_middleware_is_not_loaded(settings):
    from django.core.exceptions import MiddlewareNotUsed

    settings.TRUSTED_PROXY_ADDRESSES = []
    with pytest.raises(MiddlewareNotUsed):
        ForwardedForMiddleware(lambda request: request)


@override_settings(TRUSTED_PROXY_ADDRESSES=["127.0.0.300"])
def test_a_malformed_trusted_address_stops_the_start():
    with pytest.raises(ImproperlyConfigured, match="DJANGO_TRUSTED_PROXY_ADDRESSES"):
        ForwardedForMiddleware(lambda request: request)
