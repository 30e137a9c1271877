"""deploy/haproxy/haproxy.cfg passes HAProxy's own check as each way of running it sets it,
and its exporter serves what the dashboard and the alert rules read."""

from __future__ import annotations

import re
import subprocess

import requests
import yaml

from tests.deploy.test_compose import SERVICES, dashboard_metrics
from tests.live import Stack, free_port

from .door import CONFIG, HAPROXY, ROOT, needs_haproxy, start_door

pytestmark = needs_haproxy


def check(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [HAPROXY, "-c", "-f", str(CONFIG)],
        env={"PATH": "/usr/sbin:/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=30,
    )


def problems(checked: subprocess.CompletedProcess) -> list[str]:
    return [
        line for line in checked.stderr.splitlines() if "[WARNING]" in line or "[ALERT]" in line
    ]


def test_haproxy_accepts_the_config_with_its_defaults_as_make_run_starts_it():
    checked = check({"HAPROXY_API_ADDRESS": "127.0.0.1:8001"})

    assert checked.returncode == 0, checked.stderr
    assert problems(checked) == []


def test_haproxy_accepts_the_config_as_the_tests_and_the_benchmark_start_it():
    checked = check(
        {
            "HAPROXY_BIND": f"127.0.0.1:{free_port()}",
            "HAPROXY_API_ADDRESS": f"127.0.0.1:{free_port()}",
            "HAPROXY_METRICS_BIND": f"127.0.0.1:{free_port()}",
            "HAPROXY_API_MAXCONN": "2",
            "HAPROXY_QUEUE_TIMEOUT": "500ms",
        }
    )

    assert checked.returncode == 0, checked.stderr
    assert problems(checked) == []


def test_haproxy_accepts_the_config_as_docker_compose_starts_it():
    # Compose's own `${NAME:-default}` is resolved to its default, as with no .env.
    env = {
        name: re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", str(value))
        for name, value in SERVICES["proxy"]["environment"].items()
    }

    checked = check(env)

    assert checked.returncode == 0, checked.stderr
    # Only the compose service name is unknown outside compose's network.
    assert all("could not resolve address 'api'" in line for line in problems(checked))


def test_the_procfile_runs_this_config_in_the_foreground():
    procfile = dict(
        line.split(":", 1) for line in (ROOT / "Procfile").read_text().splitlines() if line
    )

    assert "-db -f deploy/haproxy/haproxy.cfg" in procfile["proxy"]
    assert SERVICES["proxy"]["command"][-2:] == ["-f", "/usr/local/etc/haproxy/haproxy.cfg"]


def test_the_exporter_serves_every_metric_the_dashboard_and_the_alerts_read(tmp_path):
    group = Stack({"PATH": "/usr/sbin:/usr/bin:/bin"}, tmp_path)
    try:
        door = start_door(group, api_address=f"127.0.0.1:{free_port()}")
        served = set(
            re.findall(r"^# TYPE (\w+) ", requests.get(door.metrics_url, timeout=5).text, re.M)
        )
    finally:
        group.stop_all()
    alerts = yaml.safe_load((ROOT / "deploy/prometheus/alerts.yml").read_text())
    read = {
        name
        for group_ in alerts["groups"]
        for rule in group_["rules"]
        for name in re.findall(r"\b(haproxy_\w+)", rule["expr"])
    }
    panels = dashboard_metrics(lambda title: title.startswith("Front door"))

    assert len(panels) >= 3 and read
    for title, names in panels.items():
        assert names and names <= served, (title, names - served)
    assert read <= served, read - served


def make_run(**variables: str) -> str:
    """The commands `make run` would run (a dry run: nothing is started)."""
    args = [f"{name}={value}" for name, value in variables.items()]
    done = subprocess.run(
        ["make", "-n", "run", *args], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_make_run_puts_the_api_behind_the_door_where_the_config_expects_it():
    commands = make_run(HAPROXY=HAPROXY)
    config = CONFIG.read_text()

    assert "honcho start -f Procfile\n" in commands  # every line, proxy: included
    api = re.search(r"\bAPI_BIND=(\S+)", commands).group(1)
    assert f"HAPROXY_API_ADDRESS={api}" in commands
    assert f'"${{HAPROXY_API_ADDRESS-{api}}}"' in config
    trusted = re.search(r"DJANGO_TRUSTED_PROXY_ADDRESSES=(\S+)", commands).group(1)
    assert f'source "${{HAPROXY_API_SOURCE-{trusted}}}"' in config
    assert '"${HAPROXY_BIND-127.0.0.1:8000}"' in config  # the README's address


def test_without_haproxy_make_run_says_how_to_get_it_and_serves_the_api_itself():
    commands = make_run(HAPROXY="")

    assert "scripts/system-packages" in commands
    assert "honcho start -f Procfile api worker beat" in commands
    assert "API_BIND" not in commands  # core.serve's own default, 127.0.0.1:8000
