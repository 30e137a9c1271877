"""Access tokens: tampered, forged, expired or revoked tokens are refused with JSON 401s."""

import base64
import json
import time
import uuid
from datetime import timedelta

import jwt
import pytest
import redis
from django.conf import settings
from django.db import transaction
from django.utils import timezone
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import RefreshToken

from core.models import User
from core.services import users
from core.services.users import user_delete, user_tokens_revoke, user_tokens_revoked_before
from tests.conftest import token_for

pytestmark = pytest.mark.django_db

PROTECTED = "/orders/"


def key() -> str:
    return settings.SIMPLE_JWT["SIGNING_KEY"]


def payload_for(user, **overrides) -> dict:
    now = int(time.time())
    claims = {
        "token_type": "access",
        "exp": now + 300,
        "iat": now,
        "jti": uuid.uuid4().hex,
        "user_id": str(user.pk),
        "role": user.role,
        "username": user.username,
    }
    claims.update(overrides)
    return claims


def call(token: str, path: str = PROTECTED, header: str = "Bearer"):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"{header} {token}".strip())
    return client.get(path)


def assert_refused(response, code: str = "token_not_valid") -> None:
    assert response.status_code == 401, response.content
    assert response["Content-Type"] == "application/json"
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert response.json()["code"] == code


def b64(data: dict) -> str:
    raw = json.dumps(data, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def test_a_token_crafted_with_the_signing_key_is_accepted(buyer):
    # The baseline the forgeries below differ from in one respect each.
    token = jwt.encode(payload_for(buyer), key(), algorithm="HS256")

    assert call(token).status_code == 200


def test_a_token_signed_with_another_key_is_refused(buyer):
    token = jwt.encode(payload_for(buyer), "not-the-signing-key" * 4, algorithm="HS256")

    assert_refused(call(token))


def test_an_unsigned_alg_none_token_is_refused(buyer):
    header = b64({"alg": "none", "typ": "JWT"})

    assert_refused(call(f"{header}.{b64(payload_for(buyer))}."))


def test_an_alg_none_admin_token_cannot_create_events(buyer):
    forged = f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(payload_for(buyer, role='Admin'))}."
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {forged}")

    response = client.post("/events/", {"name": "x"}, format="json")

    assert_refused(response)


def test_an_expired_token_is_refused(buyer):
    old = int(time.time()) - 3600
    token = jwt.encode(payload_for(buyer, iat=old, exp=old + 60), key(), algorithm="HS256")

    assert_refused(call(token))


def test_a_refresh_token_is_refused_as_an_access_token(buyer):
    refresh = str(RefreshToken.for_user(buyer))

    assert_refused(call(refresh))


def test_a_token_without_a_user_id_is_refused(buyer):
    claims = payload_for(buyer)
    del claims["user_id"]

    assert_refused(call(jwt.encode(claims, key(), algorithm="HS256")))


@pytest.mark.parametrize("token", ["garbage", "a.b.c", "eyJhbGciOiJIUzI1NiJ9..", "ä" * 20])
def test_a_garbage_token_is_refused(token):
    assert_refused(call(token))


def test_a_bearer_header_without_a_token_is_refused():
    assert_refused(call("", header="Bearer"), code="bad_authorization_header")


def test_a_bearer_header_with_extra_parts_is_refused(buyer):
    assert_refused(call(f"{token_for(buyer)} extra"), code="bad_authorization_header")


def test_an_unknown_authorization_scheme_counts_as_anonymous(buyer):
    response = call(token_for(buyer), header="Token")

    assert_refused(response, code="not_authenticated")


def test_editing_the_role_claim_breaks_the_signature(buyer, event):
    header, payload, signature = token_for(buyer).split(".")
    claims = jwt.decode(token_for(buyer), options={"verify_signature": False})
    assert claims["role"] == "User"
    forged = f"{header}.{b64({**claims, 'role': 'Admin'})}.{signature}"
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {forged}")

    response = client.patch(f"/events/{event.pk}/", {"total_tickets": 1}, format="json")

    assert_refused(response)
    event.refresh_from_db()
    assert event.total_tickets == 100


def test_a_role_claim_cannot_be_added_to_a_token_without_the_key(buyer):
    claims = payload_for(buyer, role="Admin")
    token = jwt.encode(claims, key() + "x", algorithm="HS256")

    assert_refused(call(token, path="/events/"))


@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")
def test_a_token_signed_with_another_algorithm_is_refused(buyer):
    token = jwt.encode(payload_for(buyer), key(), algorithm="HS512")

    assert_refused(call(token))


# --- Revocation ----------------------------------------------------------------------


def test_revocation_refuses_tokens_issued_before_it(buyer):
    token = token_for(buyer)
    assert call(token).status_code == 200

    user_tokens_revoke(user_id=buyer.pk)

    assert_refused(call(token), code="token_revoked")


def test_revocation_covers_only_the_revoked_user(buyer, make_user):
    other = make_user()
    token = token_for(other)

    user_tokens_revoke(user_id=buyer.pk)

    assert call(token).status_code == 200


def test_a_token_issued_after_the_revocation_is_accepted(buyer):
    user_tokens_revoke(user_id=buyer.pk)
    # Revocation covers the second it happened in; a login after that second works.
    revoked_before = user_tokens_revoked_before(user_id=buyer.pk)
    while time.time() < revoked_before:
        time.sleep(0.05)

    assert call(token_for(buyer)).status_code == 200


def test_revocation_is_recorded_in_postgresql(buyer):
    revoked_before = user_tokens_revoke(user_id=buyer.pk)

    buyer.refresh_from_db()
    assert int(buyer.tokens_valid_after.timestamp()) == revoked_before


def test_a_revocation_rolled_back_with_its_change_is_not_recorded(buyer):
    with pytest.raises(RuntimeError), transaction.atomic():
        user_tokens_revoke(user_id=buyer.pk)
        raise RuntimeError("the change that revoked failed")

    buyer.refresh_from_db()
    assert buyer.tokens_valid_after is None


def test_a_revoked_token_is_refused_after_redis_lost_everything(buyer, redis_db):
    token = token_for(buyer)
    user_tokens_revoke(user_id=buyer.pk)
    redis_db.flushdb()

    assert_refused(call(token), code="token_revoked")
    assert redis_db.hget(users.REVOCATIONS_KEY, str(buyer.pk))  # rebuilt from PostgreSQL
    assert redis_db.ttl(users.REVOCATIONS_KEY) > 0


def test_a_deleted_users_token_is_refused_after_redis_lost_everything(buyer, redis_db):
    token = token_for(buyer)
    user_delete(user_id=buyer.pk)
    redis_db.flushdb()

    assert_refused(call(token), code="token_revoked")


def test_the_rebuild_keeps_a_revocation_written_while_it_ran(buyer, redis_db):
    user_tokens_revoke(user_id=buyer.pk)
    redis_db.flushdb()
    # A later revocation reached Redis while the hash was missing (its row not yet
    # committed): the rebuild must not overwrite it with the older committed value.
    newer = int(time.time()) + 100
    redis_db.hset(users.REVOCATIONS_KEY, str(buyer.pk), newer)

    assert user_tokens_revoked_before(user_id=buyer.pk) == newer


def test_revocations_older_than_any_access_token_are_not_reloaded(buyer, make_user, redis_db):
    old, recent = buyer, make_user()
    horizon = settings.SIMPLE_JWT["ACCESS_TOKEN_LIFETIME"] + timedelta(minutes=5)
    User.objects.filter(pk=old.pk).update(tokens_valid_after=timezone.now() - horizon)
    user_tokens_revoke(user_id=recent.pk)
    redis_db.flushdb()

    assert user_tokens_revoked_before(user_id=recent.pk) > 0
    assert user_tokens_revoked_before(user_id=old.pk) == 0
    assert not redis_db.hexists(users.REVOCATIONS_KEY, str(old.pk))


@pytest.fixture
def redis_round_trips(monkeypatch):
    """Count requests sent to Redis (a pipeline or a command is one round trip)."""
    sent = []
    send = redis.connection.AbstractConnection.send_packed_command

    def counting(self, command, *args, **kwargs):
        sent.append(command)
        return send(self, command, *args, **kwargs)

    monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command", counting)
    return sent


def test_a_warm_check_reads_no_row_and_one_redis_key_when_uncached(
    buyer, django_assert_num_queries, redis_round_trips
):
    user_tokens_revoked_before(user_id=buyer.pk)  # the hash is built
    redis_round_trips.clear()

    with django_assert_num_queries(0):
        assert user_tokens_revoked_before(user_id=buyer.pk) == 0
    assert len(redis_round_trips) == 1


def test_a_missing_hash_costs_one_query_to_rebuild(buyer, redis_db, django_assert_num_queries):
    redis_db.delete(users.REVOCATIONS_KEY)

    with django_assert_num_queries(1):
        user_tokens_revoked_before(user_id=buyer.pk)
    assert redis_db.hget(users.REVOCATIONS_KEY, "_loaded")


def test_a_process_reads_the_whole_hash_once_per_cache_time(
    settings, buyer, make_user, django_assert_num_queries, redis_round_trips
):
    settings.AUTH_REVOCATION_CACHE_SECONDS = 30
    users._snapshot = (float("-inf"), {})
    others = [make_user() for _ in range(5)]
    user_tokens_revoke(user_id=others[0].pk)
    user_tokens_revoked_before(user_id=buyer.pk)  # the hash is built and copied
    redis_round_trips.clear()

    with django_assert_num_queries(0):
        answers = [user_tokens_revoked_before(user_id=u.pk) for u in [buyer, *others] * 20]

    assert redis_round_trips == []
    assert answers[1] > 0 and answers.count(0) == 100
    users._snapshot = (float("-inf"), {})


def test_revocation_seen_by_another_process_takes_effect_within_the_cache_time(
    settings, buyer, client_for, redis_db
):
    settings.AUTH_REVOCATION_CACHE_SECONDS = 0.5
    users._snapshot = (float("-inf"), {})
    client = client_for(buyer)
    assert client.get("/events/").status_code == 200  # looked up and remembered: none
    # Another process revokes: only Redis changes, not this process's memory.
    redis_db.hset(users.REVOCATIONS_KEY, str(buyer.pk), int(time.time()) + 1)
    assert client.get("/events/").status_code == 200  # still within the cache time
    time.sleep(0.6)
    response = client.get("/events/")
    assert response.status_code == 401
    assert response.json()["code"] == "token_revoked"
    users._snapshot = (float("-inf"), {})


def test_a_process_that_lost_redis_refuses_with_its_copy_and_after_the_rebuild(
    settings, buyer, client_for, redis_db
):
    settings.AUTH_REVOCATION_CACHE_SECONDS = 0.3
    users._snapshot = (float("-inf"), {})
    client = client_for(buyer)
    assert client.get(PROTECTED).status_code == 200  # the process copies the hash
    user_tokens_revoke(user_id=buyer.pk)
    redis_db.flushdb()

    assert_refused(client.get(PROTECTED), code="token_revoked")  # from the process's copy
    time.sleep(0.4)
    assert_refused(client.get(PROTECTED), code="token_revoked")  # rebuilt from PostgreSQL
    users._snapshot = (float("-inf"), {})
