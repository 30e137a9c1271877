"""POST /naive/events/<id>/purchase/: the textbook design the queued one is measured against.

Same server, lean view base, authentication, permission, validation, error rendering
and output as `api.views.PurchaseCreateApi`; only the purchase itself differs
(`purchase_commit_naive`). Without a gate to count it in, the per-user rate limit is
the product's Redis throttle (one INCR round trip), as the product had before its gate
took that job over.
"""

from django.db import transaction
from django.db.models import F, Sum
from django.utils import timezone
from rest_framework.exceptions import Throttled

from api import serializers as s
from api.lean import LeanApiView
from api.parsers import request_json
from api.permissions import IsBuyer
from api.throttles import RedisRateThrottle
from core.cards import order_json
from core.exceptions import (
    InsufficientTicketsError,
    NotFoundError,
    PurchaseLimitError,
    SaleClosedError,
    SoldOutError,
)
from core.models import Event, Order, Ticket


class PurchaseRateThrottle(RedisRateThrottle):
    """Per user: the purchase rate (THROTTLE_PURCHASE_RATE) for a view without the gate.

    The product's purchase view counts the same rate per buyer and event inside the
    gate's Lua call instead (`api.throttles.purchase_rate`).
    """

    scope = "purchase"

    def get_ident_key(self, request) -> str | None:
        return str(request.user.pk) if request.user and request.user.is_authenticated else None


def purchase_commit_naive(*, user_id: int, event_id: int, quantity: int) -> Order:
    """Sell `quantity` tickets now, in one transaction holding the event row lock.

    Every request for the event, refusals included, queues on that lock: this is
    the contention the product's Redis gate and queued commits avoid.
    """
    with transaction.atomic():
        event = Event.objects.select_for_update().filter(pk=event_id).first()
        if event is None:
            raise NotFoundError("No event with this id.")
        now = timezone.now()
        ends = min(filter(None, [event.sale_ends_at, event.date]))
        if (event.sale_starts_at and now < event.sale_starts_at) or now >= ends:
            raise SaleClosedError()
        available = event.total_tickets - event.tickets_sold
        if available <= 0:
            raise SoldOutError(extra={"tickets_available": 0})
        if available < quantity:
            raise InsufficientTicketsError(
                f"Only {available} ticket(s) left.", extra={"tickets_available": available}
            )
        if event.max_tickets_per_user:
            held = (
                Order.objects.filter(
                    user_id=user_id, event_id=event_id, status=Order.Status.CONFIRMED
                ).aggregate(n=Sum("quantity"))["n"]
                or 0
            )
            if held + quantity > event.max_tickets_per_user:
                raise PurchaseLimitError(
                    extra={"tickets_allowed": event.max_tickets_per_user - held}
                )
        order = Order.objects.create(
            user_id=user_id,
            event_id=event_id,
            quantity=quantity,
            status=Order.Status.CONFIRMED,
            finalized_at=now,
        )
        Ticket.objects.create(order=order, user_id=user_id, event_id=event_id, quantity=quantity)
        Event.objects.filter(pk=event_id).update(tickets_sold=F("tickets_sold") + quantity)
    return order


class NaivePurchaseApi(LeanApiView):
    permission_classes = [IsBuyer]
    lean_methods = frozenset({"post"})

    def post(self, request, event_id: int):
        throttle = PurchaseRateThrottle()
        if not throttle.allow_request(request, self):
            raise Throttled(throttle.wait())
        order = purchase_commit_naive(
            user_id=request.user.id,
            event_id=event_id,
            quantity=s.purchase_quantity(request_json(request)),
        )
        return self.render(order_json(order), status=201)
