"""Rate limits stored in Redis (Django's cache), so they hold across processes."""
from rest_framework.settings import api_settings
from rest_framework.throttling import SimpleRateThrottle


class _SettingsRateThrottle(SimpleRateThrottle):
    def get_rate(self) -> str | None:
        # Read at request time (not import time) so the rate follows the settings.
        return api_settings.DEFAULT_THROTTLE_RATES.get(self.scope)


class PurchaseRateThrottle(_SettingsRateThrottle):
    """Per user: scalpers cannot hammer the purchase endpoint."""

    scope = "purchase"

    def get_cache_key(self, request, view) -> str | None:
        return self.cache_format % {"scope": self.scope, "ident": request.user.pk}


class LoginRateThrottle(_SettingsRateThrottle):
    """Per client address: slows password guessing from one place."""

    scope = "login"

    def get_cache_key(self, request, view) -> str | None:
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}


class RegisterRateThrottle(LoginRateThrottle):
    scope = "register"
