"""Dependencies: production pins only what it runs; development adds the rest."""

import ast
import re
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

from django.conf import settings

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = ["api", "core", "workers", "manage.py"]
# Tests, benchmark, load tests, lint, tooling: never in the production image.
DEV_ONLY = {
    "pytest", "pytest-django", "pytest-timeout", "requests", "psutil", "locust",
    "geventhttpclient", "gevent", "schemathesis", "hypothesis", "tqdm", "matplotlib",
    "numpy", "py-spy", "ruff", "pip-tools", "honcho", "gunicorn",
}  # fmt: skip


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(path: str) -> dict[str, str]:
    found = {}
    for line in (ROOT / path).read_text().splitlines():
        if line and not line.startswith((" ", "#", "-")):
            name, sep, version = line.partition("==")
            assert sep and version.strip(), f"{path}: not pinned exactly: {line}"
            found[normalize(name)] = version.strip()
    return found


def test_production_requirements_hold_no_test_or_benchmark_package():
    assert not DEV_ONLY & pins("requirements.txt").keys()


def test_development_requirements_hold_the_runtime_pins_and_the_tools():
    runtime, dev = pins("requirements.txt"), pins("requirements-dev.txt")

    assert {name: dev.get(name) for name in runtime} == runtime
    assert DEV_ONLY <= dev.keys()


def third_party_imports() -> set[str]:
    paths = [
        p for entry in PRODUCT for p in sorted((ROOT / entry).glob("**/*.py")) or [ROOT / entry]
    ]
    modules = set()
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules.add(node.module.split(".")[0])
    # Named by dotted path in the settings rather than imported.
    dotted = [*settings.INSTALLED_APPS, *settings.MIDDLEWARE]
    dotted += [f.get("()", "") for f in settings.LOGGING["formatters"].values()]
    modules |= {path.split(".")[0] for path in dotted if path}
    local = {"api", "core", "workers"}
    return {m for m in modules if m not in local and m not in sys.stdlib_module_names}


def test_everything_the_product_imports_is_a_runtime_requirement():
    runtime = pins("requirements.txt").keys()
    distributions = packages_distributions()
    imported = third_party_imports()

    assert {"django", "rest_framework", "celery", "corsheaders", "pythonjsonlogger"} <= imported
    for module in imported:
        assert {normalize(d) for d in distributions[module]} & runtime, module


def test_the_image_installs_the_runtime_file_and_development_installs_the_dev_file():
    dockerfile = (ROOT / "Dockerfile").read_text()
    makefile = (ROOT / "Makefile").read_text()

    assert re.findall(r"pip install .*", dockerfile) == [
        "pip install --no-cache-dir -r requirements.txt"
    ]
    assert "pip install --quiet -r requirements-dev.txt" in makefile
    assert "-r requirements.in" in (ROOT / "requirements-dev.in").read_text()
