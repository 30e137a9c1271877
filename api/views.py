"""HTTP endpoints. Each view parses input, calls one service or selector, renders output."""

from django.db import connection
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.exceptions import ValidationError
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView
from rest_framework_simplejwt.views import TokenBlacklistView, TokenObtainPairView, TokenViewBase

from api import serializers as s
from api.lean import LeanApiView
from api.pagination import PageNumberPagination
from api.parsers import request_json
from api.permissions import IsAdmin, IsAdminOrReadOnly, IsBuyer
from api.schema import errors, paginated
from api.throttles import LoginRateThrottle, RegisterRateThrottle, purchase_rate
from core import selectors
from core.cards import order_json
from core.exceptions import ApplicationError
from core.gate.line import retry_after, with_place
from core.metrics import PURCHASES
from core.ops import queue_summary
from core.redis_client import get_redis
from core.services.cancellations import order_cancel
from core.services.events import event_create, event_delete, event_update
from core.services.purchases import purchase_request
from core.services.users import user_register

MAX_IDEMPOTENCY_KEY_LENGTH = 128


def _is_admin(request) -> bool:
    return getattr(request.user, "is_admin", False)


def _paginated(request, view, queryset, serializer_class) -> Response:
    paginator = PageNumberPagination()
    page = paginator.paginate_queryset(queryset, request, view=view)
    return paginator.get_paginated_response(serializer_class(page, many=True).data)


def _query(serializer_class, request) -> dict:
    query = serializer_class(data=request.query_params)
    query.is_valid(raise_exception=True)
    return query.validated_data


# --- Accounts ----------------------------------------------------------------------


class RegisterApi(APIView):
    permission_classes = [AllowAny]
    throttle_classes = [RegisterRateThrottle]

    @extend_schema(
        request=s.RegisterInputSerializer,
        responses={201: s.UserOutputSerializer, **errors(400, 401, 403, 429)},
        summary="Create an account (an Admin needs an Admin caller or the signup code)",
    )
    def post(self, request):
        data = request.data
        serializer = s.RegisterInputSerializer(data=data)
        serializer.is_valid(raise_exception=True)
        user = user_register(
            username=serializer.validated_data["username"],
            password=serializer.validated_data["password"],
            role=serializer.validated_data["role"],
            admin_code=serializer.validated_data.get("admin_code"),
            by_admin=_is_admin(request),
        )
        return Response(s.UserOutputSerializer(user).data, status=status.HTTP_201_CREATED)


class LoginApi(TokenObtainPairView):
    throttle_classes = [LoginRateThrottle]

    @extend_schema(
        responses={200: s.TokenPairOutputSerializer, **errors(400, 401, 429)},
        summary="Exchange username and password for an access and a refresh token",
    )
    def post(self, request, *args, **kwargs):
        return super().post(request, *args, **kwargs)


class TokenRefreshApi(TokenViewBase):
    serializer_class = s.TokenRefreshSerializer

    @extend_schema(
        responses={200: s.TokenPairOutputSerializer, **errors(400, 401)},
        summary="Rotate a refresh token (the old one is blacklisted)",
    )
    def post(self, request, *args, **kwargs):
        return super().post(request, *args, **kwargs)


class LogoutApi(TokenBlacklistView):
    @extend_schema(
        request=s.LogoutInputSerializer,
        responses={200: None, **errors(400, 401)},
        summary="Blacklist a refresh token",
    )
    def post(self, request, *args, **kwargs):
        return super().post(request, *args, **kwargs)


# --- Events ------------------------------------------------------------------------


class EventListCreateApi(APIView):
    permission_classes = [IsAdminOrReadOnly]

    @extend_schema(
        operation_id="events_list",
        parameters=[s.EventListQuerySerializer],
        responses={200: paginated(s.EventOutputSerializer), **errors(400, 401, 404)},
        summary="List events (filter upcoming/past, search by name, order by date)",
    )
    def get(self, request):
        query = _query(s.EventListQuerySerializer, request)
        events = selectors.event_list(
            when=query.get("when"), search=query.get("search"), ordering=query["ordering"]
        )
        return _paginated(request, self, events, s.EventOutputSerializer)

    @extend_schema(
        request=s.EventInputSerializer,
        responses={201: s.EventOutputSerializer, **errors(400, 401, 403)},
        summary="Create an event (Admin)",
    )
    def post(self, request):
        serializer = s.EventInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        event = event_create(**serializer.validated_data)
        return Response(s.EventOutputSerializer(event).data, status=status.HTTP_201_CREATED)


class EventDetailApi(LeanApiView):
    permission_classes = [IsAdminOrReadOnly]
    lean_methods = frozenset({"get"})

    @extend_schema(
        responses={200: s.EventOutputSerializer, **errors(401, 404)},
        summary="Read an event (sold counts may lag commits by up to EVENT_CARD_SECONDS)",
    )
    def get(self, request, event_id: int):
        return self.render(selectors.event_card_get(event_id=event_id))

    @extend_schema(
        request=s.EventInputSerializer,
        responses={200: s.EventOutputSerializer, **errors(400, 401, 403, 404, 409)},
        summary="Replace an event (Admin)",
    )
    def put(self, request, event_id: int):
        return self._update(request, event_id, partial=False)

    @extend_schema(
        request=s.EventInputSerializer,
        responses={200: s.EventOutputSerializer, **errors(400, 401, 403, 404, 409)},
        summary="Change some fields of an event (Admin)",
    )
    def patch(self, request, event_id: int):
        return self._update(request, event_id, partial=True)

    def _update(self, request, event_id: int, *, partial: bool) -> Response:
        current = selectors.event_get(event_id=event_id)
        serializer = s.EventInputSerializer(current, data=request.data, partial=partial)
        serializer.is_valid(raise_exception=True)
        event = event_update(event_id=event_id, data=serializer.validated_data)
        return Response(s.EventOutputSerializer(event).data)

    @extend_schema(
        responses={204: None, **errors(401, 403, 404, 409)},
        summary="Delete an event without sales (Admin)",
    )
    def delete(self, request, event_id: int):
        event_delete(event_id=event_id)
        return Response(status=status.HTTP_204_NO_CONTENT)


class TopEventsApi(APIView):
    @extend_schema(
        parameters=[s.TopEventsQuerySerializer],
        responses={200: s.TopEventsOutputSerializer, **errors(400, 401)},
        summary="Upcoming events ranked by tickets sold (from a view refreshed by beat)",
    )
    def get(self, request):
        query = _query(s.TopEventsQuerySerializer, request)
        rows, refreshed_at = selectors.top_events_list(limit=query["limit"])
        return Response(
            s.TopEventsOutputSerializer({"refreshed_at": refreshed_at, "results": rows}).data
        )


# --- Purchases and orders ------------------------------------------------------------


# A purchase's path, file by file (no docstring here: it would become the API schema's
# description): core/services/purchases.py (reserve in core/gate/reserve.py, record,
# schedule, answer); later the drain task, workers/tasks.py `event_orders_commit` →
# core/services/drain.py → the commit in core/services/orders.py.
class PurchaseCreateApi(LeanApiView):
    permission_classes = [IsBuyer]
    lean_methods = frozenset({"post"})

    @extend_schema(
        request=s.PurchaseInputSerializer,
        parameters=[
            OpenApiParameter(
                "Idempotency-Key",
                str,
                OpenApiParameter.HEADER,
                description="Retrying with the same key returns the same order.",
            )
        ],
        responses={202: s.OrderOutputSerializer, **errors(400, 401, 403, 404, 409, 422, 429, 503)},
        summary="Request tickets: 202 with a pending order to poll, or 409 when refused",
    )
    def post(self, request, event_id: int):
        try:
            result = purchase_request(
                user_id=request.user.id,
                event_id=event_id,
                quantity=s.purchase_quantity(request_json(request)),
                idempotency_key=_idempotency_key(request),
                rate=purchase_rate(),
            )
        except ApplicationError as exc:
            PURCHASES.labels(exc.code).inc()
            raise
        except ValidationError:
            PURCHASES.labels("invalid").inc()
            raise
        PURCHASES.labels("replayed" if result.replayed else "accepted").inc()
        order = result.order
        headers = {"Location": f"/orders/{order.pk}/"}
        body = order_json(order)
        if order.status == order.Status.PENDING:
            wait = result.estimated_wait_seconds
            headers["Retry-After"] = str(retry_after(wait))
            body = with_place(body, position=result.position, estimate=wait)
        if result.replayed:
            headers["Idempotent-Replayed"] = "true"
        return self.render(body, status=202, headers=headers)


def _idempotency_key(request) -> str | None:
    key = request.META.get("HTTP_IDEMPOTENCY_KEY")  # request.headers would copy every header
    if key is not None and not (0 < len(key) <= MAX_IDEMPOTENCY_KEY_LENGTH and key.isprintable()):
        raise ValidationError({"Idempotency-Key": ["Must be 1 to 128 printable characters."]})
    return key


class OrderListApi(APIView):
    @extend_schema(
        operation_id="orders_list",
        parameters=[s.OrderListQuerySerializer],
        responses={200: paginated(s.OrderOutputSerializer), **errors(400, 401, 404)},
        summary="List your orders, newest first (Admins: all, filter by event and status)",
    )
    def get(self, request):
        query = _query(s.OrderListQuerySerializer, request)
        orders = selectors.order_list(
            user_id=request.user.id,
            is_admin=_is_admin(request),
            event_id=query.get("event"),
            status=query.get("status"),
        )
        return _paginated(request, self, orders, s.OrderOutputSerializer)


# A poll's path: core/selectors.py `access_order_card` → the order's card (core/cards.py)
# → while pending, its place in line (core/gate/line.py).
class OrderDetailApi(LeanApiView):
    lean_methods = frozenset({"get"})

    @extend_schema(
        responses={200: s.OrderOutputSerializer, **errors(401, 404)},
        summary="Poll an order (while pending: its place in line, and Retry-After from the "
        "estimated wait)",
    )
    def get(self, request, order_id: int):
        status_, body, wait = selectors.access_order_card(
            order_id=order_id, user_id=request.user.id, is_admin=_is_admin(request)
        )
        headers = {"Retry-After": str(retry_after(wait))} if status_ == "pending" else None
        return self.render(body, headers=headers)


class OrderCancelApi(APIView):
    @extend_schema(
        request=None,
        responses={200: s.OrderOutputSerializer, **errors(400, 401, 404, 409, 415)},
        summary="Cancel a confirmed order; the tickets go back on sale",
    )
    def post(self, request, order_id: int):
        request.data  # noqa: B018  a body, if any, must parse: malformed input is refused
        order = order_cancel(
            order_id=order_id, user_id=request.user.id, is_admin=_is_admin(request)
        )
        return Response(s.OrderOutputSerializer(order).data)


# --- Operations --------------------------------------------------------------------


class OpsQueuesApi(APIView):
    permission_classes = [IsAdmin]

    @extend_schema(
        responses={200: None, **errors(401, 403)},
        summary="Queue depths, pending orders, live workers, gate vs database (Admin)",
    )
    def get(self, request):
        return Response(queue_summary())


class HealthApi(APIView):
    permission_classes = [AllowAny]
    authentication_classes = []

    @extend_schema(responses={200: None}, summary="The process is alive")
    def get(self, request):
        return Response({"status": "ok"})


class ReadyApi(APIView):
    permission_classes = [AllowAny]
    authentication_classes = []

    @extend_schema(responses={200: None, 503: None}, summary="PostgreSQL and Redis answer")
    def get(self, request):
        checks = {"database": _check_database(), "redis": _check_redis()}
        ready = all(value == "ok" for value in checks.values())
        body = {"status": "ok" if ready else "unavailable", "checks": checks}
        if not ready:
            failing = ", ".join(name for name, value in checks.items() if value != "ok")
            body.update(code="not_ready", message=f"Not ready: {failing} unavailable.")
        return Response(body, status=200 if ready else 503)


def _check_database() -> str:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return "ok"
    except Exception as exc:  # readiness reports any failure instead of raising it
        return f"error: {type(exc).__name__}"


def _check_redis() -> str:
    try:
        get_redis().ping()
        return "ok"
    except Exception as exc:  # readiness reports any failure instead of raising it
        return f"error: {type(exc).__name__}"
