"""OWASP API8 (security misconfiguration): production settings, headers, cookies, secrets.

`manage.py check --deploy` runs on `core.settings` in a process of its own with the
environment of a production deployment; a live API server with those settings shows the
headers and cookies a client behind the TLS proxy really gets; and no tracked file
carries a secret.
"""

import hashlib
import json
import re
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from tests.live import LiveStack

pytestmark = [pytest.mark.security]

ROOT = Path(__file__).resolve().parents[2]
HOST = "api.example.com"


def production_env(**overrides: str) -> dict[str, str]:
    """A production deployment's environment, and nothing from the test process."""
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "DJANGO_SETTINGS_MODULE": "core.settings",
        "DJANGO_DEBUG": "0",
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(64),  # 86 characters
        "DJANGO_SECURE_SSL_REDIRECT": "1",
        "DJANGO_SECURE_HSTS_SECONDS": "31536000",
        "DJANGO_TRUSTED_PROXIES": "1",
        "DJANGO_ALLOWED_HOSTS": HOST,
    }
    env.update(overrides)
    return {k: v for k, v in env.items() if v is not None}


def manage(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def settings_in(env: dict[str, str], *names: str) -> dict:
    code = (
        "import json, django; django.setup(); from django.conf import settings as s; "
        f"print(json.dumps({{n: getattr(s, n, None) for n in {list(names)!r}}}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


# --- manage.py check --deploy ------------------------------------------------------


def test_check_deploy_is_clean_with_production_settings():
    result = manage("check", "--deploy", "--fail-level", "WARNING", env=production_env())

    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


@pytest.mark.parametrize(
    "overrides, warning",
    [
        ({"DJANGO_SECURE_HSTS_SECONDS": None}, "security.W004"),
        ({"DJANGO_SECURE_SSL_REDIRECT": None}, "security.W008"),
        ({"DJANGO_SECRET_KEY": "short" * 3}, "security.W009"),
        ({"DJANGO_SECURE_COOKIES": "0"}, "security.W012"),
        ({"DJANGO_DEBUG": "1"}, "security.W018"),
    ],
)
def test_check_deploy_fails_a_deployment_that_drops_a_protection(overrides, warning):
    # The clean run above means something only if the check does catch a gap.
    result = manage("check", "--deploy", "--fail-level", "WARNING", env=production_env(**overrides))

    assert result.returncode != 0
    assert warning in result.stdout + result.stderr


def test_without_a_secret_key_production_refuses_to_start():
    result = manage("check", env=production_env(DJANGO_SECRET_KEY=None))

    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY must be set" in result.stderr


SECURITY_SETTINGS = (
    "DEBUG",
    "SESSION_COOKIE_SECURE",
    "CSRF_COOKIE_SECURE",
    "SESSION_COOKIE_HTTPONLY",
    "SECURE_SSL_REDIRECT",
    "SECURE_HSTS_SECONDS",
    "SECURE_HSTS_INCLUDE_SUBDOMAINS",
    "SECURE_PROXY_SSL_HEADER",
    "SECURE_CONTENT_TYPE_NOSNIFF",
    "SECURE_REFERRER_POLICY",
    "X_FRAME_OPTIONS",
)


def test_production_settings_send_cookies_over_tls_only():
    values = settings_in(production_env(), *SECURITY_SETTINGS)

    assert values == {
        "DEBUG": False,
        "SESSION_COOKIE_SECURE": True,
        "CSRF_COOKIE_SECURE": True,
        "SESSION_COOKIE_HTTPONLY": True,
        "SECURE_SSL_REDIRECT": True,
        "SECURE_HSTS_SECONDS": 31536000,
        "SECURE_HSTS_INCLUDE_SUBDOMAINS": True,
        "SECURE_PROXY_SSL_HEADER": ["HTTP_X_FORWARDED_PROTO", "https"],
        "SECURE_CONTENT_TYPE_NOSNIFF": True,
        "SECURE_REFERRER_POLICY": "same-origin",
        "X_FRAME_OPTIONS": "DENY",
    }


def test_cookies_are_secure_even_when_only_the_secret_key_is_set():
    # The defaults, not the TLS variables, make cookies Secure once debug is off.
    env = production_env(
        DJANGO_SECURE_SSL_REDIRECT=None,
        DJANGO_SECURE_HSTS_SECONDS=None,
        DJANGO_TRUSTED_PROXIES=None,
    )

    values = settings_in(
        env, "SESSION_COOKIE_SECURE", "CSRF_COOKIE_SECURE", "SECURE_PROXY_SSL_HEADER"
    )

    assert values == {
        "SESSION_COOKIE_SECURE": True,
        "CSRF_COOKIE_SECURE": True,
        "SECURE_PROXY_SSL_HEADER": None,
    }


def test_local_settings_stay_usable_over_plain_http():
    # `make run` sets DJANGO_DEBUG=1 and nothing else.
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "DJANGO_SETTINGS_MODULE": "core.settings",
        "DJANGO_DEBUG": "1",
    }

    values = settings_in(
        env, "DEBUG", "SESSION_COOKIE_SECURE", "SECURE_SSL_REDIRECT", "SECURE_HSTS_SECONDS"
    )

    assert values == {
        "DEBUG": True,
        "SESSION_COOKIE_SECURE": False,
        "SECURE_SSL_REDIRECT": False,
        "SECURE_HSTS_SECONDS": 0,
    }


# --- Headers and cookies from a live production server -----------------------------


@pytest.fixture
def production_api(transactional_db, tmp_path):
    """The API server on `core.settings` with the production environment, behind a 'proxy'."""
    stacks = []

    def start(**overrides: str) -> LiveStack:
        env = {k: v for k, v in production_env(**overrides).items() if k not in ("PATH", "LANG")}
        # granian passes X-Forwarded-Proto through untouched: what is observed is the
        # Django settings' decision alone.
        env.update(DJANGO_ALLOWED_HOSTS=f"{HOST},127.0.0.1")
        live = LiveStack(tmp_path / str(len(stacks)), env=env)
        for name in ("DJANGO_SECURE_COOKIES", "DJANGO_PASSWORD_HASHERS"):  # tests/settings.py's
            live.env.pop(name, None)
        live.log_dir.mkdir()
        stacks.append(live)
        live.start_api(workers=1)
        return live

    yield start
    for live in stacks:
        live.stop_all()


def get(live: LiveStack, path: str, *, tls: bool) -> requests.Response:
    headers = {"Host": HOST}
    if tls:
        headers["X-Forwarded-Proto"] = "https"  # as the TLS-terminating proxy sets it
    return requests.get(live.base_url + path, headers=headers, timeout=10, allow_redirects=False)


@pytest.mark.live
@pytest.mark.django_db(transaction=True)
def test_every_answer_behind_tls_carries_the_security_headers(production_api):
    live = production_api()

    answers = {
        path: get(live, path, tls=True)
        for path in ("/health/", "/events/", "/nope/", "/schema/", "/docs/")
    }

    assert {path: r.status_code for path, r in answers.items()} == {
        "/health/": 200,
        "/events/": 401,
        "/nope/": 404,
        "/schema/": 200,
        "/docs/": 200,
    }
    assert answers["/events/"].json()["code"] == "not_authenticated"
    assert answers["/nope/"].json()["code"] == "not_found"
    for path, response in answers.items():
        headers = response.headers
        assert (
            headers["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains; preload"
        ), path
        assert headers["X-Content-Type-Options"] == "nosniff", path
        assert headers["X-Frame-Options"] == "DENY", path
        assert headers["Referrer-Policy"] == "same-origin", path
        if path != "/docs/":  # Swagger UI's OAuth2 pop-up needs "unsafe-none" (drf-spectacular)
            assert headers["Cross-Origin-Opener-Policy"] == "same-origin", path
        assert "Server" not in headers or "Django" not in headers["Server"], path


@pytest.mark.live
@pytest.mark.django_db(transaction=True)
def test_plain_http_is_redirected_to_tls_without_hsts(production_api):
    live = production_api()

    response = get(live, "/events/?when=upcoming", tls=False)

    assert response.status_code == 301
    assert response.headers["Location"] == f"https://{HOST}/events/?when=upcoming"
    assert "Strict-Transport-Security" not in response.headers  # HSTS is only sent over TLS


@pytest.mark.live
@pytest.mark.django_db(transaction=True)
def test_health_probes_are_answered_over_plain_http(production_api):
    live = production_api()

    # A load balancer or container healthcheck calls the process directly, without TLS.
    answers = [get(live, path, tls=False) for path in ("/health/", "/ready/")]

    assert [r.status_code for r in answers] == [200, 200]
    assert all(r.headers["X-Content-Type-Options"] == "nosniff" for r in answers)


@pytest.mark.live
@pytest.mark.django_db(transaction=True)
def test_a_forwarded_proto_header_is_not_believed_without_a_trusted_proxy(production_api):
    live = production_api(DJANGO_TRUSTED_PROXIES="0")

    response = get(live, "/events/", tls=True)

    # Any client could send the header: with no proxy declared it proves nothing.
    assert response.status_code == 301
    assert response.headers["Location"] == f"https://{HOST}/events/"
    assert "Strict-Transport-Security" not in response.headers


@pytest.mark.live
@pytest.mark.django_db(transaction=True)
def test_cookies_set_in_production_are_secure(production_api):
    live = production_api()

    response = get(live, "/admin/login/", tls=True)  # the only page that sets a cookie

    assert response.status_code == 200
    cookies = response.headers["Set-Cookie"]
    assert "csrftoken=" in cookies
    assert re.search(r"csrftoken=[^,]*;\s*.*Secure", cookies, re.IGNORECASE), cookies
    assert "SameSite=Lax" in cookies


# --- No secret in the repository -----------------------------------------------------

PATTERNS = {
    "private key": r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----",
    "AWS access key id": r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA)[0-9A-Z]{16}\b",
    "AWS secret access key": r"(?i)aws.{0,20}secret.{0,20}[\"'=:\s]\s*[A-Za-z0-9/+=]{40}\b",
    "GitHub token": r"\bgh[pousr]_[A-Za-z0-9]{36,}\b",
    "Slack token": r"\bxox[abprs]-[A-Za-z0-9-]{10,}",
    "Google API key": r"\bAIza[0-9A-Za-z_-]{35}\b",
    "JSON web token": r"\beyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}",
    "long hex secret": r"\b[0-9a-fA-F]{32,}\b",
    # `SECRET_KEY = "..."`, `"password": "..."`, `setdefault("X_TOKEN", "...")`, ...
    "literal secret": r"(?i)\b\w*(?:secret|signing_key|password|passwd|api_key|token|admin_code)"
    r"\w*[\"']?\s*(?:[:=]|,)\s*[\"']([^\s\"']{8,})[\"']",
    # docker-compose defaults: `DJANGO_SECRET_KEY: ${DJANGO_SECRET_KEY:-...}`
    "compose default secret": r"(?i)\b\w*(?:secret|password|token|admin_code)\w*:\s*"
    r"\$\{\w+:-([^}]{8,})\}",
}
# Values that look like secrets and are not, each for a stated reason.
ALLOWED = {
    # docker-compose.yml: the documented, public placeholder for local `docker compose up`;
    # any real deployment sets DJANGO_SECRET_KEY (README, docs/security.md).
    "django-insecure-compose-placeholder-public-set-DJANGO_SECRET_KEY-before-any-real-use",
    # core/settings.py: used only when DJANGO_DEBUG=1 and no key is given.
    "insecure-development-key-only-used-with-debug-on",
    # tests/settings.py: the test suite's key.
    "test-secret-key-not-for-production-0123456789",
    # loadtests/: the benchmark's throwaway stack (its own database) and its buyers.
    "bench-secret-key-not-for-production-0123456789abcdef",
    "loadtest-password-7f3a",
    # The test users' password, also the README's example.
    "correct-horse-battery",
    # Test data: admin signup codes, a weak and a wrong password.
    "let-me-in",
    "let-me-out",
    "alice-alice",
    "not-the-password",
}
# Not secrets whatever their name: dotted import paths and snake_case identifiers.
NOT_A_VALUE = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+|[a-z_]+")


def tracked_files() -> list[Path]:
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True)
    return [ROOT / name for name in listed.stdout.decode().split("\0") if name]


def secrets_in(path: Path, root: Path = ROOT) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, FileNotFoundError, IsADirectoryError):
        return []  # binary, or deleted in the work tree
    found = []
    for kind, pattern in PATTERNS.items():
        for match in re.finditer(pattern, text):
            value = match.group(match.lastindex or 0)
            if value in ALLOWED or NOT_A_VALUE.fullmatch(value):
                continue
            line = text.count("\n", 0, match.start()) + 1
            found.append(f"{path.relative_to(root)}:{line}: {kind}: {value[:12]}...")
    return found


def test_no_tracked_file_holds_a_secret():
    files = tracked_files()

    found = [hit for path in files for hit in secrets_in(path)]

    assert len(files) > 50  # the listing worked
    assert not found, "\n".join(found)


def test_the_secret_scan_would_catch_each_kind_of_secret(tmp_path):
    # The clean scan above means something only if the patterns match real secrets.
    # (Assembled at run time, so that this file itself holds none of them.)
    value = "k3y-th4t-1s-r3al-and-l0ng"
    planted = {
        "key.pem": "-----BEGIN RSA " + "PRIVATE KEY-----\nMIIEow\n",
        "aws.env": "AWS_ACCESS_KEY_ID=" + "AKIA" + "IOSFODNN7EXAMPLE\n",
        "aws.ini": "aws_secret_access_key = " + "wJalrXUtnFEMI/K7MDENG/" + "bPxRfiCYEXAMPLEKEY\n",
        "settings.py": f'SECRET_KEY = "{value}"\n',
        "compose.yml": "DJANGO_SECRET_KEY: ${DJANGO_SECRET_KEY" + f":-{value}}}\n",
        "hex.txt": f"signing: {hashlib.sha256(value.encode()).hexdigest()}\n",
        "token.txt": "ghp_" + "a1B2" * 9 + "\n",
    }
    for name, text in planted.items():
        (tmp_path / name).write_text(text)

    caught = {name for name in planted if secrets_in(tmp_path / name, root=tmp_path)}

    assert caught == planted.keys()


def test_no_environment_file_is_tracked():
    names = {path.name for path in tracked_files()}

    assert not names & {".env", ".env.local", ".env.production"}
    assert ".env" in (ROOT / ".gitignore").read_text().split()
