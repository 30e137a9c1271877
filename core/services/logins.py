"""Failed logins per account: the lockout that stops many addresses guessing one password.

The address limit (api/throttles.py) does not stop many addresses guessing one account's
password (credential stuffing through a botnet or proxies). This one counts failed logins
per username, from any address, in a fixed window that starts with the first attempt:
over the limit, every login for that username is refused before the password is hashed,
the right password too (a 429 that depended on the password would confirm a guess),
until the window expires. A success does not reset it. The owner waits out the window
like the attacker; nothing outlives it, so nobody can lock an account for good. See
docs/security.md for the trade-off.

Each attempt is counted as a failure when it starts and given back unless a wrong
password or unknown username failed it, so concurrent guesses cannot all pass the check
before any of them is counted, and an outage (a 503) counts against nobody.

Redis: ``throttle:login_failures:<sha256 of the lowercased username, 32 hex>``, a counter
that expires with its window.
"""

import hashlib
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import redis

from core.exceptions import TooManyAttemptsError
from core.redis_client import get_redis

logger = logging.getLogger(__name__)


# Give back one attempt, unless its window has expired meanwhile (a DECR would then
# create a key without expiry).
_GIVE_BACK = """
if redis.call('EXISTS', KEYS[1]) == 1 then return redis.call('DECR', KEYS[1]) end
return 0
"""


def login_failures_key(username: str) -> str:
    """Return the Redis counter of the username's failed logins."""
    # Usernames are unique case-insensitively (migration 0004): "Alice" and "ALICE" are
    # one account and one counter. Hashed, so a long username makes no long key.
    digest = hashlib.sha256(username.lower().encode()).hexdigest()[:32]
    return f"throttle:login_failures:{digest}"


def login_attempt_start(*, username: str, rate: tuple[int, int] | None) -> None:
    """Count a login attempt for the username as failed until it succeeds.

    `rate` is (failures allowed, per seconds), or None for no limit. Raises
    TooManyAttemptsError (429, Retry-After) when the window's failures are used up. One
    Redis round trip; fails open (and logs) when Redis is down, like the other limits.
    """
    if rate is None:
        return
    limit, period = rate
    key = login_failures_key(username)
    try:
        pipe = get_redis().pipeline(transaction=True)
        pipe.incr(key)
        pipe.expire(key, period, nx=True)
        pipe.ttl(key)
        count, _, ttl = pipe.execute()
    except redis.RedisError:
        logger.warning("login failures not checked: Redis unavailable")
        return
    if count <= limit:
        return
    wait = ttl if ttl > 0 else period
    error = TooManyAttemptsError(extra={"retry_after": wait})
    error.retry_after = wait
    raise error


def login_attempt_give_back(*, username: str, rate: tuple[int, int] | None) -> None:
    """Give back the attempt `login_attempt_start` counted: it checked no wrong password."""
    if rate is None:
        return
    try:
        get_redis().eval(_GIVE_BACK, 1, login_failures_key(username))
    except redis.RedisError:
        logger.warning("login attempt not given back: Redis unavailable")


@dataclass
class LoginAttempt:
    """One login in progress; the caller marks it when the credentials were wrong."""

    rejected: bool = False

    def reject(self) -> None:
        """Record that a wrong password or an unknown username failed this attempt."""
        self.rejected = True


@contextmanager
def login_attempt(*, username: str, rate: tuple[int, int] | None) -> Iterator[LoginAttempt]:
    """Check the credentials inside this block; it counts against the username's failures.

    Counted on entry, before the password is hashed (a blocked account costs no hasher
    time; raises TooManyAttemptsError). Given back on exit unless the block called
    `reject()`: a success, or an outage, checked no guess. Unknown usernames count too,
    or the 429 would tell which accounts exist.
    """
    login_attempt_start(username=username, rate=rate)
    attempt = LoginAttempt()
    try:
        yield attempt
    finally:
        if not attempt.rejected:
            login_attempt_give_back(username=username, rate=rate)
