"""The reference buyer page (docs/frontend.md, "The reference buyer page"): three static
files served at /buyer/ (`/buyer/?event=<id>`), from api/static/buyer/.

Not an API endpoint, so not in the schema: a plain Django view that answers the files
as they are on disk. They are the same for everyone and carry no token, so the front
door caches them like the waiting room's public state (deploy/haproxy/haproxy.cfg: GETs
without Authorization, for at most 10 s) and a crowd loading the page at the opening
reaches Django about once per file per 10 s.
"""

from pathlib import Path

from django.http import FileResponse
from django.urls import include, re_path
from django.views.decorators.http import require_safe

__all__ = ["buyer_page", "buyer_page_urls"]

FILES = Path(__file__).resolve().parent.parent / "static" / "buyer"
# URL name -> (file, media type). "" is the page itself: /buyer/.
PAGE = {
    "": ("index.html", "text/html; charset=utf-8"),
    "buyer.js": ("buyer.js", "text/javascript; charset=utf-8"),
    "buyer.css": ("buyer.css", "text/css; charset=utf-8"),
}
HEADERS = {
    "Cache-Control": "public, max-age=60",
    # The page runs its own files only: no inline script, nothing from elsewhere.
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'",
}


@require_safe
def buyer_page(request, name: str = ""):
    """Answer one of the page's files (GET and HEAD only; the URL admits no other name)."""
    file_name, content_type = PAGE[name]
    response = FileResponse(open(FILES / file_name, "rb"), content_type=content_type)
    for header, value in HEADERS.items():
        response[header] = value
    return response


# Included under "buyer/" by api/urls.py; the pattern admits the page's names only.
buyer_page_urls = include([re_path(r"^(?P<name>|buyer\.js|buyer\.css)$", buyer_page)])
