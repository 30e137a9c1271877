"""Middleware the admin needs and the API does not, skipped outside the admin's URLs.

The user from the session and the messages serve the Django admin (a browser with
cookies); API clients authenticate with a Bearer token on every request. Each class
below is Django's own, run only for paths under `ADMIN_PATH_PREFIXES`. Sessions, CSRF
and the frame header stay global: `check --deploy` looks for those classes by name,
and the session cookie is lazy (API requests never touch it).
"""

from django.conf import settings
from django.contrib.auth.middleware import AuthenticationMiddleware as _Authentication
from django.contrib.messages.middleware import MessageMiddleware as _Messages


class _AdminOnly:
    def __call__(self, request):
        if not request.path_info.startswith(settings.ADMIN_PATH_PREFIXES):
            return self.get_response(request)
        return super().__call__(request)


class AuthenticationMiddleware(_AdminOnly, _Authentication):
    pass


class MessageMiddleware(_AdminOnly, _Messages):
    pass
