"""The waiting room's endpoints (docs/frontend.md, "The waiting room").

Join, own state and public state are hot (the whole crowd polls them), so they use the
lean base like the purchase; an Admin's PUT and DELETE run through DRF as every other
write.
"""

from __future__ import annotations

from datetime import UTC, datetime

from django.contrib.auth.models import AnonymousUser
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.settings import api_settings

from api.lean import LeanApiView
from api.permissions import IsAdmin, IsBuyer
from api.schema import errors
from api.throttles import parse_rate
from core.models import WaitingRoom
from core.services.waiting_room import (
    EntryState,
    waiting_room_close,
    waiting_room_configure,
    waiting_room_join,
    waiting_room_public,
    waiting_room_state,
)
from core.waiting_room import RoomAnswer

STATES = ["waiting", "admitted", "expired", "sold_out"]
# The crowd polls the public state; the front door caches it for this long.
PUBLIC_CACHE_CONTROL = "public, max-age=1"


def waiting_room_rate() -> tuple[int, int] | None:
    """(requests, per seconds) of joins and own-state reads per buyer, counted in the
    room's Lua call as the purchase rate is in the gate's."""
    rate = api_settings.DEFAULT_THROTTLE_RATES.get("waiting_room")
    return parse_rate(rate) if rate else None


def _iso(epoch: float | None) -> str | None:
    if not epoch:
        return None
    return datetime.fromtimestamp(epoch, tz=UTC).isoformat().replace("+00:00", "Z")


def entry_json(entry: EntryState) -> dict:
    return {
        "number": entry.number,
        "early": entry.early,
        "position": entry.position,
        "state": entry.state,
        "admitted_until": _iso(entry.admitted_until),
        "estimated_wait_seconds": entry.estimated_wait_seconds,
    }


def public_json(event_id: int, answer: RoomAnswer) -> dict:
    return {
        "event": event_id,
        "opens_at": _iso(answer.opens),
        "serving": answer.serving,
        "rate": answer.rate,
        "capacity": answer.capacity,
        "paused": answer.paused,
        "sold_out": answer.sold_out,
        "joined": answer.joined,
        "early_count": answer.early_count,
        "updated_at": _iso(answer.at),
    }


class WaitingRoomEntrySerializer(serializers.Serializer):
    """Schema only: a buyer's own state (rendered by entry_json)."""

    number = serializers.IntegerField(
        allow_null=True, help_text="Your number; null while an early joiner waits for the opening."
    )
    early = serializers.BooleanField(help_text="Joined before the opening (random place).")
    position = serializers.IntegerField(
        allow_null=True, help_text="number - serving, at least 0 (0: admitted)."
    )
    state = serializers.ChoiceField(STATES)
    admitted_until = serializers.DateTimeField(allow_null=True)
    estimated_wait_seconds = serializers.FloatField(allow_null=True)


class WaitingRoomPublicSerializer(serializers.Serializer):
    """Schema only: the public state (rendered by public_json)."""

    event = serializers.IntegerField()
    opens_at = serializers.DateTimeField(allow_null=True)
    serving = serializers.IntegerField(help_text="Every number up to this is admitted.")
    rate = serializers.IntegerField(allow_null=True, help_text="Per second; null: automatic.")
    capacity = serializers.IntegerField(help_text="Automatic: most admitted at once.")
    paused = serializers.BooleanField()
    sold_out = serializers.BooleanField(help_text="Admission has stopped: nothing is left.")
    joined = serializers.IntegerField()
    early_count = serializers.IntegerField(
        allow_null=True, help_text="Joiners before the opening; null until it."
    )
    updated_at = serializers.DateTimeField()


class WaitingRoomInputSerializer(serializers.Serializer):
    rate = serializers.IntegerField(
        min_value=1,
        max_value=100_000,
        allow_null=True,
        help_text="Buyers admitted per second; null: automatic (follows the commit rate).",
    )
    admission_seconds = serializers.IntegerField(
        min_value=10, max_value=86_400, help_text="How long an admitted buyer may buy."
    )
    paused = serializers.BooleanField(default=False)


class WaitingRoomSerializer(serializers.ModelSerializer):
    """An Admin's view of the room's settings."""

    event = serializers.IntegerField(source="event_id")

    class Meta:
        model = WaitingRoom
        fields = ["event", "rate", "admission_seconds", "paused", "capacity"]


_RETRY_AFTER = "Retry-After: seconds to the next look while waiting."


class WaitingRoomApi(LeanApiView):
    """GET: the public state (anyone, lean, cacheable). PUT/DELETE: an Admin's settings."""

    lean_methods = frozenset({"get"})
    permission_classes = [IsAdmin]

    InputSerializer = WaitingRoomInputSerializer
    OutputSerializer = WaitingRoomSerializer

    def get_permissions(self):
        return [] if self.request.method == "GET" else super().get_permissions()

    def authenticate(self, request):
        return AnonymousUser(), None  # the public state is the same for everyone

    @extend_schema(
        auth=[],
        responses={200: WaitingRoomPublicSerializer, **errors(404, 503)},
        summary="The waiting room's public state (Cache-Control: public, max-age=1)",
    )
    def get(self, request, event_id: int):
        answer = waiting_room_public(event_id=event_id)
        headers = {"Cache-Control": PUBLIC_CACHE_CONTROL}
        return self.render(public_json(event_id, answer), headers=headers)

    @extend_schema(
        request=InputSerializer,
        responses={
            200: OutputSerializer,
            201: OutputSerializer,
            **errors(400, 401, 403, 404, 503),
        },
        summary="Turn the waiting room on, re-rate, pause or resume it (Admin)",
    )
    def put(self, request, event_id: int):
        data = self._input(request)
        room, created = waiting_room_configure(event_id=event_id, **data)
        code = status.HTTP_201_CREATED if created else status.HTTP_200_OK
        return Response(self.OutputSerializer(room).data, status=code)

    @extend_schema(
        responses={204: None, **errors(401, 403, 404, 503)},
        summary="Turn the waiting room off: the event sells as without one (Admin)",
    )
    def delete(self, request, event_id: int):
        waiting_room_close(event_id=event_id)
        return Response(status=status.HTTP_204_NO_CONTENT)

    def _input(self, request) -> dict:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        return dict(serializer.validated_data)


def _entry_response(view: LeanApiView, entry: EntryState, *, status_code: int = 200):
    headers = {"Retry-After": str(entry.retry_after)} if entry.retry_after else None
    return view.render(entry_json(entry), status=status_code, headers=headers)


class WaitingRoomJoinApi(LeanApiView):
    permission_classes = [IsBuyer]
    lean_methods = frozenset({"post"})

    @extend_schema(
        request=None,
        responses={
            201: OpenApiResponse(WaitingRoomEntrySerializer, description="Joined. " + _RETRY_AFTER),
            200: OpenApiResponse(
                WaitingRoomEntrySerializer, description="Already in: the same place."
            ),
            **errors(401, 403, 404, 429, 503),
        },
        summary="Join the event's waiting room (joining again keeps the place)",
    )
    def post(self, request, event_id: int):
        entry = waiting_room_join(
            event_id=event_id, user_id=request.user.id, rate=waiting_room_rate()
        )
        return _entry_response(self, entry, status_code=201 if entry.created else 200)


class WaitingRoomEntryApi(LeanApiView):
    permission_classes = [IsBuyer]
    lean_methods = frozenset({"get"})

    @extend_schema(
        responses={
            200: OpenApiResponse(WaitingRoomEntrySerializer, description=_RETRY_AFTER),
            **errors(401, 403, 404, 429, 503),
        },
        summary="Your place in the event's waiting room",
    )
    def get(self, request, event_id: int):
        entry = waiting_room_state(
            event_id=event_id, user_id=request.user.id, rate=waiting_room_rate()
        )
        return _entry_response(self, entry)
