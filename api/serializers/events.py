"""Events: input, output and list queries, and the top events."""

from rest_framework import serializers

from api.serializers.fields import (
    MAX_TOTAL_TICKETS,
    StrictCharField,
    StrictIntegerField,
    no_control_characters,
)
from core.models import Event


class EventOutputSerializer(serializers.Serializer):
    # Plain (not Model) serializers for output: a ModelSerializer introspects the model
    # on every instantiation, ~150 us of each read and purchase response.
    id = serializers.IntegerField(read_only=True)
    name = serializers.CharField(read_only=True)
    description = serializers.CharField(read_only=True)
    venue = serializers.CharField(read_only=True)
    date = serializers.DateTimeField(read_only=True)
    total_tickets = serializers.IntegerField(read_only=True)
    tickets_sold = serializers.IntegerField(read_only=True)
    tickets_available = serializers.IntegerField(read_only=True)
    sale_starts_at = serializers.DateTimeField(read_only=True, allow_null=True)
    sale_ends_at = serializers.DateTimeField(read_only=True, allow_null=True)
    max_tickets_per_user = serializers.IntegerField(read_only=True, allow_null=True)
    created_at = serializers.DateTimeField(read_only=True)
    updated_at = serializers.DateTimeField(read_only=True)


class EventInputSerializer(serializers.Serializer):
    name = StrictCharField(max_length=200, validators=[no_control_characters])
    description = StrictCharField(
        max_length=5000, required=False, allow_blank=True, trim_whitespace=False
    )
    venue = StrictCharField(
        max_length=200, required=False, allow_blank=True, validators=[no_control_characters]
    )
    date = serializers.DateTimeField()
    total_tickets = StrictIntegerField(min_value=1, max_value=MAX_TOTAL_TICKETS)
    sale_starts_at = serializers.DateTimeField(required=False, allow_null=True)
    sale_ends_at = serializers.DateTimeField(required=False, allow_null=True)
    max_tickets_per_user = StrictIntegerField(
        required=False, allow_null=True, min_value=1, max_value=MAX_TOTAL_TICKETS
    )

    def validate(self, attrs):
        instance: Event | None = self.instance
        starts = attrs.get("sale_starts_at", getattr(instance, "sale_starts_at", None))
        ends = attrs.get("sale_ends_at", getattr(instance, "sale_ends_at", None))
        if starts and ends and ends <= starts:
            raise serializers.ValidationError({"sale_ends_at": ["Must be after sale_starts_at."]})
        return attrs


class EventListQuerySerializer(serializers.Serializer):
    when = serializers.ChoiceField(choices=["upcoming", "past"], required=False)
    search = serializers.CharField(max_length=200, required=False)
    ordering = serializers.ChoiceField(choices=["date", "-date"], default="date")
    page = serializers.IntegerField(min_value=1, required=False)
    page_size = serializers.IntegerField(min_value=1, max_value=100, required=False)


class TopEventsQuerySerializer(serializers.Serializer):
    limit = serializers.IntegerField(min_value=1, max_value=100, default=10)

    def validate(self, attrs):
        # DRF reads an empty query value as "absent"; `?limit=` is a mistake, say so.
        if self.initial_data.get("limit", None) == "":
            raise serializers.ValidationError({"limit": ["A valid integer is required."]})
        return attrs


class TopEventSerializer(serializers.Serializer):
    id = serializers.IntegerField(source="event_id")
    name = serializers.CharField()
    date = serializers.DateTimeField()
    tickets_sold = serializers.IntegerField()
    rank = serializers.IntegerField()


class TopEventsOutputSerializer(serializers.Serializer):
    refreshed_at = serializers.DateTimeField(allow_null=True)
    results = TopEventSerializer(many=True)
