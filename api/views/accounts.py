"""Accounts and tokens: register, log in, refresh, log out."""

from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView
from rest_framework_simplejwt.views import TokenBlacklistView, TokenObtainPairView, TokenViewBase

from api import serializers as s
from api.schema import errors
from api.throttles import LoginRateThrottle, RegisterRateThrottle
from api.views.common import is_admin
from core.services.users import user_register


class RegisterApi(APIView):
    permission_classes = [AllowAny]
    throttle_classes = [RegisterRateThrottle]

    @extend_schema(
        request=s.RegisterInputSerializer,
        responses={201: s.UserOutputSerializer, **errors(400, 401, 403, 429)},
        summary="Create an account (an Admin needs an Admin caller or the signup code)",
    )
    def post(self, request):
        data = request.data
        serializer = s.RegisterInputSerializer(data=data)
        serializer.is_valid(raise_exception=True)
        user = user_register(
            username=serializer.validated_data["username"],
            password=serializer.validated_data["password"],
            role=serializer.validated_data["role"],
            admin_code=serializer.validated_data.get("admin_code"),
            by_admin=is_admin(request),
        )
        return Response(s.UserOutputSerializer(user).data, status=status.HTTP_201_CREATED)


class LoginApi(TokenObtainPairView):
    throttle_classes = [LoginRateThrottle]

    @extend_schema(
        responses={200: s.TokenPairOutputSerializer, **errors(400, 401, 429)},
        summary="Exchange username and password for an access and a refresh token",
    )
    def post(self, request, *args, **kwargs):
        return super().post(request, *args, **kwargs)


class TokenRefreshApi(TokenViewBase):
    serializer_class = s.TokenRefreshSerializer

    @extend_schema(
        responses={200: s.TokenPairOutputSerializer, **errors(400, 401)},
        summary="Rotate a refresh token (the old one is blacklisted)",
    )
    def post(self, request, *args, **kwargs):
        return super().post(request, *args, **kwargs)


class LogoutApi(TokenBlacklistView):
    @extend_schema(
        request=s.LogoutInputSerializer,
        responses={200: None, **errors(400, 401)},
        summary="Blacklist a refresh token",
    )
    def post(self, request, *args, **kwargs):
        return super().post(request, *args, **kwargs)
