"""Events: list, create, read (a hot endpoint), change, delete; the top events."""

from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import APIView

from api import serializers as s
from api.lean import LeanApiView
from api.permissions import IsAdminOrReadOnly
from api.schema import errors, paginated
from api.views.common import page_response, query_params
from core import selectors
from core.services.events import event_create, event_delete, event_update


class EventListCreateApi(APIView):
    permission_classes = [IsAdminOrReadOnly]

    @extend_schema(
        operation_id="events_list",
        parameters=[s.EventListQuerySerializer],
        responses={200: paginated(s.EventOutputSerializer), **errors(400, 401, 404)},
        summary="List events (filter upcoming/past, search by name, order by date)",
    )
    def get(self, request):
        query = query_params(s.EventListQuerySerializer, request)
        events = selectors.event_list(
            when=query.get("when"), search=query.get("search"), ordering=query["ordering"]
        )
        return page_response(request, self, events, s.EventOutputSerializer)

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
        query = query_params(s.TopEventsQuerySerializer, request)
        rows, refreshed_at = selectors.top_events_list(limit=query["limit"])
        return Response(
            s.TopEventsOutputSerializer({"refreshed_at": refreshed_at, "results": rows}).data
        )
