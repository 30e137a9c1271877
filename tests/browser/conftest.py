"""Fixtures of the browser tests: a live sale behind the front door, and Chromium."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.frontdoor.door import SOURCE, Door, start_door
from tests.live import LiveStack

from .page import SCREENSHOTS, BuyerPage, start_chromium


@dataclass(frozen=True)
class Sale:
    """The API server (two workers), a Celery worker and beat, and HAProxy before them."""

    live: LiveStack
    door: Door

    @property
    def url(self) -> str:
        return self.door.base_url

    def restart_api(self) -> None:
        """Start the API again on its port, after a test stopped it."""
        self.live.start_api(workers=2)


@pytest.fixture
def sale_env() -> dict[str, str]:
    """Settings of the sale's processes; a test parametrizes it to change them."""
    return {}


@pytest.fixture
def sale(transactional_db, tmp_path, sale_env) -> Sale:
    live = LiveStack(tmp_path, env={"DJANGO_TRUSTED_PROXY_ADDRESSES": SOURCE, **sale_env})
    try:
        live.start_api(workers=2)
        live.start_worker(concurrency=2)
        live.start_beat()
        # Requests wait at the door for their turn at the API (a crowd of scripted buyers
        # and a browser share two cores) rather than get its 503; test_busy_door makes
        # the door answer 503 on purpose.
        door = start_door(live, api_address=f"127.0.0.1:{live.port}", HAPROXY_QUEUE_TIMEOUT="20s")
        yield Sale(live, door)
    finally:
        live.stop_all()


@pytest.fixture(scope="session")
def screenshots(tmp_path_factory) -> Path:
    if SCREENSHOTS:
        path = Path(SCREENSHOTS)
        path.mkdir(parents=True, exist_ok=True)
        return path
    return tmp_path_factory.mktemp("screenshots")


@pytest.fixture
def chromium():
    driver = start_chromium()
    yield driver
    driver.quit()


@pytest.fixture
def buyer_page(chromium, sale, screenshots):
    """Open the page for an event: buyer_page(event) -> BuyerPage, already loaded."""

    def open_(event) -> BuyerPage:
        page = BuyerPage(chromium, sale.url, event.pk, screenshots)
        page.open()
        return page

    return open_
