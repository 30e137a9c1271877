"""The waitlist's endpoints (docs/frontend.md, "The waitlist").

A buyer's join, own state and leave are hot after a sell-out (the refused crowd is told
to join), so they use the lean base like the purchase; an Admin's settings run through
DRF as every other write.
"""

from __future__ import annotations

from django.contrib.auth.models import AnonymousUser
from django.utils import timezone
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response

from api import serializers as s
from api.lean import LeanApiView
from api.parsers import request_json
from api.permissions import IsAdmin, IsBuyer
from api.schema import errors
from core.exceptions import NoWaitlistError
from core.selectors import (
    WaitlistEntryView,
    access_waitlist_entry,
    waitlist_figures,
)
from core.services.waitlists import (
    waitlist_configure,
    waitlist_join,
    waitlist_leave,
    waitlist_remove,
)

STATUSES = ["waiting", "offered", "bought", "expired", "left"]


def entry_json(entry: WaitlistEntryView) -> dict:
    expires_in = None
    if entry.expires_at is not None:
        expires_in = max(0, int((entry.expires_at - timezone.now()).total_seconds()))
    return {
        "event_id": entry.event_id,
        "status": entry.status,
        "quantity": entry.quantity,
        "position": entry.position,
        "offer_quantity": entry.offer_quantity,
        "expires_at": entry.expires_at,
        "expires_in": expires_in,
        "order_id": entry.order_id,
        "joined_at": entry.joined_at,
    }


def _render_entry(view: LeanApiView, entry: WaitlistEntryView, *, status_code: int = 200):
    retry = entry.retry_after
    headers = {"Retry-After": str(retry)} if retry else None
    return view.render(entry_json(entry), status=status_code, headers=headers)


class WaitlistEntrySerializer(serializers.Serializer):
    """Schema only: a buyer's entry (rendered by entry_json)."""

    event_id = serializers.IntegerField()
    status = serializers.ChoiceField(STATUSES)
    quantity = serializers.IntegerField(help_text="Tickets asked for.")
    position = serializers.IntegerField(
        allow_null=True, help_text="While waiting: 1 is the next to be offered."
    )
    offer_quantity = serializers.IntegerField(allow_null=True, help_text="Tickets offered.")
    expires_at = serializers.DateTimeField(allow_null=True, help_text="When the offer ends.")
    expires_in = serializers.IntegerField(allow_null=True, help_text="Seconds the offer has left.")
    order_id = serializers.IntegerField(allow_null=True, help_text="The order that took the offer.")
    joined_at = serializers.DateTimeField()


class WaitlistInputSerializer(serializers.Serializer):
    offer_seconds = serializers.IntegerField(
        min_value=10, max_value=86_400, default=600, help_text="How long an offer holds."
    )
    paused = serializers.BooleanField(default=False)


class WaitlistSerializer(serializers.Serializer):
    """The waitlist's settings and figures."""

    event_id = serializers.IntegerField()
    offer_seconds = serializers.IntegerField()
    paused = serializers.BooleanField()
    waiting = serializers.IntegerField()
    offers_out = serializers.IntegerField()
    offers_taken = serializers.IntegerField()
    offers_expired = serializers.IntegerField()


_RETRY_AFTER = "Retry-After: seconds to the next look while waiting or offered."


class WaitlistApi(LeanApiView):
    """GET: the waitlist's settings and figures (anyone, lean). PUT/DELETE: an Admin's."""

    lean_methods = frozenset({"get"})
    permission_classes = [IsAdmin]
    InputSerializer = WaitlistInputSerializer
    OutputSerializer = WaitlistSerializer

    def get_permissions(self):
        return [] if self.request.method == "GET" else super().get_permissions()

    def authenticate(self, request):
        return AnonymousUser(), None  # the figures are the same for everyone

    @extend_schema(
        auth=[],
        responses={200: OutputSerializer, **errors(404)},
        summary="The event's waitlist: length, offers out, taken and expired",
    )
    def get(self, request, event_id: int):
        return self.render(_figures(event_id))

    @extend_schema(
        request=InputSerializer,
        responses={200: OutputSerializer, **errors(400, 401, 403, 404, 503)},
        summary="Turn the waitlist on, set its offer time, pause or resume it (Admin)",
    )
    def put(self, request, event_id: int):
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        waitlist_configure(event_id=event_id, **serializer.validated_data)
        return Response(_figures(event_id))

    @extend_schema(
        responses={204: None, **errors(401, 403, 404, 503)},
        summary="Turn the waitlist off: waiting entries leave, returns go on sale (Admin)",
    )
    def delete(self, request, event_id: int):
        waitlist_remove(event_id=event_id)
        return Response(status=status.HTTP_204_NO_CONTENT)


def _figures(event_id: int) -> dict:
    rows = waitlist_figures(event_ids=[event_id])
    if not rows:
        raise NoWaitlistError()
    return rows[0]


class WaitlistJoinApi(LeanApiView):
    permission_classes = [IsBuyer]
    lean_methods = frozenset({"post"})

    @extend_schema(
        request=s.PurchaseInputSerializer,
        responses={
            201: OpenApiResponse(WaitlistEntrySerializer, description="Joined. " + _RETRY_AFTER),
            200: OpenApiResponse(
                WaitlistEntrySerializer, description="Already on it: the same place."
            ),
            **errors(400, 401, 403, 404, 409, 503),
        },
        summary="Join the event's waitlist once it is sold out (joining again keeps the place)",
    )
    def post(self, request, event_id: int):
        quantity = s.purchase_quantity(request_json(request))  # as a purchase's
        created = waitlist_join(event_id=event_id, user_id=request.user.id, quantity=quantity)
        entry = access_waitlist_entry(event_id=event_id, user_id=request.user.id)
        return _render_entry(self, entry, status_code=201 if created else 200)


class WaitlistEntryApi(LeanApiView):
    permission_classes = [IsBuyer]
    lean_methods = frozenset({"get", "delete"})

    @extend_schema(
        responses={
            200: OpenApiResponse(WaitlistEntrySerializer, description=_RETRY_AFTER),
            **errors(401, 403, 404),
        },
        summary="Your entry on the event's waitlist (and your offer, when you have one)",
    )
    def get(self, request, event_id: int):
        return _render_entry(
            self, access_waitlist_entry(event_id=event_id, user_id=request.user.id)
        )

    @extend_schema(
        responses={200: WaitlistEntrySerializer, **errors(401, 403, 404, 503)},
        summary="Leave the waitlist (an offer you hold passes to the next entry)",
    )
    def delete(self, request, event_id: int):
        waitlist_leave(event_id=event_id, user_id=request.user.id)
        return _render_entry(
            self, access_waitlist_entry(event_id=event_id, user_id=request.user.id)
        )
