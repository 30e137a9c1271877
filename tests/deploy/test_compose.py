"""docker-compose.yml: every service, port, volume, profile and file it names makes sense.

There is no Docker engine where the tests run, so the file is read with PyYAML (which
resolves its anchors and `<<` merges as Compose does); where the docker CLI has Compose,
`docker compose config` validates it too.
"""

import ipaddress
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
MONITORING = {"prometheus", "grafana"}
# Optional services and the profile that starts each.
PROFILES = {"prometheus": "monitoring", "grafana": "monitoring", "rabbitmq": "rabbitmq"}


def mounts(service: dict) -> list[tuple[str, str]]:
    return [tuple(volume.split(":")[:2]) for volume in service.get("volumes", [])]


def published(service: dict) -> list[tuple[str, int, int]]:
    """(host address, host port, container port) of each `ports` entry."""
    rows = []
    for entry in service.get("ports", []):
        parts = str(entry).split(":")
        address = parts[0] if len(parts) == 3 else "0.0.0.0"
        rows.append((address, int(parts[-2]), int(parts[-1])))
    return rows


def container_ports(name: str) -> set[int]:
    service = SERVICES[name]
    return {int(p) for p in service.get("expose", [])} | {row[2] for row in published(service)}


def test_every_service_has_an_image_and_its_build_context_exists():
    for name, service in SERVICES.items():
        assert service.get("image") or service.get("build"), name
        if "build" in service:
            assert (ROOT / service["build"]["context"] / "Dockerfile").is_file(), name


def test_dependencies_name_services_of_the_same_file_with_valid_conditions():
    conditions = {"service_started", "service_healthy", "service_completed_successfully"}
    for name, service in SERVICES.items():
        depends = service.get("depends_on", {})
        for other in depends:
            assert other in SERVICES and other != name, (name, other)
            if isinstance(depends, dict):
                assert depends[other]["condition"] in conditions, (name, other)
                if depends[other]["condition"] == "service_healthy":
                    assert "healthcheck" in SERVICES[other], (name, other)


def test_named_volumes_are_declared_and_bind_mounts_exist_in_the_repository():
    declared = set(COMPOSE["volumes"])
    used = set()
    for name, service in SERVICES.items():
        for source, target in mounts(service):
            assert target.startswith("/"), (name, target)
            if source.startswith("."):
                assert (ROOT / source).exists(), (name, source)
            else:
                assert source in declared, (name, source)
                used.add(source)
    assert used == declared  # none declared for nothing


def test_host_ports_are_unique_and_tools_without_authentication_stay_on_loopback():
    seen = {}
    for name, service in SERVICES.items():
        for address, host_port, container_port in published(service):
            assert 0 < host_port < 65536 and 0 < container_port < 65536
            assert host_port not in seen, (name, seen.get(host_port))
            seen[host_port] = name
            if name != "proxy":  # Flower, Prometheus, Grafana
                assert address == "127.0.0.1", name
    assert seen == {8000: "proxy", 5555: "flower", 9090: "prometheus", 3000: "grafana"}


def test_the_front_door_is_the_only_way_into_the_api():
    proxy, api = SERVICES["proxy"], SERVICES["api"]
    assert "ports" not in api  # only the door reaches it
    (config_path,) = [arg for arg in proxy["command"] if arg.endswith(".cfg")]
    mounted = {target: source for source, target in mounts(proxy)}
    assert (ROOT / mounted[config_path]).resolve() == ROOT / "deploy/haproxy/haproxy.cfg"
    assert proxy["volumes"][0].endswith(":ro")
    env = proxy["environment"]
    host, port = env["HAPROXY_API_ADDRESS"].split(":")
    assert host == "api" and int(port) in container_ports("api")
    assert api["environment"]["API_BIND"].endswith(f":{port}")
    assert int(env["HAPROXY_METRICS_BIND"].rsplit(":", 1)[1]) in container_ports("proxy")
    assert proxy["depends_on"]["api"]["condition"] == "service_healthy"


def test_the_api_believes_forwarded_addresses_from_the_front_door_alone():
    (subnet,) = COMPOSE["networks"]["default"]["ipam"]["config"]
    door = SERVICES["proxy"]["networks"]["default"]["ipv4_address"]
    trusted = SERVICES["api"]["environment"]["DJANGO_TRUSTED_PROXY_ADDRESSES"]

    assert trusted == door
    assert ipaddress.ip_address(door) in ipaddress.ip_network(subnet["subnet"])
    # The door connects from its own address (not the loopback default of the file).
    assert SERVICES["proxy"]["environment"]["HAPROXY_API_SOURCE"] == "0.0.0.0"


def test_monitoring_and_rabbitmq_are_optional_profiles_and_the_product_has_none():
    for name, service in SERVICES.items():
        expected = [PROFILES[name]] if name in PROFILES else []
        assert service.get("profiles", []) == expected, name


def test_nothing_started_without_a_profile_depends_on_a_profiled_service():
    for name, service in SERVICES.items():
        if name not in PROFILES:
            assert not set(service.get("depends_on", {})) & set(PROFILES), name


def test_the_broker_is_the_redis_unless_celery_broker_url_names_rabbitmq():
    env = SERVICES["worker"]["environment"]
    assert env["CELERY_BROKER_URL"] == "${CELERY_BROKER_URL:-}"
    assert "amqp://guest:guest@rabbitmq:5672//" in (ROOT / "docker-compose.yml").read_text()


def test_commands_name_files_that_exist():
    assert (ROOT / "core" / "serve.py").is_file() and (ROOT / "manage.py").is_file()
    assert SERVICES["api"]["command"] == ["python", "-m", "core.serve"]
    assert "workers" in SERVICES["worker"]["command"] and (ROOT / "workers" / "celery.py").is_file()


def test_prometheus_scrapes_the_api_and_the_worker_where_they_listen():
    prometheus = SERVICES["prometheus"]
    config_dir = dict((target, source) for source, target in mounts(prometheus))["/etc/prometheus"]
    config_file = next(a for a in prometheus["command"] if a.startswith("--config.file="))
    config_path = ROOT / config_dir / Path(config_file.split("=", 1)[1]).name
    config = yaml.safe_load(config_path.read_text())

    jobs = {job["job_name"]: job["dns_sd_configs"][0] for job in config["scrape_configs"]}
    assert jobs.keys() == {"api", "worker", "proxy"}
    for job in jobs.values():
        (target,) = job["names"]
        assert job["port"] in container_ports(target), target
    worker_env = SERVICES["worker"]["environment"]
    assert int(worker_env["WORKER_METRICS_PORT"]) == jobs["worker"]["port"]
    assert worker_env["WORKER_METRICS_ADDR"] == "0.0.0.0"
    assert "PROMETHEUS_MULTIPROC_DIR" in worker_env  # the pool processes' counters too
    for rule_file in config["rule_files"]:
        assert (config_path.parent / rule_file).is_file()


def test_grafana_is_provisioned_with_prometheus_and_the_dashboard():
    grafana = SERVICES["grafana"]
    mounted = {
        target: ROOT / source for source, target in mounts(grafana) if source.startswith(".")
    }
    provisioning = mounted["/etc/grafana/provisioning"]
    (datasource,) = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())[
        "datasources"
    ]
    assert datasource["url"] == "http://prometheus:9090" and 9090 in container_ports("prometheus")
    (provider,) = yaml.safe_load((provisioning / "dashboards" / "ticketing.yml").read_text())[
        "providers"
    ]
    dashboards = mounted[provider["options"]["path"]]
    assert (dashboards / "ticketing.json").is_file()
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert (dashboards / Path(home).name).is_file()


def dashboard_exprs() -> dict[str, list[str]]:
    dashboard = json.loads((ROOT / "deploy/grafana/dashboards/ticketing.json").read_text())
    return {p["title"]: [t["expr"] for t in p["targets"]] for p in dashboard["panels"]}


def test_the_dashboard_shows_what_the_issue_asks_for():
    titles = " ".join(dashboard_exprs()).lower()

    for subject in ("sale rate", "code", "commit latency", "queue depth", "pending", "gate"):
        assert subject in titles, subject


def dashboard_metrics(title_filter=lambda title: True) -> dict[str, set[str]]:
    """Metric names each panel's queries read (labels and keywords left out)."""
    return {
        title: {
            name
            for expr in exprs
            for name in re.findall(r"\b([a-z_]+)(?=[{\[]|\)|$)", expr)
            if name not in {"le", "route", "queue", "code", "event"}
        }
        for title, exprs in dashboard_exprs().items()
        if title_filter(title)
    }


@pytest.mark.django_db
def test_every_dashboard_query_reads_a_metric_the_api_serves(client):
    served = set(re.findall(r"^# TYPE (\w+) ", client.get("/metrics").content.decode(), re.M))
    suffixes = ("_bucket", "_count", "_sum", "_total")
    # The front door's panels read HAProxy's exporter: tests/frontdoor/test_config.py.
    for title, names in dashboard_metrics(lambda t: not t.startswith("Front door")).items():
        assert names, title
        for name in names:
            families = {name} | {name.removesuffix(suffix) for suffix in suffixes}
            assert families & served, (title, name)


@pytest.mark.skipif(
    subprocess.run(["docker", "compose", "version"], capture_output=True, check=False).returncode
    if shutil.which("docker")
    else True,
    reason="no docker CLI with Compose here: the checks above stand in for `docker compose config`",
)
def test_docker_compose_config_accepts_the_file_with_the_monitoring_profile():
    checked = subprocess.run(
        ["docker", "compose", "--profile", "monitoring", "config", "--quiet"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert checked.returncode == 0, checked.stderr
