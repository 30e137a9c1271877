"""OpenAPI details drf-spectacular cannot infer: our JWT scheme and the error shape."""
from drf_spectacular.contrib.rest_framework_simplejwt import SimpleJWTScheme
from drf_spectacular.utils import OpenApiResponse

_DESCRIPTIONS = {
    400: "Invalid input (`code` `invalid` with field `errors`, or `malformed_request`).",
    401: "Missing, invalid, expired or revoked token, or bad credentials "
    "(`not_authenticated`, `token_not_valid`, `token_revoked`, `bad_authorization_header`, "
    "`no_active_account`, `authentication_failed`).",
    403: "The caller's role may not do this (`permission_denied`).",
    404: "No such resource, or not yours (`not_found`).",
    409: "Refused: `sold_out`, `insufficient_tickets`, `limit_exceeded`, `sale_not_open`, "
    "`request_in_progress`, `order_not_cancellable`, `event_has_sales`, "
    "`total_below_committed`.",
    422: "The Idempotency-Key was used with a different request (`idempotency_key_reused`).",
    429: "Rate limited (`throttled`); see Retry-After.",
    503: "A dependency is down; nothing was done (`database_unavailable`, "
    "`queue_unavailable`, `gate_unavailable`, `service_unavailable`); see Retry-After.",
}


def errors(*codes: int) -> dict[int, OpenApiResponse]:
    """Document error responses in the one shape every error uses."""
    from api.serializers import ErrorSerializer

    return {code: OpenApiResponse(ErrorSerializer, description=_DESCRIPTIONS[code]) for code in codes}


class ProjectJWTScheme(SimpleJWTScheme):
    target_class = "api.authentication.JWTAuthentication"
