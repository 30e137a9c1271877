"""OpenAPI details drf-spectacular cannot infer: our JWT scheme and the error shape."""

from functools import cache

from drf_spectacular.contrib.rest_framework_simplejwt import SimpleJWTScheme
from drf_spectacular.utils import OpenApiResponse
from rest_framework import serializers

_DESCRIPTIONS = {
    400: "Invalid input (`code` `invalid` with field `errors`, or `malformed_request`).",
    401: "Missing, invalid, expired or revoked token, or bad credentials "
    "(`not_authenticated`, `token_not_valid`, `token_revoked`, `bad_authorization_header`, "
    "`no_active_account`, `authentication_failed`).",
    403: "The caller's role may not do this (`permission_denied`).",
    404: "No such resource or page, or not yours (`not_found`); the event has no waiting "
    "room (`waiting_room_closed`), or you have not joined it (`not_in_waiting_room`).",
    409: "Refused: `sold_out`, `insufficient_tickets`, `limit_exceeded`, `sale_not_open`, "
    "`request_in_progress`, `order_not_cancellable`, `event_has_sales`, "
    "`total_below_committed`; a purchase on an event with a waiting room: "
    "`not_admitted_yet` (field `position`: numbers still ahead, null if not known yet; "
    "Retry-After: the estimated wait), `admission_expired` (the admission ran out unused), "
    "`not_in_waiting_room` (join the room first).",
    415: "The body is not JSON (`unsupported_media_type`).",
    422: "The Idempotency-Key was used with a different request (`idempotency_key_reused`).",
    429: "Rate limited (`throttled`); see Retry-After.",
    503: "A dependency is down; nothing was done (`database_unavailable`, "
    "`queue_unavailable`, `gate_unavailable`, `waiting_room_unavailable`, "
    "`service_unavailable`); see Retry-After.",
}


def errors(*codes: int) -> dict[int, OpenApiResponse]:
    """Document error responses in the one shape every error uses."""
    from api.serializers import ErrorSerializer

    return {
        code: OpenApiResponse(ErrorSerializer, description=_DESCRIPTIONS[code]) for code in codes
    }


@cache
def paginated(item_serializer: type[serializers.Serializer]) -> type[serializers.Serializer]:
    """Describe one page of `api.pagination.PageNumberPagination` around `item_serializer`.

    Our list views are plain APIViews, which drf-spectacular documents as bare arrays;
    what they answer is `{count, next, previous, results}`.
    """
    name = "Paginated" + item_serializer.__name__.removesuffix("Serializer") + "List"
    fields = {
        "count": serializers.IntegerField(min_value=0),
        "next": serializers.URLField(allow_null=True),
        "previous": serializers.URLField(allow_null=True),
        "results": item_serializer(many=True),
    }
    return type(name, (serializers.Serializer,), fields)


class ProjectJWTScheme(SimpleJWTScheme):
    target_class = "api.authentication.JWTAuthentication"
