"""OWASP API2: a login for an unknown username costs what a wrong password costs.

With the production hasher (PBKDF2), so the time of the answer cannot tell which
usernames exist: Django's ModelBackend hashes the password for an unknown user too.
The codes are compared in tests/api/test_accounts.py; here, the time.
"""

import statistics
import time

import pytest
from rest_framework.test import APIClient

pytestmark = [pytest.mark.security, pytest.mark.django_db]

ROUNDS = 3


@pytest.fixture
def production_hasher(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.PBKDF2PasswordHasher"]


def timed_login(username: str) -> float:
    started = time.perf_counter()
    response = APIClient().post(
        "/login/", {"username": username, "password": "not-the-password"}, format="json"
    )
    elapsed = time.perf_counter() - started
    assert response.status_code == 401
    assert response.json()["code"] == "authentication_failed"
    return elapsed


def test_an_unknown_username_costs_as_much_as_a_wrong_password(production_hasher, make_user):
    user = make_user()  # its password hashed with PBKDF2
    assert user.password.startswith("pbkdf2_sha256$")
    unknown, wrong = [], []
    for _ in range(ROUNDS):  # interleaved, so both see the same machine load
        unknown.append(timed_login("nobody-at-all"))
        wrong.append(timed_login(user.username))

    ratio = statistics.median(unknown) / statistics.median(wrong)

    assert 0.67 < ratio < 1.5, (unknown, wrong)
    assert min(unknown) > 0.05  # the hasher ran (an MD5 check is microseconds)
