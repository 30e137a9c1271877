"""Rate limits counted in Redis, so they hold across every API process and machine.

A fixed window per caller: one pipelined INCR + EXPIRE per request (for purchases,
counted inside the gate's Lua call: see `purchase_rate`). DRF's
SimpleRateThrottle keeps a pickled list of timestamps per caller in the cache and
rewrites it on every request, which on the purchase path would cost more than the stock
check itself. A fixed window may let a caller through twice its rate across a window
boundary; the per-user ticket limit, not the rate, is what bounds what a scalper can buy.
"""

import functools
import hashlib
import logging
import re
import time

import redis
from rest_framework.settings import api_settings
from rest_framework.throttling import BaseThrottle

from core.exceptions import ApplicationError
from core.stock import get_redis

logger = logging.getLogger(__name__)

_PERIODS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


@functools.cache
def parse_rate(rate: str) -> tuple[int, int]:
    """'600/min' -> (600, 60); a number may lead the unit: '10/15min' -> (10, 900)."""
    count, period = rate.split("/")
    match = re.fullmatch(r"(\d*)([smhd])[a-z]*", period)
    if match is None:
        raise ValueError(f"Not a rate: {rate!r}")
    return int(count), int(match.group(1) or 1) * _PERIODS[match.group(2)]


def purchase_rate() -> tuple[int, int] | None:
    """(requests, per seconds) a buyer may send for one event, or None for no limit.

    The purchase view hands it to the gate, whose Lua call counts it in the same round
    trip as the stock check (one Redis call per purchase instead of two).
    """
    rate = api_settings.DEFAULT_THROTTLE_RATES.get("purchase")
    return parse_rate(rate) if rate else None


class RedisRateThrottle(BaseThrottle):
    scope: str = ""

    def __init__(self):
        self._wait: float | None = None

    def get_ident_key(self, request) -> str | None:
        """Return who is being limited (override); None exempts the request."""
        raise NotImplementedError

    def allow_request(self, request, view) -> bool:
        rate = api_settings.DEFAULT_THROTTLE_RATES.get(self.scope)
        ident = self.get_ident_key(request)
        if not rate or ident is None:
            return True
        limit, period = parse_rate(rate)
        now = time.time()
        key = f"throttle:{self.scope}:{ident}:{int(now // period)}"
        try:
            pipe = get_redis().pipeline(transaction=False)
            pipe.incr(key)
            pipe.expire(key, period, nx=True)
            count, _ = pipe.execute()
        except redis.RedisError:
            logger.warning("rate limit not checked: Redis unavailable", extra={"scope": self.scope})
            return True  # fail open: the stock gate refuses on its own if Redis is down
        if count <= limit:
            return True
        self._wait = period - (now % period)
        return False

    def wait(self) -> float | None:
        return self._wait


class PurchaseRateThrottle(RedisRateThrottle):
    """Per user, for views without the gate (the naive baseline of the benchmark).

    The product's purchase view counts the same rate per buyer and event inside the
    gate's Lua call instead (`purchase_rate`).
    """

    scope = "purchase"

    def get_ident_key(self, request) -> str | None:
        return str(request.user.pk) if request.user and request.user.is_authenticated else None


class LoginRateThrottle(RedisRateThrottle):
    """Per client address: slows password guessing from one place."""

    scope = "login"

    def get_ident_key(self, request) -> str | None:
        return self.get_ident(request)


class RegisterRateThrottle(LoginRateThrottle):
    scope = "register"


# --- Failed logins per account --------------------------------------------------------
#
# The address limit above does not stop many addresses guessing one account's password
# (credential stuffing through a botnet or proxies). This one counts failed logins per
# username, from any address, in a fixed window that starts with the first attempt:
# over the limit, every login for that username is refused before the password is
# hashed, the right password too (a 429 that depended on the password would confirm a
# guess), until the window expires. A success does not reset it. The owner waits out
# the window like the attacker; nothing outlives it, so nobody can lock an account for
# good. See docs/security.md for the trade-off.
#
# Each attempt is counted as a failure when it starts and given back unless a wrong
# password or unknown username failed it, so concurrent guesses cannot all pass the
# check before any of them is counted, and an outage (a 503) counts against nobody.


class TooManyAttemptsError(ApplicationError):
    code = "too_many_attempts"
    status_code = 429
    message = "Too many failed logins for this account; retry later."


LOGIN_FAILURES_SCOPE = "login_failures"

# Give back one attempt, unless its window has expired meanwhile (a DECR would then
# create a key without expiry).
_GIVE_BACK = """
if redis.call('EXISTS', KEYS[1]) == 1 then return redis.call('DECR', KEYS[1]) end
return 0
"""


def _login_failures_key(username: str) -> str:
    # Usernames are unique case-insensitively (migration 0004): "Alice" and "ALICE" are
    # one account and one counter. Hashed, so a long username makes no long key.
    digest = hashlib.sha256(username.lower().encode()).hexdigest()[:32]
    return f"throttle:{LOGIN_FAILURES_SCOPE}:{digest}"


def _login_failures_rate() -> tuple[int, int] | None:
    rate = api_settings.DEFAULT_THROTTLE_RATES.get(LOGIN_FAILURES_SCOPE)
    return parse_rate(rate) if rate else None


def login_attempt_start(*, username: str) -> None:
    """Count a login attempt for the username as failed until it succeeds.

    Raises TooManyAttemptsError (429, Retry-After) when the window's failures are used
    up. One Redis round trip; fails open (and logs) when Redis is down, like the other
    limits.
    """
    rate = _login_failures_rate()
    if rate is None:
        return
    limit, period = rate
    key = _login_failures_key(username)
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


def login_attempt_give_back(*, username: str) -> None:
    """Give back the attempt `login_attempt_start` counted: it checked no wrong password."""
    if _login_failures_rate() is None:
        return
    try:
        get_redis().eval(_GIVE_BACK, 1, _login_failures_key(username))
    except redis.RedisError:
        logger.warning("login attempt not given back: Redis unavailable")
