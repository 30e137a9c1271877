"""JWT authentication that needs no database read: the hot path stays on Redis."""
from rest_framework_simplejwt.authentication import JWTStatelessUserAuthentication
from rest_framework_simplejwt.exceptions import AuthenticationFailed
from rest_framework_simplejwt.models import TokenUser as BaseTokenUser

from core.models import User
from core.services.users import user_tokens_revoked_before


class TokenUser(BaseTokenUser):
    """The caller, as the (signed) access token describes them."""

    @property
    def id(self) -> int:  # type: ignore[override]
        return int(self.token["user_id"])

    @property
    def pk(self) -> int:  # type: ignore[override]
        return self.id

    @property
    def role(self) -> str:
        return self.token.get("role", User.Role.USER)

    @property
    def is_admin(self) -> bool:
        return self.role == User.Role.ADMIN

    @property
    def is_staff(self) -> bool:  # type: ignore[override]
        return self.is_admin


class JWTAuthentication(JWTStatelessUserAuthentication):
    """Trust the signed claims, but refuse tokens issued before a revocation.

    Deactivating, deleting or changing the role of a user records a revocation time
    (`core.services.users.user_tokens_revoke`); login and refresh read the database.
    """

    def get_user(self, validated_token) -> TokenUser:
        user = super().get_user(validated_token)
        revoked_before = user_tokens_revoked_before(user_id=user.id)
        if revoked_before and int(validated_token.get("iat", 0)) < revoked_before:
            raise AuthenticationFailed("This token has been revoked.", code="token_revoked")
        return user
