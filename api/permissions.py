"""Role checks on the token's claims (no database read)."""

from rest_framework.permissions import SAFE_METHODS, BasePermission

from core.models import User


def _role(request) -> str | None:
    user = request.user
    return getattr(user, "role", None) if user and user.is_authenticated else None


class IsAdmin(BasePermission):
    message = "Only Admins can do this."

    def has_permission(self, request, view) -> bool:
        return _role(request) == User.Role.ADMIN


class IsBuyer(BasePermission):
    message = "Only Users (buyers) can purchase tickets."

    def has_permission(self, request, view) -> bool:
        return _role(request) == User.Role.USER


class IsAdminOrReadOnly(BasePermission):
    """Any authenticated caller may read; only Admins may write."""

    message = "Only Admins can change events."

    def has_permission(self, request, view) -> bool:
        role = _role(request)
        if role is None:
            return False
        return request.method in SAFE_METHODS or role == User.Role.ADMIN
