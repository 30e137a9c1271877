"""Accounts: registration, deletion and token revocation."""

import logging
import time
from datetime import UTC, datetime, timedelta

import redis
from django.conf import settings
from django.contrib.auth.password_validation import validate_password
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.crypto import constant_time_compare

from core.exceptions import (
    ConflictError,
    NoActiveAccountError,
    PermissionDeniedError,
    TokenRevokedError,
)
from core.models import User, UserTombstone
from core.redis_client import get_redis

logger = logging.getLogger(__name__)


def _admin_code_matches(code: str | None) -> bool:
    expected = settings.ADMIN_SIGNUP_CODE
    return bool(expected) and bool(code) and constant_time_compare(code, expected)


def user_register(
    *,
    username: str,
    password: str,
    role: str = User.Role.USER,
    admin_code: str | None = None,
    by_admin: bool = False,
) -> User:
    """Create an account. An Admin account needs an Admin caller or the signup code.

    Raises django's ValidationError for a weak password.
    """
    if role == User.Role.ADMIN and not (by_admin or _admin_code_matches(admin_code)):
        raise PermissionDeniedError(
            "Only an Admin, or a caller with the admin signup code, can create an Admin."
        )
    user = User(username=username, role=role)
    validate_password(password, user)
    user.set_password(password)
    try:
        with transaction.atomic():
            user.save()
    except IntegrityError:
        raise ConflictError("A user with that username already exists.") from None
    return user


# --- Token revocation ------------------------------------------------------------------
#
# PostgreSQL is the authority: `User.tokens_valid_after` (a `UserTombstone` once the row
# is deleted), written in the transaction that makes the change. Redis holds a cache of
# the revocations younger than an access token can live, in ONE hash for all users, so a
# process can copy it whole in one HGETALL: {user id: epoch second, "_loaded": "1"}.
# The "_loaded" field tells "Redis lost the hash" (rebuild it from PostgreSQL) from "no
# revocation". The hash expires a token lifetime after each rebuild, which drops the
# entries nothing needs any more; the next reader rebuilds it.

REVOCATIONS_KEY = "auth:revocations"
_LOADED = "_loaded"
# Clock skew between API hosts, and the second a revocation rounds up to.
_MARGIN_SECONDS = 60


def _revocation_horizon_seconds() -> int:
    """Return how long a revocation must be remembered: the longest access-token life."""
    lifetime = settings.SIMPLE_JWT["ACCESS_TOKEN_LIFETIME"].total_seconds()
    return int(lifetime) + _MARGIN_SECONDS


def _revocation_cache_write(user_id: int, revoked_before: int) -> None:
    get_redis().hset(REVOCATIONS_KEY, str(user_id), revoked_before)
    global _snapshot
    read_at, revoked = _snapshot
    _snapshot = (read_at, {**revoked, user_id: revoked_before})


def _revocation_cache_write_after_commit(user_id: int, revoked_before: int) -> None:
    # Again after the commit: a rebuild that ran while the transaction was open (Redis
    # restarted meanwhile) could not see the row yet.
    try:
        _revocation_cache_write(user_id, revoked_before)
    except redis.RedisError:
        # Committed in PostgreSQL; the cache still holds the write made before commit,
        # or, if Redis lost it, the next rebuild reads the committed row.
        logger.warning("revocation not re-cached after commit", extra={"user_id": user_id})


def user_tokens_revoke(*, user_id: int, deleted: bool = False) -> int:
    """Void every token issued to the user until now; return that epoch second.

    Call it inside the transaction that deactivates the user or changes their role or
    password (before deleting the row, with `deleted=True`): the revocation commits or
    rolls back with the change. Redis is written before the commit, so an unreachable
    Redis aborts the change (raises redis.RedisError) instead of leaving a revocation
    that the request path cannot see; a rollback leaves at worst a needless revocation.
    """
    revoked_before = int(time.time()) + 1  # iat is in whole seconds: cover this one
    valid_after = datetime.fromtimestamp(revoked_before, tz=UTC)
    with transaction.atomic():
        User.objects.filter(pk=user_id).update(tokens_valid_after=valid_after)
        if deleted:
            UserTombstone.objects.update_or_create(
                user_id=user_id, defaults={"tokens_valid_after": valid_after}
            )
        _revocation_cache_write(user_id, revoked_before)
        transaction.on_commit(lambda: _revocation_cache_write_after_commit(user_id, revoked_before))
    return revoked_before


def user_delete(*, user_id: int) -> None:
    """Delete the user, leaving a tombstone that keeps their tokens void."""
    with transaction.atomic():
        user_tokens_revoke(user_id=user_id, deleted=True)
        User.objects.filter(pk=user_id).delete()


def access_user_for_refresh(*, user_id: int | None, issued_at: int) -> User:
    """Return the user a refresh token of theirs, issued at `issued_at` (epoch second),
    may be renewed for.

    Raises NoActiveAccountError if the user is gone or inactive, TokenRevokedError if
    `user_tokens_revoke` voided their tokens after it was issued: a password or role
    change revokes refresh tokens too, not only access tokens. One query.
    """
    user = User.objects.filter(pk=user_id).first()
    if user is None or not user.is_active:
        raise NoActiveAccountError()
    valid_after = user.tokens_valid_after
    if valid_after and issued_at < int(valid_after.timestamp()):
        raise TokenRevokedError()
    return user


def _revocations_load() -> dict[int, int]:
    """Rebuild the Redis hash from PostgreSQL (one query); return what it now holds.

    Idempotent, so processes that find the hash missing at once may all run it: HSETNX
    never overwrites a revocation written meanwhile by `user_tokens_revoke`.
    """
    horizon = _revocation_horizon_seconds()
    since = timezone.now() - timedelta(seconds=horizon)
    rows = (
        User.objects.filter(tokens_valid_after__gt=since)
        .values_list("pk", "tokens_valid_after")
        .union(
            UserTombstone.objects.filter(tokens_valid_after__gt=since).values_list(
                "user_id", "tokens_valid_after"
            ),
            all=True,
        )
    )
    pipe = get_redis().pipeline(transaction=True)
    for user_id, valid_after in rows:
        pipe.hsetnx(REVOCATIONS_KEY, str(user_id), int(valid_after.timestamp()))
    pipe.hset(REVOCATIONS_KEY, _LOADED, 1)
    pipe.expire(REVOCATIONS_KEY, horizon)
    pipe.hgetall(REVOCATIONS_KEY)
    return _revocations_parse(pipe.execute()[-1])


def _revocations_parse(raw: dict[str, str]) -> dict[int, int]:
    """Turn the hash into {user id: epoch} (a tombstone and a user row may both count)."""
    return {int(field): int(value) for field, value in raw.items() if field != _LOADED}


# (monotonic time of the read, {user id: revoked-before}) of this process's copy of the
# hash: every authenticated request asks, and a flash sale is thousands a second.
_snapshot: tuple[float, dict[int, int]] = (float("-inf"), {})


def user_tokens_revoked_before(*, user_id: int) -> int:
    """Return the epoch second before which the user's tokens are void (0: none).

    Reads no database row while Redis holds the hash. Each process copies the whole hash
    at most once per AUTH_REVOCATION_CACHE_SECONDS (one HGETALL), so a revocation made
    elsewhere takes effect within that time (at once in the process that made it); with
    the setting at 0, one HMGET per call. If Redis has lost the hash, it is rebuilt from
    PostgreSQL first. An unreachable Redis raises redis.RedisError (the API answers 503).
    """
    global _snapshot
    ttl = settings.AUTH_REVOCATION_CACHE_SECONDS
    if not ttl:
        loaded, value = get_redis().hmget(REVOCATIONS_KEY, [_LOADED, str(user_id)])
        if loaded is None:
            return _revocations_load().get(user_id, 0)
        return int(value or 0)
    now = time.monotonic()
    read_at, revoked = _snapshot
    if now - read_at >= ttl:
        raw = get_redis().hgetall(REVOCATIONS_KEY)
        revoked = _revocations_parse(raw) if _LOADED in raw else _revocations_load()
        _snapshot = (now, revoked)
    return revoked.get(user_id, 0)
