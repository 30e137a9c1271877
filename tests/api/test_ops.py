"""Operations: liveness, readiness, the OpenAPI schema and its docs page."""

import json
import os
import subprocess
import sys

import pytest
import yaml
from django.core.management import call_command
from django.urls import get_resolver
from rest_framework.test import APIClient

pytestmark = pytest.mark.django_db

# Every API path, as the schema spells it.
API_PATHS = {
    "/register/",
    "/login/",
    "/token/refresh/",
    "/logout/",
    "/events/",
    "/events/{event_id}/",
    "/events/{event_id}/purchase/",
    "/orders/",
    "/orders/{order_id}/",
    "/orders/{order_id}/cancel/",
    "/health/",
    "/ready/",
}


def schema_json(client) -> dict:
    response = client.get("/schema/?format=json")
    assert response.status_code == 200
    return json.loads(response.content)


def test_health_answers_ok_without_a_token(anon):
    response = anon.get("/health/")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_health_ignores_a_broken_token():
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Bearer garbage")

    assert client.get("/health/").status_code == 200


def test_ready_reports_each_dependency(anon):
    response = anon.get("/ready/")

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["checks"] == {"database": "ok", "redis": "ok"}


def test_schema_is_openapi_3_as_json(anon):
    response = anon.get("/schema/?format=json")

    assert response.status_code == 200
    assert "json" in response["Content-Type"]
    schema = json.loads(response.content)
    assert schema["openapi"].startswith("3.")
    assert schema["info"]["title"]


def test_schema_honours_an_accept_header_for_json(anon):
    response = anon.get("/schema/", HTTP_ACCEPT="application/json")

    assert response.status_code == 200
    assert json.loads(response.content)["openapi"].startswith("3.")


def test_schema_defaults_to_yaml(anon):
    response = anon.get("/schema/")

    assert response.status_code == 200
    assert yaml.safe_load(response.content)["openapi"].startswith("3.")


def test_schema_documents_every_endpoint(anon):
    paths = schema_json(anon)["paths"]

    assert API_PATHS <= paths.keys()


# Routed beside the API but not part of it: the buyer page's static files.
PAGES = {"/buyer/"}


def routed_api_paths() -> set[str]:
    return {
        "/" + str(p.pattern).replace("<int:", "{").replace(">", "}")
        for p in get_resolver("api.urls").url_patterns
    } - PAGES


def test_schema_documents_every_routed_api_path(anon):
    # Also covers routes added after the list above was written.
    routed = routed_api_paths()
    assert API_PATHS <= routed

    assert routed <= schema_json(anon)["paths"].keys()


def test_schema_documents_methods_and_error_shape(anon):
    schema = schema_json(anon)
    paths = schema["paths"]

    assert {"get", "put", "patch", "delete"} <= paths["/events/{event_id}/"].keys()
    assert {"get", "post"} <= paths["/events/"].keys()
    purchase = paths["/events/{event_id}/purchase/"]["post"]
    assert {"202", "401", "403", "409", "503"} <= purchase["responses"].keys()
    error = schema["components"]["schemas"]["Error"]
    assert {"code", "message"} <= error["properties"].keys()


def test_schema_declares_bearer_authentication(anon):
    schema = schema_json(anon)

    schemes = schema["components"]["securitySchemes"]
    assert any(s.get("scheme") == "bearer" for s in schemes.values())
    assert schema["paths"]["/orders/"]["get"]["security"]
    assert {} in schema["paths"]["/health/"]["get"].get("security", [{}])


def test_schema_is_valid_openapi_and_generates_without_warnings(tmp_path):
    # --fail-on-warn: every view's input and output is known to the generator.
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(tmp_path / "s.yaml"))

    assert yaml.safe_load((tmp_path / "s.yaml").read_text())["paths"]


def test_docs_page_is_html(anon):
    response = anon.get("/docs/")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    assert b"swagger" in response.content.lower()


def test_schema_names_the_local_api_as_its_server_by_default(anon):
    assert schema_json(anon)["servers"] == [{"url": "http://127.0.0.1:8000"}]


def test_schema_server_follows_api_public_url():
    printed = subprocess.run(
        [
            sys.executable,
            "-c",
            "from core import settings; print(settings.SPECTACULAR_SETTINGS['SERVERS'])",
        ],
        env={
            **os.environ,
            "API_PUBLIC_URL": "https://tickets.example.com/api",
            "DJANGO_DEBUG": "0",
        },
        capture_output=True,
        text=True,
        check=True,
    ).stdout

    assert printed.strip() == "[{'url': 'https://tickets.example.com/api'}]"
