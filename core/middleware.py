"""The client's address as the front door saw it, and middleware only the admin needs.

`ForwardedForMiddleware` takes the client address from X-Forwarded-For when, and only
when, the request comes from the front door. The other classes serve the admin and are
skipped outside its URLs: the user from the session and the messages serve the Django admin (a browser with
cookies); API clients authenticate with a Bearer token on every request. Each class
below is Django's own, run only for paths under `ADMIN_PATH_PREFIXES`. Sessions, CSRF
and the frame header stay global: `check --deploy` looks for those classes by name,
and the session cookie is lazy (API requests never touch it).
"""

import ipaddress

from django.conf import settings
from django.contrib.auth.middleware import AuthenticationMiddleware as _Authentication
from django.contrib.messages.middleware import MessageMiddleware as _Messages
from django.core.exceptions import ImproperlyConfigured, MiddlewareNotUsed


class _AdminOnly:
    def __call__(self, request):
        if not request.path_info.startswith(settings.ADMIN_PATH_PREFIXES):
            return self.get_response(request)
        return super().__call__(request)


class AuthenticationMiddleware(_AdminOnly, _Authentication):
    pass


class MessageMiddleware(_AdminOnly, _Messages):
    pass


class ForwardedForMiddleware:
    """Replace REMOTE_ADDR with X-Forwarded-For's last address when the front door sent it.

    The front door (deploy/haproxy/haproxy.cfg) overwrites X-Forwarded-For with the
    address of its own peer and connects to the API from an address named in
    `TRUSTED_PROXY_ADDRESSES` (DJANGO_TRUSTED_PROXY_ADDRESSES: addresses or networks).
    From any other peer the header is ignored, so a client that reaches the API directly,
    or sends the header through the door, cannot choose the address that rate limits
    and logs see. (Django dropped its SetRemoteAddrFromForwardedFor because it trusted
    the header from anyone.) Without trusted addresses the middleware is not loaded.
    """

    def __init__(self, get_response):
        try:
            self.trusted = tuple(
                ipaddress.ip_network(entry, strict=False)
                for entry in settings.TRUSTED_PROXY_ADDRESSES
            )
        except ValueError as error:
            raise ImproperlyConfigured(f"DJANGO_TRUSTED_PROXY_ADDRESSES: {error}") from error
        if not self.trusted:
            raise MiddlewareNotUsed
        self.get_response = get_response

    def __call__(self, request):
        forwarded = request.META.get("HTTP_X_FORWARDED_FOR")
        if forwarded and self._is_trusted(request.META.get("REMOTE_ADDR", "")):
            client = _address(forwarded.rsplit(",", 1)[-1].strip())
            if client is not None:
                request.META["REMOTE_ADDR"] = str(client)
        return self.get_response(request)

    def _is_trusted(self, peer: str) -> bool:
        address = _address(peer)
        return address is not None and any(address in network for network in self.trusted)


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None
