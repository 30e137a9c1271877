"""Purchases and orders, and the one error shape."""

from django.conf import settings
from rest_framework import serializers

from api.serializers.fields import StrictIntegerField
from core.models import Order


def purchase_quantity(data) -> int:
    """Return the `quantity` of a purchase body, or raise ValidationError as DRF words it.

    The purchase view is lean (api/lean.py) and validates with this function alone;
    PurchaseInputSerializer documents the same body in the schema and delegates here.
    """
    if not isinstance(data, dict):
        raise serializers.ValidationError(
            {
                "non_field_errors": [
                    f"Invalid data. Expected a dictionary, but got {type(data).__name__}."
                ]
            }
        )
    if "quantity" not in data:
        raise serializers.ValidationError({"quantity": ["This field is required."]})
    value = data["quantity"]
    if value is None:
        raise serializers.ValidationError({"quantity": ["This field may not be null."]})
    if isinstance(value, bool) or not isinstance(value, int):
        raise serializers.ValidationError({"quantity": ["A JSON integer is required."]})
    limit = settings.PURCHASE_MAX_QUANTITY
    if value < 1:
        raise serializers.ValidationError({"quantity": ["Must be at least 1."]})
    if value > limit:
        raise serializers.ValidationError({"quantity": [f"Must be at most {limit} per order."]})
    return value


class PurchaseInputSerializer(serializers.Serializer):
    quantity = StrictIntegerField(
        min_value=1, help_text="Tickets to buy, 1 to PURCHASE_MAX_QUANTITY."
    )

    def to_internal_value(self, data):
        return {"quantity": purchase_quantity(data)}


class OrderOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField(read_only=True)
    status = serializers.ChoiceField(choices=Order.Status.choices, read_only=True)
    event = serializers.IntegerField(source="event_id", read_only=True)
    quantity = serializers.IntegerField(read_only=True)
    reason = serializers.CharField(read_only=True)
    created_at = serializers.DateTimeField(read_only=True)
    updated_at = serializers.DateTimeField(read_only=True)
    finalized_at = serializers.DateTimeField(read_only=True, allow_null=True)
    # Present only while the order is pending, in the 202 of the purchase and in
    # GET /orders/<id>/ (README, "Your place in line"). The hot paths render them from
    # the line (core/line.py); here they come from instance attributes of the same
    # names, so the other views, which do not set them, leave them out.
    # Not read_only=True, which drf-spectacular lists as always present (required);
    # this serializer only ever renders, and the descriptions say read-only.
    position = serializers.IntegerField(
        required=False,
        allow_null=True,
        min_value=0,
        help_text="Read-only, only while pending: orders of this event ahead of this one, "
        "not yet final. null when it cannot be counted at this moment (poll again).",
    )
    estimated_wait_seconds = serializers.FloatField(
        required=False,
        allow_null=True,
        help_text="Read-only, only while pending: seconds until the order is expected to be "
        "final, from the event's measured commit rate; Retry-After is this, rounded up, "
        "within 1..10. null when the position is.",
    )

    def to_representation(self, instance):
        data = super().to_representation(instance)
        if instance.status != Order.Status.PENDING or not hasattr(instance, "position"):
            data.pop("position", None)
            data.pop("estimated_wait_seconds", None)
        return data


class OrderListQuerySerializer(serializers.Serializer):
    event = serializers.IntegerField(min_value=1, required=False)
    status = serializers.ChoiceField(choices=Order.Status.choices, required=False)
    page = serializers.IntegerField(min_value=1, required=False)
    page_size = serializers.IntegerField(min_value=1, max_value=100, required=False)


class ErrorSerializer(serializers.Serializer):
    """The one error shape (documented in the schema for every error response)."""

    code = serializers.CharField()
    message = serializers.CharField()
    errors = serializers.DictField(required=False)
    position = serializers.IntegerField(
        required=False,
        allow_null=True,
        help_text="`not_admitted_yet` only: numbers still ahead in the waiting room "
        "(null when not known yet).",
    )
