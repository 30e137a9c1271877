"""The buyer page's files as the product serves them at /buyer/ (no browser needed)."""

import pytest

from api.views.buyer_page import FILES

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    "path, file_name, media_type",
    [
        ("/buyer/", "index.html", "text/html"),
        ("/buyer/buyer.js", "buyer.js", "text/javascript"),
        ("/buyer/buyer.css", "buyer.css", "text/css"),
    ],
)
def test_the_page_and_its_files_are_served_as_they_are_on_disk(anon, path, file_name, media_type):
    response = anon.get(path, {"event": 1})

    assert response.status_code == 200
    assert response["Content-Type"] == f"{media_type}; charset=utf-8"
    assert b"".join(response.streaming_content) == (FILES / file_name).read_bytes()
    # Cacheable by the front door (no token in it), and nothing runs but its own files.
    assert response["Cache-Control"] == "public, max-age=60"
    assert response["Content-Security-Policy"] == "default-src 'self'; frame-ancestors 'none'"


def test_the_page_references_only_its_own_files():
    html = (FILES / "index.html").read_text()

    assert 'src="buyer.js"' in html and 'href="buyer.css"' in html
    assert "<script>" not in html and "http" not in html  # no inline script, no CDN


@pytest.mark.parametrize("path", ["/buyer/index.html", "/buyer/../settings.py", "/buyer/x.js"])
def test_any_other_name_is_not_found(anon, path):
    assert anon.get(path).status_code == 404


def test_the_page_is_read_only(anon):
    assert anon.post("/buyer/").status_code == 405
