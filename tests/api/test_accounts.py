"""Accounts: POST /register/, /login/, /token/refresh/ and /logout/."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import jwt
import pytest
from django.db import OperationalError, connection, transaction
from rest_framework.test import APIClient
from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken
from rest_framework_simplejwt.tokens import RefreshToken

from core.models import User
from core.services.users import user_tokens_revoke

pytestmark = pytest.mark.django_db

PASSWORD = "correct-horse-battery"


def register(client, **body):
    body.setdefault("username", "alice")
    body.setdefault("password", PASSWORD)
    return client.post("/register/", body, format="json")


def login(client, username, password=PASSWORD):
    return client.post("/login/", {"username": username, "password": password}, format="json")


def claims(token: str) -> dict:
    return jwt.decode(token, options={"verify_signature": False})


def assert_error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.content
    assert response.json()["code"] == code
    return response.json()


# --- Registration --------------------------------------------------------------------


def test_register_creates_a_user_with_the_user_role_by_default(anon):
    response = register(anon)

    assert response.status_code == 201
    body = response.json()
    assert body.keys() == {"id", "username", "role"}
    assert (body["username"], body["role"]) == ("alice", "User")
    user = User.objects.get(pk=body["id"])
    assert user.role == User.Role.USER and user.check_password(PASSWORD)


def test_register_never_echoes_the_password(anon):
    response = register(anon)

    assert PASSWORD not in response.content.decode()


@pytest.mark.parametrize("password", ["short", "12345678901", "password123", "alice-alice"])
def test_register_rejects_weak_password(anon, password):
    body = assert_error(register(anon, username="alice-alice", password=password), 400, "invalid")

    assert body["errors"]["password"]
    assert not User.objects.filter(username="alice-alice").exists()


def test_register_rejects_a_duplicate_username(anon, make_user):
    make_user(username="alice")

    body = assert_error(register(anon), 400, "invalid")

    assert "username" in body["errors"]
    assert User.objects.filter(username="alice").count() == 1


@pytest.mark.parametrize("username", ["", "has space", "x" * 151, "semi;colon"])
def test_register_rejects_an_invalid_username(anon, username):
    body = assert_error(register(anon, username=username), 400, "invalid")

    assert "username" in body["errors"]


@pytest.mark.parametrize("role", ["admin", "Superuser", "", 1])
def test_register_rejects_an_unknown_role(anon, role):
    body = assert_error(register(anon, role=role), 400, "invalid")

    assert "role" in body["errors"]


@pytest.mark.parametrize("missing", ["username", "password"])
def test_register_rejects_missing_fields(anon, missing):
    body = {"username": "alice", "password": PASSWORD}
    del body[missing]

    response = anon.post("/register/", body, format="json")

    assert_error(response, 400, "invalid")
    assert missing in response.json()["errors"]


def test_register_refuses_an_admin_account_to_an_anonymous_caller(anon, settings):
    settings.ADMIN_SIGNUP_CODE = "let-me-in"

    assert_error(register(anon, role="Admin"), 403, "permission_denied")
    assert not User.objects.filter(username="alice").exists()


def test_register_refuses_an_admin_account_to_a_user(buyer_client, settings):
    settings.ADMIN_SIGNUP_CODE = "let-me-in"

    assert_error(register(buyer_client, role="Admin"), 403, "permission_denied")


def test_register_refuses_an_admin_account_with_a_wrong_code(anon, settings):
    settings.ADMIN_SIGNUP_CODE = "let-me-in"

    assert_error(register(anon, role="Admin", admin_code="let-me-out"), 403, "permission_denied")


@pytest.mark.parametrize("code", ["", "anything", None])
def test_register_refuses_any_admin_code_when_none_is_configured(anon, settings, code):
    settings.ADMIN_SIGNUP_CODE = ""
    body = {"role": "Admin"} if code is None else {"role": "Admin", "admin_code": code}

    assert_error(register(anon, **body), 403, "permission_denied")
    assert not User.objects.filter(username="alice").exists()


def test_register_creates_an_admin_with_the_signup_code(anon, settings):
    settings.ADMIN_SIGNUP_CODE = "let-me-in"

    response = register(anon, role="Admin", admin_code="let-me-in")

    assert response.status_code == 201
    assert response.json()["role"] == "Admin"
    user = User.objects.get(username="alice")
    assert user.role == User.Role.ADMIN and not user.is_superuser


def test_register_lets_an_admin_create_an_admin(admin_client, settings):
    settings.ADMIN_SIGNUP_CODE = ""

    response = register(admin_client, role="Admin")

    assert response.status_code == 201
    assert User.objects.get(username="alice").role == User.Role.ADMIN


def test_register_ignores_privilege_fields_in_the_body(anon, make_user):
    taken = make_user()

    response = register(anon, id=taken.pk, is_staff=True, is_superuser=True, is_active=False)

    assert response.status_code == 201
    user = User.objects.get(username="alice")
    assert user.pk != taken.pk
    assert (user.is_staff, user.is_superuser, user.is_active) == (False, False, True)
    assert user.role == User.Role.USER


# --- Login, refresh and logout -------------------------------------------------------


def test_login_returns_a_token_pair_whose_access_token_carries_the_role(anon, admin):
    response = login(anon, admin.username)

    assert response.status_code == 200
    body = response.json()
    assert body.keys() == {"access", "refresh"}
    access = claims(body["access"])
    assert access["role"] == "Admin" and str(access["user_id"]) == str(admin.pk)
    assert access["token_type"] == "access"


def test_login_rejects_a_wrong_password(anon, buyer):
    assert_error(login(anon, buyer.username, "wrong-password"), 401, "authentication_failed")


def test_login_rejects_an_unknown_user(anon):
    assert_error(login(anon, "nobody"), 401, "authentication_failed")


def test_login_rejects_a_deactivated_user(anon, make_user):
    user = make_user(is_active=False)

    assert_error(login(anon, user.username), 401, "authentication_failed")


def test_login_rejects_missing_fields(anon):
    response = anon.post("/login/", {"username": "alice"}, format="json")

    body = assert_error(response, 400, "invalid")
    assert "password" in body["errors"]


def test_refresh_rotates_the_refresh_token(anon, buyer):
    old = login(anon, buyer.username).json()["refresh"]

    response = anon.post("/token/refresh/", {"refresh": old}, format="json")

    assert response.status_code == 200
    body = response.json()
    assert body["refresh"] != old
    assert claims(body["access"])["role"] == "User"
    again = anon.post("/token/refresh/", {"refresh": old}, format="json")
    assert_error(again, 401, "token_not_valid")
    rotated = anon.post("/token/refresh/", {"refresh": body["refresh"]}, format="json")
    assert rotated.status_code == 200


@pytest.mark.django_db(transaction=True)
def test_concurrent_reuses_of_one_refresh_token_rotate_it_once(make_user):
    refresh = str(RefreshToken.for_user(make_user()))
    start = threading.Barrier(8)

    def reuse(_):
        start.wait()
        try:
            return APIClient().post("/token/refresh/", {"refresh": refresh}, format="json")
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=8) as pool:
        responses = list(pool.map(reuse, range(8)))

    assert [r.status_code for r in responses].count(200) == 1
    refused = [r for r in responses if r.status_code != 200]
    assert {(r.status_code, r.json()["code"]) for r in refused} == {(401, "token_not_valid")}


def test_refresh_gives_the_current_role(anon, buyer):
    refresh = login(anon, buyer.username).json()["refresh"]
    User.objects.filter(pk=buyer.pk).update(role=User.Role.ADMIN)

    response = anon.post("/token/refresh/", {"refresh": refresh}, format="json")

    assert claims(response.json()["access"])["role"] == "Admin"


def test_refresh_rejects_an_access_token(anon, buyer):
    access = login(anon, buyer.username).json()["access"]

    assert_error(
        anon.post("/token/refresh/", {"refresh": access}, format="json"), 401, "token_not_valid"
    )


def test_refresh_rejects_garbage(anon):
    response = anon.post("/token/refresh/", {"refresh": "not-a-token"}, format="json")

    assert_error(response, 401, "token_not_valid")


def test_refresh_requires_a_token(anon):
    body = assert_error(anon.post("/token/refresh/", {}, format="json"), 400, "invalid")

    assert "refresh" in body["errors"]


def test_refresh_is_refused_for_a_deactivated_user(anon, buyer):
    refresh = login(anon, buyer.username).json()["refresh"]
    User.objects.filter(pk=buyer.pk).update(is_active=False)

    response = anon.post("/token/refresh/", {"refresh": refresh}, format="json")

    assert_error(response, 401, "no_active_account")


def test_refresh_is_refused_for_a_deleted_user(anon, buyer):
    refresh = login(anon, buyer.username).json()["refresh"]
    buyer.delete()

    response = anon.post("/token/refresh/", {"refresh": refresh}, format="json")

    assert_error(response, 401, "no_active_account")


def test_a_refused_refresh_says_why_and_carries_the_bearer_challenge(anon, buyer):
    refresh = login(anon, buyer.username).json()["refresh"]
    User.objects.filter(pk=buyer.pk).update(is_active=False)

    response = anon.post("/token/refresh/", {"refresh": refresh}, format="json")

    body = assert_error(response, 401, "no_active_account")
    assert body["message"] == "No active account for this token."
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_logout_blacklists_the_refresh_token(anon, buyer):
    refresh = login(anon, buyer.username).json()["refresh"]

    response = anon.post("/logout/", {"refresh": refresh}, format="json")

    assert response.status_code == 200
    again = anon.post("/token/refresh/", {"refresh": refresh}, format="json")
    assert_error(again, 401, "token_not_valid")
    assert_error(anon.post("/logout/", {"refresh": refresh}, format="json"), 401, "token_not_valid")


def test_logout_requires_a_refresh_token(anon):
    body = assert_error(anon.post("/logout/", {}, format="json"), 400, "invalid")

    assert "refresh" in body["errors"]


def test_logout_rejects_garbage(anon):
    response = anon.post("/logout/", {"refresh": "garbage"}, format="json")

    assert_error(response, 401, "token_not_valid")


def test_refresh_is_refused_for_a_user_revoked_then_reactivated(anon, buyer):
    refresh = login(anon, buyer.username).json()["refresh"]
    with transaction.atomic():
        User.objects.filter(pk=buyer.pk).update(is_active=False)
        user_tokens_revoke(user_id=buyer.pk)
    User.objects.filter(pk=buyer.pk).update(is_active=True)

    response = anon.post("/token/refresh/", {"refresh": refresh}, format="json")

    assert_error(response, 401, "token_revoked")
    # Refused before rotation: the token was not blacklisted by the attempt.
    assert not BlacklistedToken.objects.filter(token__jti=claims(refresh)["jti"]).exists()


def test_refresh_of_a_deactivated_user_is_refused_even_with_a_token_never_blacklisted(anon, buyer):
    refresh = login(anon, buyer.username).json()["refresh"]
    User.objects.filter(pk=buyer.pk).update(is_active=False)

    for _ in range(2):  # nothing was rotated by the first attempt either
        response = anon.post("/token/refresh/", {"refresh": refresh}, format="json")
        assert_error(response, 401, "no_active_account")
    assert not BlacklistedToken.objects.exists()


# --- Failed logins per account ---------------------------------------------------------

FAILURES = 10  # the default THROTTLE_LOGIN_FAILURES: 10/15min


def fail(client, username, times: int = 1, **headers):
    for _ in range(times):
        response = client.post(
            "/login/",
            {"username": username, "password": "not-the-password"},
            format="json",
            **headers,
        )
        assert_error(response, 401, "authentication_failed")


def assert_too_many_attempts(response) -> None:
    body = assert_error(response, 429, "too_many_attempts")
    retry_after = int(response["Retry-After"])
    assert 0 < retry_after <= 15 * 60
    assert body["retry_after"] == retry_after


def test_failed_logins_over_the_account_limit_get_429_even_with_the_right_password(anon, buyer):
    fail(anon, buyer.username, FAILURES)

    assert_too_many_attempts(login(anon, buyer.username))
    assert_too_many_attempts(login(anon, buyer.username, "not-the-password"))


def test_the_account_limit_counts_failures_from_every_address(anon, buyer, settings):
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "NUM_PROXIES": 1}
    for i in range(FAILURES):
        fail(anon, buyer.username, HTTP_X_FORWARDED_FOR=f"10.0.0.{i}")

    response = anon.post(
        "/login/",
        {"username": buyer.username, "password": PASSWORD},
        format="json",
        HTTP_X_FORWARDED_FOR="10.0.1.1",
    )

    assert_too_many_attempts(response)


def test_the_account_limit_ignores_the_case_of_the_username(anon, make_user):
    user = make_user(username="alice")
    for i in range(FAILURES):
        fail(anon, "ALICE" if i % 2 else "Alice")

    assert_too_many_attempts(login(anon, user.username))


def test_unknown_usernames_are_limited_alike(anon):
    # Otherwise the 429 would tell which usernames exist.
    fail(anon, "nobody-at-all", FAILURES)

    assert_too_many_attempts(login(anon, "nobody-at-all"))


def test_a_successful_login_does_not_reset_the_failures(anon, buyer):
    fail(anon, buyer.username, FAILURES - 1)
    assert login(anon, buyer.username).status_code == 200
    fail(anon, buyer.username)

    assert_too_many_attempts(login(anon, buyer.username))


def test_the_account_limit_leaves_other_accounts_alone(anon, buyer, make_user):
    fail(anon, buyer.username, FAILURES)

    assert login(anon, make_user().username).status_code == 200


def test_the_account_limit_expires_with_its_window(settings, anon, buyer):
    config = settings.REST_FRAMEWORK
    rates = {**config["DEFAULT_THROTTLE_RATES"], "login_failures": "2/1s"}
    settings.REST_FRAMEWORK = {**config, "DEFAULT_THROTTLE_RATES": rates}
    fail(anon, buyer.username, 2)
    assert_error(login(anon, buyer.username), 429, "too_many_attempts")

    time.sleep(1.1)

    assert login(anon, buyer.username).status_code == 200


def test_a_blocked_login_does_not_run_the_password_hasher(anon, buyer, monkeypatch):
    fail(anon, buyer.username, FAILURES)
    fail(anon, "nobody-at-all", FAILURES)
    hashed = []
    # ModelBackend checks a known user's password and hashes one for an unknown user.
    monkeypatch.setattr(User, "check_password", lambda self, raw: hashed.append(raw))
    monkeypatch.setattr(User, "set_password", lambda self, raw: hashed.append(raw))

    assert_too_many_attempts(login(anon, buyer.username))
    assert_too_many_attempts(login(anon, "nobody-at-all"))
    assert hashed == []
    assert_error(login(anon, "someone-else"), 401, "authentication_failed")
    assert hashed  # the spy works: an unblocked login hashes


def test_concurrent_guesses_cannot_exceed_the_account_limit(make_user):
    user = make_user()

    def guess(_):
        try:
            return (
                APIClient()
                .post("/login/", {"username": user.username, "password": "wrong"}, format="json")
                .status_code
            )
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(guess, range(40)))

    assert statuses.count(401) == FAILURES
    assert statuses.count(429) == 40 - FAILURES


def test_a_login_that_failed_for_an_outage_does_not_count(anon, buyer, monkeypatch):
    def database_down(*args, **kwargs):
        raise OperationalError("connection refused")

    monkeypatch.setattr("django.contrib.auth.backends.ModelBackend.authenticate", database_down)
    for _ in range(FAILURES + 2):
        assert_error(login(anon, buyer.username), 503, "database_unavailable")
    monkeypatch.undo()

    assert login(anon, buyer.username).status_code == 200
