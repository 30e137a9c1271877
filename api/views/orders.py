"""Purchases and orders: the purchase (the hot path), the order poll, lists, cancels."""

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from api import serializers as s
from api.lean import LeanApiView
from api.parsers import request_json
from api.permissions import IsBuyer
from api.schema import errors, paginated
from api.throttles import purchase_rate
from api.views.common import is_admin, page_response, query_params
from core import selectors
from core.cards import order_json
from core.exceptions import ApplicationError
from core.gate.line import retry_after, with_place
from core.metrics import PURCHASES
from core.services.cancellations import order_cancel
from core.services.purchases import purchase_request

MAX_IDEMPOTENCY_KEY_LENGTH = 128


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
        query = query_params(s.OrderListQuerySerializer, request)
        orders = selectors.order_list(
            user_id=request.user.id,
            is_admin=is_admin(request),
            event_id=query.get("event"),
            status=query.get("status"),
        )
        return page_response(request, self, orders, s.OrderOutputSerializer)


# A poll's path: core/selectors/__init__.py `access_order_card` → the order's card (core/cards.py)
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
            order_id=order_id, user_id=request.user.id, is_admin=is_admin(request)
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
        order = order_cancel(order_id=order_id, user_id=request.user.id, is_admin=is_admin(request))
        return Response(s.OrderOutputSerializer(order).data)
