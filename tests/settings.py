"""Test settings: the project's settings with test-only defaults from the environment.

Tests get their own PostgreSQL database (pytest-django's `test_` prefix) and their own
Redis database number, so a developer's running system is never touched.
"""

import os

os.environ.setdefault("DJANGO_SECRET_KEY", "test-secret-key-not-for-production-0123456789")
os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/13")
os.environ.setdefault("THROTTLE_PURCHASE_RATE", "100000/min")
os.environ.setdefault("THROTTLE_LOGIN_RATE", "100000/min")
os.environ.setdefault("THROTTLE_REGISTER_RATE", "100000/min")
os.environ.setdefault("THROTTLE_WAITING_ROOM_RATE", "100000/min")
os.environ.setdefault("DJANGO_PASSWORD_HASHERS", "django.contrib.auth.hashers.MD5PasswordHasher")
os.environ.setdefault("DJANGO_SECURE_COOKIES", "0")
# Tests revoke in one process and check in another at once; tests/api/test_tokens.py
# covers the cache itself.
os.environ.setdefault("AUTH_REVOCATION_CACHE_SECONDS", "0")

from core.settings import *  # noqa: E402,F401,F403

# Two suites on one machine (say, two checkouts) can be kept apart with these.
DATABASES["default"]["TEST"] = {"NAME": os.environ.get("TEST_DATABASE_NAME", "test_ticketing")}  # noqa: F405
