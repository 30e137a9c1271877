"""Operations: queue and line summary, health and readiness."""

from django.db import connection
from drf_spectacular.utils import extend_schema
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from api.permissions import IsAdmin
from api.schema import errors
from core.ops import queue_summary
from core.redis_client import get_redis


class OpsQueuesApi(APIView):
    permission_classes = [IsAdmin]

    @extend_schema(
        responses={200: None, **errors(401, 403)},
        summary="Queue depths, pending orders, live workers, gate vs database (Admin)",
    )
    def get(self, request):
        return Response(queue_summary())


class HealthApi(APIView):
    permission_classes = [AllowAny]
    authentication_classes = []

    @extend_schema(responses={200: None}, summary="The process is alive")
    def get(self, request):
        return Response({"status": "ok"})


class ReadyApi(APIView):
    permission_classes = [AllowAny]
    authentication_classes = []

    @extend_schema(responses={200: None, 503: None}, summary="PostgreSQL and Redis answer")
    def get(self, request):
        checks = {"database": _check_database(), "redis": _check_redis()}
        ready = all(value == "ok" for value in checks.values())
        body = {"status": "ok" if ready else "unavailable", "checks": checks}
        if not ready:
            failing = ", ".join(name for name, value in checks.items() if value != "ok")
            body.update(code="not_ready", message=f"Not ready: {failing} unavailable.")
        return Response(body, status=200 if ready else 503)


def _check_database() -> str:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return "ok"
    except Exception as exc:  # readiness reports any failure instead of raising it
        return f"error: {type(exc).__name__}"


def _check_redis() -> str:
    try:
        get_redis().ping()
        return "ok"
    except Exception as exc:  # readiness reports any failure instead of raising it
        return f"error: {type(exc).__name__}"
