"""Accounts: registration and token revocation."""
import time

from django.conf import settings
from django.contrib.auth.password_validation import validate_password
from django.db import IntegrityError, transaction
from django.utils.crypto import constant_time_compare

from core.exceptions import ConflictError, PermissionDeniedError
from core.models import User
from core.stock import get_redis


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


def _revoked_key(user_id: int) -> str:
    return f"auth:revoked-before:{user_id}"


def user_tokens_revoke(*, user_id: int) -> None:
    """Invalidate every access token issued to the user until now.

    Access tokens are checked without a database read, so a deactivation, deletion or
    role change is recorded here; the record only needs to outlive the tokens it kills.
    """
    lifetime = int(settings.SIMPLE_JWT["ACCESS_TOKEN_LIFETIME"].total_seconds())
    revoked_before = int(time.time()) + 1
    get_redis().set(_revoked_key(user_id), revoked_before, ex=lifetime + 60)
    _revocations_seen[user_id] = (time.monotonic(), revoked_before)


# user id -> (when read, revoked-before) in this process: every authenticated request
# asks, and a flash sale is thousands of them a second from the same buyers.
_revocations_seen: dict[int, tuple[float, int]] = {}
_REVOCATIONS_SEEN_MAX = 100_000


def user_tokens_revoked_before(*, user_id: int) -> int:
    """Return the epoch second before which the user's tokens are void (0: none).

    Read from Redis at most once per AUTH_REVOCATION_CACHE_SECONDS per user and process,
    so a revocation made elsewhere takes effect within that time (at once in the
    process that made it).
    """
    ttl = settings.AUTH_REVOCATION_CACHE_SECONDS
    now = time.monotonic()
    seen = _revocations_seen.get(user_id)
    if ttl and seen and now - seen[0] < ttl:
        return seen[1]
    revoked_before = int(get_redis().get(_revoked_key(user_id)) or 0)
    if ttl:
        if len(_revocations_seen) >= _REVOCATIONS_SEEN_MAX:
            _revocations_seen.clear()
        _revocations_seen[user_id] = (now, revoked_before)
    return revoked_before
