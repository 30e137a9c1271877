"""JWT authentication that needs no database read: the hot path stays on Redis."""

import time

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


# Raw token -> (validated token, its expiry as epoch seconds), in this process. A buyer
# sends the same token with every purchase and poll; SimpleJWT's full check (base64,
# HMAC, JSON, claims) was ~0.2 ms of a ~1 ms sold-out refusal (docs/benchmarks).
# The key is the whole signed token, so only a token that passed the check once can
# hit; expiry is checked again on every hit; revocation is checked on every request.
_verified: dict[bytes, tuple[object, float]] = {}
_VERIFIED_MAX = 50_000


class JWTAuthentication(JWTStatelessUserAuthentication):
    """Trust the signed claims, but refuse tokens issued before a revocation.

    Deactivating, deleting or changing the role of a user records a revocation time
    (`core.services.users.user_tokens_revoke`); login and refresh read the database.
    Override `get_validated_token` only to change what makes a token valid: the cache
    in front of it holds tokens SimpleJWT validated, until their `exp`.
    """

    def get_validated_token(self, raw_token: bytes):
        hit = _verified.get(raw_token)
        if hit is not None and time.time() < hit[1]:
            return hit[0]
        token = super().get_validated_token(raw_token)
        if len(_verified) >= _VERIFIED_MAX:
            _verified.clear()
        _verified[raw_token] = (token, float(token["exp"]))
        return token

    def get_user(self, validated_token) -> TokenUser:
        user = super().get_user(validated_token)
        revoked_before = user_tokens_revoked_before(user_id=user.id)
        if revoked_before and int(validated_token.get("iat", 0)) < revoked_before:
            raise AuthenticationFailed("This token has been revoked.", code="token_revoked")
        return user
