"""Rate limits counted in Redis, so they hold across every API process and machine.

A fixed window per caller: one pipelined INCR + EXPIRE per request (for purchases,
counted inside the gate's Lua call: see `purchase_rate`). DRF's
SimpleRateThrottle keeps a pickled list of timestamps per caller in the cache and
rewrites it on every request, which on the purchase path would cost more than the stock
check itself. A fixed window may let a caller through twice its rate across a window
boundary; the per-user ticket limit, not the rate, is what bounds what a scalper can buy.
"""

import functools
import logging
import re
import time

import redis
from rest_framework.settings import api_settings
from rest_framework.throttling import BaseThrottle

from core.redis_client import get_redis

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


def login_failures_rate() -> tuple[int, int] | None:
    """(failed logins, per seconds) allowed for one username from any address, or None.

    The login serializer hands it to the account lockout (core/services/logins.py,
    `THROTTLE_LOGIN_FAILURES`), which counts failed logins per username, not requests
    per caller as the throttles below do.
    """
    rate = api_settings.DEFAULT_THROTTLE_RATES.get("login_failures")
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


class LoginRateThrottle(RedisRateThrottle):
    """Per client address: slows password guessing from one place."""

    scope = "login"

    def get_ident_key(self, request) -> str | None:
        return self.get_ident(request)


class RegisterRateThrottle(LoginRateThrottle):
    scope = "register"
