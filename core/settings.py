"""Settings, read from the environment (twelve-factor; see docs/operators.md#configuration)."""

from datetime import timedelta
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

DEBUG = env.bool("DJANGO_DEBUG", default=False)
SECRET_KEY = env.str("DJANGO_SECRET_KEY", default="")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("DJANGO_SECRET_KEY must be set when DJANGO_DEBUG is off.")
    SECRET_KEY = "insecure-development-key-only-used-with-debug-on"

ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["localhost", "127.0.0.1"])
CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.postgres",
    "corsheaders",
    "rest_framework",
    "rest_framework_simplejwt.token_blacklist",
    "drf_spectacular",
    "core",
    "api",
]

MIDDLEWARE = [
    # First, so that every layer below sees the buyer's address (core/middleware.py).
    "core.middleware.ForwardedForMiddleware",
    "api.metrics.RequestMetricsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "corsheaders.middleware.CorsMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "core.middleware.AuthenticationMiddleware",
    "core.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]
# The admin's user-from-session and messages middleware run under these paths only
# (core/middleware.py).
ADMIN_PATH_PREFIXES = ("/admin/",)

ROOT_URLCONF = "core.urls"
# An API answers a missing slash with a JSON 404, not a redirect that clients would
# follow as a GET (turning a failed POST into an apparent success).
APPEND_SLASH = False
WSGI_APPLICATION = "core.wsgi.application"
AUTH_USER_MODEL = "core.User"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": env.db_url("DATABASE_URL", default="postgres://postgres@127.0.0.1:5432/ticketing")
}
# Persistent connections: a flash sale must not pay a TCP + auth handshake per request.
DATABASES["default"]["CONN_MAX_AGE"] = env.int("DATABASE_CONN_MAX_AGE", default=60)
# No `SELECT 1` before every request (CONN_HEALTH_CHECKS): it was a second round trip on
# the accept path. A connection the server closed is noticed where it matters, before
# the order INSERT (core/services/purchases.py); elsewhere the request that meets it
# answers 503 and Django drops the connection at the end of that request.
DATABASES["default"]["CONN_HEALTH_CHECKS"] = False
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# The gate, cards, throttles, revocations, locks and worker announcements all go through
# core.redis_client.get_redis. `redis+cluster://host:port` (any one node) selects Redis Cluster.
REDIS_URL = env.str("REDIS_URL", default="redis://127.0.0.1:6379/0")
REDIS_CLUSTER = REDIS_URL.split("://", 1)[0] in ("redis+cluster", "rediss+cluster")
# Django's RedisCache speaks to one Redis only. Nothing in the product reads Django's
# cache (the hot reads use core/cards.py), so on a cluster it stays in process memory
# unless CACHE_URL names a single Redis.
CACHE_URL = env.str("CACHE_URL", default="") or ("" if REDIS_CLUSTER else REDIS_URL)
if CACHE_URL.split("://", 1)[0].endswith("+cluster"):
    raise ImproperlyConfigured("CACHE_URL must name a single Redis, not a cluster.")
CACHES = {
    "default": (
        {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": CACHE_URL}
        if CACHE_URL
        else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
    )
    | {"KEY_PREFIX": "cache"}
}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# Tests may swap in a cheap hasher; production keeps Django's default (PBKDF2).
PASSWORD_HASHERS = env.list(
    "DJANGO_PASSWORD_HASHERS",
    default=[
        "django.contrib.auth.hashers.PBKDF2PasswordHasher",
        "django.contrib.auth.hashers.PBKDF2SHA1PasswordHasher",
        "django.contrib.auth.hashers.Argon2PasswordHasher",
        "django.contrib.auth.hashers.BCryptSHA256PasswordHasher",
        "django.contrib.auth.hashers.ScryptPasswordHasher",
    ],
)

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"

# --- Security (the production defaults; `manage.py check --deploy` reads these) ----
# Trust X-Forwarded-Proto (and count proxies for client addresses) only behind a proxy
# that sets it: otherwise any client could claim to be on TLS or forge its address.
TRUSTED_PROXIES = env.int("DJANGO_TRUSTED_PROXIES", default=0)
if TRUSTED_PROXIES:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# The front door's address(es) as the API sees them (deploy/haproxy/haproxy.cfg connects
# from 127.0.0.2): from these peers only, X-Forwarded-For replaces REMOTE_ADDR, which
# rate limits and logs read (core/middleware.py). Addresses or networks; empty: never.
TRUSTED_PROXY_ADDRESSES = env.list("DJANGO_TRUSTED_PROXY_ADDRESSES", default=[])
SECURE_SSL_REDIRECT = env.bool("DJANGO_SECURE_SSL_REDIRECT", default=False)
# Health probes (load balancer, container healthcheck) call the process directly over
# plain HTTP; redirecting them to https would mark a healthy API as down.
SECURE_REDIRECT_EXEMPT = [r"^health/$", r"^ready/$"]
SECURE_HSTS_SECONDS = env.int("DJANGO_SECURE_HSTS_SECONDS", default=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = SECURE_HSTS_SECONDS > 0
SECURE_HSTS_PRELOAD = SECURE_HSTS_SECONDS > 0
SESSION_COOKIE_SECURE = env.bool("DJANGO_SECURE_COOKIES", default=not DEBUG)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
DATA_UPLOAD_MAX_MEMORY_SIZE = env.int("DJANGO_MAX_BODY_BYTES", default=64 * 1024)

CORS_ALLOWED_ORIGINS = env.list("CORS_ALLOWED_ORIGINS", default=[])
CORS_EXPOSE_HEADERS = ["Location", "Retry-After"]
CORS_ALLOW_HEADERS = [
    "accept",
    "authorization",
    "content-type",
    "idempotency-key",
    "origin",
    "user-agent",
]

# --- REST framework ---------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["api.authentication.JWTAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["api.parsers.JSONParser"],
    "DEFAULT_PAGINATION_CLASS": "api.pagination.PageNumberPagination",
    "PAGE_SIZE": 20,
    "EXCEPTION_HANDLER": "api.exceptions.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_THROTTLE_RATES": {
        "purchase": env.str("THROTTLE_PURCHASE_RATE", default="600/min"),
        "login": env.str("THROTTLE_LOGIN_RATE", default="30/min"),
        # Failed logins per username, from any address (api/throttles.py).
        "login_failures": env.str("THROTTLE_LOGIN_FAILURES", default="10/15min"),
        "register": env.str("THROTTLE_REGISTER_RATE", default="60/hour"),
        # Joins and own-state reads of a waiting room per buyer, counted in the room's
        # Lua call (core/services/waiting_room.py).
        "waiting_room": env.str("THROTTLE_WAITING_ROOM_RATE", default="120/min"),
    },
    "UNAUTHENTICATED_USER": None,
    # Rate limits key on REMOTE_ADDR unless proxies are declared (X-Forwarded-For is forgeable).
    "NUM_PROXIES": TRUSTED_PROXIES,
}

SIMPLE_JWT = {
    "ACCESS_TOKEN_LIFETIME": timedelta(
        seconds=env.int("JWT_ACCESS_LIFETIME_SECONDS", default=15 * 60)
    ),
    "REFRESH_TOKEN_LIFETIME": timedelta(
        seconds=env.int("JWT_REFRESH_LIFETIME_SECONDS", default=7 * 24 * 3600)
    ),
    "ROTATE_REFRESH_TOKENS": True,
    "BLACKLIST_AFTER_ROTATION": True,
    "UPDATE_LAST_LOGIN": False,
    "ALGORITHM": "HS256",
    "SIGNING_KEY": env.str("JWT_SIGNING_KEY", default=SECRET_KEY),
    "AUTH_HEADER_TYPES": ("Bearer",),
    "TOKEN_OBTAIN_SERIALIZER": "api.serializers.TokenObtainSerializer",
    "TOKEN_BLACKLIST_SERIALIZER": "api.serializers.LogoutInputSerializer",
    "TOKEN_USER_CLASS": "api.authentication.TokenUser",
}

# The base URL the OpenAPI schema names as its server (Postman and generators use it).
API_PUBLIC_URL = env.str("API_PUBLIC_URL", default="http://127.0.0.1:8000")
SPECTACULAR_SETTINGS = {
    "TITLE": "Flash-sale ticketing API",
    "DESCRIPTION": (
        "Events, accounts and queued ticket purchases. Every error is JSON: "
        '`{"code": "...", "message": "...", "errors": {...}}`.'
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    "SCHEMA_PATH_PREFIX": "",
    "SERVERS": [{"url": API_PUBLIC_URL}],
    "ENUM_NAME_OVERRIDES": {
        "WaitingRoomStateEnum": ["waiting", "admitted", "expired", "sold_out"],
    },
}

# --- Domain -----------------------------------------------------------------------
ADMIN_SIGNUP_CODE = env.str("ADMIN_SIGNUP_CODE", default="")
PURCHASE_MAX_QUANTITY = env.int("PURCHASE_MAX_QUANTITY", default=10)
# Seconds a client is told to wait before polling a pending order again.
ORDER_POLL_SECONDS = env.int("ORDER_POLL_SECONDS", default=1)
# Orders still pending after this many seconds are handed to the workers again.
ORDER_PENDING_RETRY_SECONDS = env.int("ORDER_PENDING_RETRY_SECONDS", default=30)
# How often beat looks for such orders.
ORDER_REQUEUE_SECONDS = env.int("ORDER_REQUEUE_SECONDS", default=10)
IDEMPOTENCY_KEY_TTL_SECONDS = env.int("IDEMPOTENCY_KEY_TTL_SECONDS", default=24 * 3600)
GATE_RECONCILE_SECONDS = env.int("GATE_RECONCILE_SECONDS", default=15)
# Orders committed under one event-row lock by a drain task.
ORDER_COMMIT_BATCH_SIZE = env.int("ORDER_COMMIT_BATCH_SIZE", default=500)
# A drain runs this long after it is queued, so one batch carries the orders accepted
# meanwhile (about 40 per batch at sale rates instead of 2): far less worker CPU and
# lock traffic per order for a tenth of a second of latency.
ORDER_COMMIT_DELAY_SECONDS = env.float("ORDER_COMMIT_DELAY_SECONDS", default=0.1)
TOP_EVENTS_REFRESH_SECONDS = env.int("TOP_EVENTS_REFRESH_SECONDS", default=30)
# Lifetimes of the Redis copies the hot reads answer from (core/cards.py): how long a
# final order can read as pending, or an event's sold count lag, if a write was lost.
ORDER_PENDING_CARD_SECONDS = env.int("ORDER_PENDING_CARD_SECONDS", default=5)
ORDER_FINAL_CARD_SECONDS = env.int("ORDER_FINAL_CARD_SECONDS", default=600)
EVENT_CARD_SECONDS = env.int("EVENT_CARD_SECONDS", default=1)
# How long a process trusts its last look at a user's token revocation (seconds).
AUTH_REVOCATION_CACHE_SECONDS = env.float("AUTH_REVOCATION_CACHE_SECONDS", default=1.0)
# When set, GET /metrics requires `Authorization: Bearer <METRICS_TOKEN>`.
METRICS_TOKEN = env.str("METRICS_TOKEN", default="")
# A Celery worker on a host of its own can serve its metrics on this port (0 = off).
WORKER_METRICS_PORT = env.int("WORKER_METRICS_PORT", default=0)
WORKER_METRICS_ADDR = env.str("WORKER_METRICS_ADDR", default="127.0.0.1")
# Each worker announces itself this often; /ops/queues/ and /metrics count a worker
# alive for three periods after its last announcement (no ping from the request).
WORKER_HEARTBEAT_SECONDS = env.float("WORKER_HEARTBEAT_SECONDS", default=5.0)
# The waiting room (core/waiting_room.py): how often beat persists each room's counter
# and sets its automatic capacity = the commit rate x the lag a buyer has between being
# admitted and buying (Retry-After plus the public state's cache age), never below
# the floor.
WAITING_ROOM_PERSIST_SECONDS = env.float("WAITING_ROOM_PERSIST_SECONDS", default=2.0)
WAITING_ROOM_ADMISSION_LAG_SECONDS = env.float("WAITING_ROOM_ADMISSION_LAG_SECONDS", default=2.0)
WAITING_ROOM_MIN_CAPACITY = env.int("WAITING_ROOM_MIN_CAPACITY", default=100)
WAITING_ROOM_MAX_RETRY_AFTER = env.int("WAITING_ROOM_MAX_RETRY_AFTER", default=30)
# The waitlist (core/services/waitlists.py): how often beat ends expired offers and offers
# any returned tickets left over (rounds also run at once when tickets come back).
WAITLIST_TICK_SECONDS = env.float("WAITLIST_TICK_SECONDS", default=2.0)
# With debug on, API clients still get JSON for 404/405 (see api/debug.py); appended
# here, outside the MIDDLEWARE list, so production runs without it.
if DEBUG:
    MIDDLEWARE = [*MIDDLEWARE, "api.debug.DebugJsonErrorsMiddleware"]

# --- Celery -----------------------------------------------------------------------
# The broker: the Redis of REDIS_URL by default, or RabbitMQ (`amqp://...`). kombu has no
# Redis Cluster transport, so a cluster REDIS_URL needs a broker of its own.
# (Empty counts as unset: docker-compose passes the variable through either way.)
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="") or ("" if REDIS_CLUSTER else REDIS_URL)
if not CELERY_BROKER_URL or CELERY_BROKER_URL.split("://", 1)[0].endswith("+cluster"):
    raise ImproperlyConfigured(
        "REDIS_URL names a Redis Cluster, which cannot be Celery's broker: set "
        "CELERY_BROKER_URL to RabbitMQ (amqp://user:password@host:5672/vhost) or to a "
        "single Redis (redis://host:6379/1)."
    )
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=False)

LOG_LEVEL = env.str("LOG_LEVEL", default="INFO")
# `json`: one object per line, for log pipelines (production). `text`: one readable line
# per record with the same fields, for a terminal (the default with debug on).
LOG_FORMAT = env.str("LOG_FORMAT", default="") or ("text" if DEBUG else "json")
if LOG_FORMAT not in ("json", "text"):
    raise ImproperlyConfigured("LOG_FORMAT must be 'json' or 'text'.")
# Beat's periodic tasks say at DEBUG what they would say at INFO every few seconds
# (workers/celery.py, PeriodicTaskChatter): at INFO, a terminal shows requests, accepts
# and commits.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "json": {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": "%(asctime)s %(levelname)s %(name)s %(message)s",
            "rename_fields": {"asctime": "ts", "levelname": "level", "name": "logger"},
        },
        "text": {"()": "core.log_formats.ConsoleFormatter"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT}},
    "root": {"handlers": ["console"], "level": "WARNING"},
    "loggers": {
        "core": {"level": LOG_LEVEL, "propagate": True},
        "workers": {"level": LOG_LEVEL, "propagate": True},
        "api": {"level": LOG_LEVEL, "propagate": True},
        "django.request": {"level": "ERROR", "propagate": True},
    },
}
