"""One JSON shape for every error: `{"code", "message", "errors"?, ...details}`."""

import logging

import redis
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig, SuspiciousOperation
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import InterfaceError, OperationalError
from django.http import Http404, JsonResponse
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler
from rest_framework_simplejwt.exceptions import InvalidToken

from core.exceptions import ApplicationError, DatabaseUnavailableError, ServiceBusyError

logger = logging.getLogger(__name__)

# Stable codes for DRF's own exceptions (its default codes, renamed where clearer).
_DRF_CODES = {
    exceptions.ParseError: "malformed_request",
    exceptions.NotAuthenticated: "not_authenticated",
    exceptions.AuthenticationFailed: "authentication_failed",
    InvalidToken: "token_not_valid",
    exceptions.PermissionDenied: "permission_denied",
    exceptions.NotFound: "not_found",
    exceptions.MethodNotAllowed: "method_not_allowed",
    exceptions.NotAcceptable: "not_acceptable",
    exceptions.UnsupportedMediaType: "unsupported_media_type",
    exceptions.Throttled: "throttled",
    exceptions.ValidationError: "invalid",
}


def error_body(code: str, message: str, **extra) -> dict:
    return {"code": code, "message": message, **extra}


def _drf_code(exc: exceptions.APIException) -> str:
    detail = exc.detail
    # simplejwt-style failures name their cause (`token_revoked`, `no_active_account`,
    # `bad_authorization_header`): keep it, clients act on it without parsing prose.
    if isinstance(exc, exceptions.AuthenticationFailed) and isinstance(detail, dict):
        if detail.get("code"):
            return str(detail["code"])
    for cls in type(exc).__mro__:
        if cls in _DRF_CODES:
            return _DRF_CODES[cls]
    return exc.default_code


def _message(detail) -> str:
    if isinstance(detail, dict):
        detail = detail.get("detail", "Invalid input.")
    if isinstance(detail, list):
        detail = detail[0] if detail else "Invalid input."
    return str(detail)


def _unavailable(exc: Exception) -> ApplicationError | None:
    """Map a dependency outage that escaped the services to "busy, retry" (503).

    Redis backs token revocation and the throttles, so its outage reaches every
    authenticated view; a lost or timed-out database connection is no bug either.
    """
    if isinstance(exc, redis.RedisError):
        return ServiceBusyError()
    if isinstance(exc, (OperationalError, InterfaceError)):
        return DatabaseUnavailableError()
    return None


def exception_handler(exc, context):
    """Render any exception raised in a DRF view as the project's JSON error."""
    outage = _unavailable(exc)
    if outage is not None:
        logger.warning("dependency unavailable", extra={"error": repr(exc)})
        exc = outage
    if isinstance(exc, ApplicationError):
        response = Response(error_body(exc.code, exc.message, **exc.extra), status=exc.status_code)
        if exc.retry_after:
            response["Retry-After"] = str(exc.retry_after)
        return response
    if isinstance(exc, RequestDataTooBig):
        return Response(
            error_body("payload_too_large", "The request body is too large."),
            status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
        )
    if isinstance(exc, DjangoValidationError):
        exc = exceptions.ValidationError(detail={"non_field_errors": exc.messages})
    elif isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    elif isinstance(exc, SuspiciousOperation):
        exc = exceptions.ParseError("The request was refused.")
    response = drf_exception_handler(exc, context)
    if response is None:
        return None  # a real bug: Django's handler500 answers with JSON
    code = _drf_code(exc)
    if isinstance(exc, exceptions.ValidationError):
        detail = exc.detail if isinstance(exc.detail, dict) else {"non_field_errors": exc.detail}
        response.data = error_body(code, "The request is invalid.", errors=detail)
    else:
        response.data = error_body(code, _message(exc.detail))
    if isinstance(exc, exceptions.Throttled) and exc.wait:
        response.data["retry_after"] = int(exc.wait)
    return response


def _json_handler(status_code: int, code: str, message: str):
    def handler(request, exception=None, *args, **kwargs):
        return JsonResponse(error_body(code, message), status=status_code)

    return handler


handler400 = _json_handler(400, "bad_request", "The request could not be understood.")
handler403 = _json_handler(403, "permission_denied", "You do not have permission.")
handler404 = _json_handler(404, "not_found", "Not found.")
handler500 = _json_handler(500, "server_error", "An unexpected error occurred.")
