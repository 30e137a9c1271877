"""scripts/services-up (make run, make test, CI): start what is installed, else one line."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from django.conf import settings

from tests.live import free_port

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "services-up"
BASH = shutil.which("bash")


def run(env: dict, path: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [BASH, str(SCRIPT)],
        env={**os.environ, **env, **({"PATH": path} if path else {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


def without_servers(tmp_path: Path) -> str:
    """A PATH with the script's basic tools but neither PostgreSQL's nor Redis's."""
    for tool in ("bash", "timeout", "seq", "sleep", "ls", "sort", "tail"):
        (tmp_path / tool).symlink_to(shutil.which(tool))
    return str(tmp_path)


def test_nothing_to_do_when_both_answer():
    result = run(
        {"DATABASE_URL": "postgres://postgres@127.0.0.1:5432/x", "REDIS_URL": settings.REDIS_URL}
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout == result.stderr == ""


def test_postgres_not_installed_is_one_line_naming_the_commands(tmp_path):
    result = run(
        {"DATABASE_URL": f"postgres://postgres@127.0.0.1:{free_port()}/x"},
        without_servers(tmp_path),
    )

    assert result.returncode == 1
    (line,) = result.stderr.splitlines()
    assert "PostgreSQL is not installed" in line
    assert "apt-get install postgresql" in line and "docker compose up" in line


def test_redis_not_installed_is_one_line_naming_the_commands(tmp_path):
    result = run({"REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}, without_servers(tmp_path))

    assert result.returncode == 1
    (line,) = result.stderr.splitlines()
    assert "Redis is not installed" in line and "apt-get install redis-server" in line


def test_a_server_on_another_host_is_not_started_here():
    # 127.0.0.2 is loopback, but not this machine's address as the URL names it.
    result = run({"DATABASE_URL": f"postgres://postgres@127.0.0.2:{free_port()}/x"})

    assert result.returncode == 1
    (line,) = result.stderr.splitlines()
    assert "does not answer (DATABASE_URL)" in line and "docker compose up" in line


@pytest.mark.skipif(not shutil.which("redis-server"), reason="redis-server is not installed")
def test_a_stopped_local_redis_is_started(tmp_path):
    port = free_port()
    result = run({"REDIS_URL": f"redis://127.0.0.1:{port}/0", "TMPDIR": str(tmp_path)})
    try:
        assert result.returncode == 0, result.stderr
        assert f"starting Redis on port {port}" in result.stderr
        ping = subprocess.run(
            ["redis-cli", "-p", str(port), "ping"], capture_output=True, text=True
        )
        assert ping.stdout.strip() == "PONG"
    finally:
        subprocess.run(["redis-cli", "-p", str(port), "shutdown", "nosave"], capture_output=True)
