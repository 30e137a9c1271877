"""The lean base of the hot endpoints: purchase, order poll, event read.

A DRF `APIView` (routing, schema, permissions and errors as for every other view) whose
`dispatch` skips the parts of DRF a hot endpoint does not need: no `Request` wrapper,
no content negotiation (JSON in, JSON out), no throttle classes (the purchase rate is
counted in the gate's Lua call), no serializer per response (bodies are dicts or
cached bytes rendered by orjson). Together these were ~60% of the CPU of a sold-out
refusal (docs/benchmarks/report.md, "CPU per request").

A subclass lists its fast methods in `lean_methods` and writes them as usual: parse,
call one service or selector, return `self.render(...)`. Other methods of the same
view (an Admin's PUT, say) run through DRF's full `dispatch`. Errors take the same
path as everywhere: `ApplicationError` straight to its JSON body, anything else
through `api.exceptions.exception_handler`.
"""

from __future__ import annotations

import orjson
from django.http import HttpResponse
from rest_framework import exceptions
from rest_framework.views import APIView

from api.authentication import JWTAuthentication
from api.exceptions import error_body, exception_handler
from core.exceptions import ApplicationError

JSON = "application/json"
_DUMPS = orjson.OPT_UTC_Z


def json_response(
    body: bytes | dict, *, status: int = 200, headers: dict | None = None
) -> HttpResponse:
    """An HttpResponse of a JSON body (bytes already rendered, or a dict to render)."""
    if not isinstance(body, bytes):
        body = orjson.dumps(body, option=_DUMPS)
    response = HttpResponse(body, status=status, content_type=JSON)
    if headers:
        for name, value in headers.items():
            response[name] = value
    return response


class LeanApiView(APIView):
    """Serve `lean_methods` without DRF's per-request machinery; see the module docstring."""

    lean_methods: frozenset[str] = frozenset()
    # Schema generation and DRF's own dispatch (for the other methods) read these.
    authentication_classes = [JWTAuthentication]

    _authenticator = JWTAuthentication()

    def dispatch(self, request, *args, **kwargs):
        method = request.method.lower()
        if method not in self.lean_methods:
            return super().dispatch(request, *args, **kwargs)
        self.args, self.kwargs, self.request, self.headers = args, kwargs, request, {}
        try:
            request.user, request.auth = self.authenticate(request)
            for permission in self.get_permissions():
                if not permission.has_permission(request, self):
                    raise exceptions.PermissionDenied(getattr(permission, "message", None))
            return getattr(self, method)(request, *args, **kwargs)
        except ApplicationError as exc:
            return self.render_error(exc)
        except Exception as exc:  # noqa: BLE001  every other error: the project's handler
            return self._handle_other(request, exc)

    def authenticate(self, request):
        """Return (user, token) from the Bearer token; NotAuthenticated without one."""
        found = self._authenticator.authenticate(request)
        if found is None:
            raise exceptions.NotAuthenticated()
        return found

    @staticmethod
    def render(
        body: bytes | dict, *, status: int = 200, headers: dict | None = None
    ) -> HttpResponse:
        return json_response(body, status=status, headers=headers)

    @staticmethod
    def render_error(exc: ApplicationError) -> HttpResponse:
        headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after else None
        return json_response(
            error_body(exc.code, exc.message, **exc.extra), status=exc.status_code, headers=headers
        )

    def _handle_other(self, request, exc: Exception) -> HttpResponse:
        """Render DRF's and Django's exceptions exactly as the other views do."""
        response = exception_handler(exc, {"view": self, "request": request})
        if response is None:
            raise exc
        headers = {name: value for name, value in response.items() if name != "Content-Type"}
        if isinstance(exc, (exceptions.NotAuthenticated, exceptions.AuthenticationFailed)):
            response.status_code = 401
            headers["WWW-Authenticate"] = self._authenticator.authenticate_header(request)
        return json_response(response.data, status=response.status_code, headers=headers)
