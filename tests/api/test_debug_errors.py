"""With DEBUG on (as `make run` sets it), API clients still get the JSON error shape."""

import os
import subprocess
import sys

import pytest
from django.http import HttpResponse
from django.urls import path
from django.views.decorators.http import require_POST

pytestmark = pytest.mark.django_db

DEBUG_JSON = "api.debug.DebugJsonErrorsMiddleware"


@require_POST
def post_only(request):
    return HttpResponse("ok")


# A plain Django view beside the API (as the admin's are), for @pytest.mark.urls below.
urlpatterns = [path("post-only/", post_only)]


@pytest.fixture
def debug_on(settings):
    settings.DEBUG = True
    settings.MIDDLEWARE = [*settings.MIDDLEWARE, DEBUG_JSON]


def test_an_unknown_url_answers_json_404_with_debug_on(debug_on, client):
    response = client.get("/no-such-page/", HTTP_ACCEPT="*/*")  # curl's Accept

    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"code": "not_found", "message": "Not found."}


def test_a_client_without_an_accept_header_gets_json_too(debug_on, client):
    response = client.get("/events/1/nothing-here/")

    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


def test_a_browser_asking_for_html_gets_the_technical_404_page(debug_on, client):
    response = client.get("/no-such-page/", HTTP_ACCEPT="text/html,application/xhtml+xml,*/*")

    assert response.status_code == 404
    assert response["Content-Type"].startswith("text/html")
    assert b"URLconf" in response.content  # Django's page, listing the patterns tried


def test_a_wrong_method_on_an_api_view_answers_json_405_with_debug_on(debug_on, anon):
    response = anon.delete("/register/")

    assert response.status_code == 405
    assert response.json()["code"] == "method_not_allowed"


@pytest.mark.urls(__name__)
def test_a_wrong_method_on_a_django_view_answers_json_405_with_debug_on(debug_on, client):
    response = client.get("/post-only/")  # Django's answer: an empty HTML 405

    assert response.status_code == 405
    assert response.json()["code"] == "method_not_allowed"
    assert "POST" in response["Allow"]


@pytest.mark.urls(__name__)
def test_without_the_middleware_django_views_answer_html_405(settings, client):
    settings.DEBUG = True  # what the middleware is for: this answer is not JSON

    response = client.get("/post-only/")

    assert response.status_code == 405
    assert response["Content-Type"].startswith("text/html")


def test_production_still_answers_json_404_without_the_middleware(settings, client):
    assert DEBUG_JSON not in settings.MIDDLEWARE
    response = client.get("/no-such-page/")

    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


@pytest.mark.parametrize(("debug", "present"), [("1", True), ("0", False)])
def test_the_middleware_is_installed_only_with_debug_on(debug, present):
    printed = subprocess.run(
        [sys.executable, "-c", "from core import settings; print(settings.MIDDLEWARE)"],
        env={**os.environ, "DJANGO_DEBUG": debug},  # DJANGO_SECRET_KEY: from tests/settings.py
        capture_output=True,
        text=True,
        check=True,
    ).stdout

    assert (DEBUG_JSON in printed) is present
