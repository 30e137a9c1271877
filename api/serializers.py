"""Shapes of the API's input and output. Validation of form only; rules live in core."""

import re

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework import exceptions, serializers
from rest_framework.validators import UniqueValidator
from rest_framework_simplejwt.exceptions import AuthenticationFailed, InvalidToken, TokenError
from rest_framework_simplejwt.serializers import TokenBlacklistSerializer, TokenObtainPairSerializer
from rest_framework_simplejwt.tokens import RefreshToken

from api.throttles import login_failures_rate
from core.exceptions import TokenRefusedError
from core.models import Event, Order, User
from core.services.logins import login_attempt
from core.services.users import access_user_for_refresh

MAX_TOTAL_TICKETS = 1_000_000
# Every C0/C1 control character, tab and newline included: names and venues are one line.
# So are the Unicode line and paragraph separators, and the bidirectional overrides and
# isolates, which make a name display as something else ("Trojan Source" spoofing).
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


class StrictIntegerField(serializers.IntegerField):
    """An integer that must arrive as a JSON integer: no strings, floats or booleans."""

    default_error_messages = {"invalid": "A JSON integer is required."}

    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictCharField(serializers.CharField):
    """A string that must arrive as a JSON string: no numbers coerced into text."""

    default_error_messages = {"invalid": "A JSON string is required."}

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class UsernameField(StrictCharField):
    """A username, NFKC-normalized as Django's own forms do.

    Without it "ａｄｍｉｎ" (fullwidth) would be an account of its own beside "admin".
    """

    def to_internal_value(self, data):
        return User.normalize_username(super().to_internal_value(data))


def no_control_characters(value: str) -> None:
    if _CONTROL_CHARS.search(value):
        raise serializers.ValidationError("Control characters are not allowed.")


def role_claims(token, user: User) -> None:
    token["role"] = user.role
    token["username"] = user.username


# --- Accounts ----------------------------------------------------------------------


class RegisterInputSerializer(serializers.Serializer):
    username = UsernameField(
        max_length=150,
        validators=[
            get_user_model().username_validator,
            # Case-insensitive: "Admin" or "ALICE" must not pass for an existing "admin"
            # or "alice". (Login stays exact, as Django's backend is.)
            UniqueValidator(
                queryset=User.objects.all(),
                lookup="iexact",
                message="A user with that username already exists.",
            ),
        ],
    )
    password = StrictCharField(write_only=True, max_length=128, trim_whitespace=False)
    role = serializers.ChoiceField(choices=User.Role.choices, default=User.Role.USER)
    admin_code = StrictCharField(write_only=True, required=False, allow_blank=True, max_length=128)

    def validate(self, attrs):
        try:
            validate_password(attrs["password"], User(username=attrs["username"]))
        except DjangoValidationError as exc:
            raise serializers.ValidationError({"password": exc.messages}) from None
        return attrs


class UserOutputSerializer(serializers.ModelSerializer):
    class Meta:
        model = User
        fields = ["id", "username", "role"]


class TokenObtainSerializer(TokenObtainPairSerializer):
    """Login: the access token carries the caller's role."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # The password exactly as registered (simplejwt's field strips surrounding spaces,
        # which locked out whoever chose them); the username normalized as at registration.
        self.fields[self.username_field] = UsernameField(write_only=True)
        self.fields["password"] = StrictCharField(
            write_only=True, trim_whitespace=False, style={"input_type": "password"}
        )

    def validate(self, attrs):
        username = attrs[self.username_field]
        with login_attempt(username=username, rate=login_failures_rate()) as attempt:
            try:
                return super().validate(attrs)
            except exceptions.AuthenticationFailed:
                attempt.reject()  # a wrong password or an unknown user
                raise

    @classmethod
    def get_token(cls, user):
        token = super().get_token(user)
        role_claims(token, user)
        return token


class TokenRefreshSerializer(serializers.Serializer):
    """Rotate a refresh token; the new access token carries the user's current role."""

    refresh = StrictCharField()
    access = serializers.CharField(read_only=True)

    def validate(self, attrs):
        try:
            refresh = RefreshToken(attrs["refresh"])
        except TokenError as exc:
            raise InvalidToken(exc.args[0]) from None
        try:
            user = access_user_for_refresh(
                user_id=refresh.get("user_id"), issued_at=int(refresh.get("iat", 0))
            )
        except TokenRefusedError as exc:
            # Raised as simplejwt's own failures are, so the 401 carries its challenge.
            raise AuthenticationFailed(exc.message, code=exc.code) from None
        # Only the request that blacklists the token rotates it: concurrent reuses of one
        # refresh token (a stolen copy racing the owner) get no second token pair.
        _, created = refresh.blacklist()
        if not created:
            raise InvalidToken("Token is blacklisted")
        new_refresh = RefreshToken.for_user(user)
        role_claims(new_refresh, user)
        return {"access": str(new_refresh.access_token), "refresh": str(new_refresh)}


class TokenPairOutputSerializer(serializers.Serializer):
    access = serializers.CharField()
    refresh = serializers.CharField()


class LogoutInputSerializer(TokenBlacklistSerializer):
    """Logout: the refresh token to blacklist."""

    # simplejwt's view uses it through SIMPLE_JWT["TOKEN_BLACKLIST_SERIALIZER"].
    refresh = StrictCharField(write_only=True)


# --- Events ------------------------------------------------------------------------


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


# --- Purchases and orders ------------------------------------------------------------


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
