"""Accounts and tokens: register, log in, refresh, log out."""

from django.contrib.auth import get_user_model
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework import exceptions, serializers
from rest_framework.validators import UniqueValidator
from rest_framework_simplejwt.exceptions import AuthenticationFailed, InvalidToken, TokenError
from rest_framework_simplejwt.serializers import TokenBlacklistSerializer, TokenObtainPairSerializer
from rest_framework_simplejwt.tokens import RefreshToken

from api.serializers.fields import StrictCharField, UsernameField
from api.throttles import login_failures_rate
from core.exceptions import TokenRefusedError
from core.models import User
from core.services.logins import login_attempt
from core.services.users import access_user_for_refresh


def role_claims(token, user: User) -> None:
    """Put the user's role and name in a token (at login, refresh and minting)."""
    token["role"] = user.role
    token["username"] = user.username


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
