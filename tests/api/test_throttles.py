"""Rate limits: 429 with Retry-After, counted in Redis per user (purchase) or address."""

import pytest

pytestmark = pytest.mark.django_db


@pytest.fixture
def rates(settings):
    def set_rates(**rates):
        config = dict(settings.REST_FRAMEWORK)
        config["DEFAULT_THROTTLE_RATES"] = {**config["DEFAULT_THROTTLE_RATES"], **rates}
        settings.REST_FRAMEWORK = config

    return set_rates


def test_purchases_over_the_rate_get_429_with_retry_after(rates, buyer_client, event):
    rates(purchase="3/min")
    url = f"/events/{event.pk}/purchase/"
    statuses = [
        buyer_client.post(url, {"quantity": 1}, format="json").status_code for _ in range(4)
    ]
    assert statuses == [202, 202, 202, 429]
    response = buyer_client.post(url, {"quantity": 1}, format="json")
    assert response.json()["code"] == "throttled"
    assert 0 < int(response["Retry-After"]) <= 60


def test_purchase_rate_is_per_user(rates, client_for, make_user, event):
    rates(purchase="1/min")
    url = f"/events/{event.pk}/purchase/"
    one, two = client_for(make_user()), client_for(make_user())
    assert one.post(url, {"quantity": 1}, format="json").status_code == 202
    assert one.post(url, {"quantity": 1}, format="json").status_code == 429
    assert two.post(url, {"quantity": 1}, format="json").status_code == 202


def test_login_attempts_over_the_rate_get_429(rates, anon, buyer):
    rates(login="2/min")
    body = {"username": buyer.username, "password": "wrong"}
    statuses = [anon.post("/login/", body, format="json").status_code for _ in range(3)]
    assert statuses == [401, 401, 429]
    # Even the right password waits: guessing must not be able to confirm a hit.
    right = anon.post(
        "/login/", {"username": buyer.username, "password": "correct-horse-battery"}, format="json"
    )
    assert right.status_code == 429


def test_a_forged_forwarded_for_header_does_not_reset_the_login_limit(rates, anon, buyer):
    rates(login="1/min")
    body = {"username": buyer.username, "password": "wrong"}
    anon.post("/login/", body, format="json", HTTP_X_FORWARDED_FOR="10.0.0.1")
    response = anon.post("/login/", body, format="json", HTTP_X_FORWARDED_FOR="10.0.0.2")
    assert response.status_code == 429
