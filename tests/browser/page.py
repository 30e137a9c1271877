"""Headless Chromium driving the buyer page (api/static/buyer/), through Selenium.

The browser and its driver are the system's (Debian's `chromium` and `chromium-driver`,
installed by scripts/system-packages): the driver's path goes to Selenium's Service, so
Selenium Manager never runs and nothing is downloaded. Without them the tests skip.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

try:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
except ImportError:  # requirements-dev.txt has it; say so instead of failing to collect
    webdriver = None

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")
# Phone-sized: the page's narrowest layout, and small screenshots.
WINDOW = (420, 900)
# Where the screenshots of the main states go: a temporary directory, unless
# BROWSER_SCREENSHOTS names one (`BROWSER_SCREENSHOTS=docs/screenshots` refreshes the
# committed ones, docs/frontend.md "The reference buyer page").
SCREENSHOTS = os.environ.get("BROWSER_SCREENSHOTS")

MISSING = [
    name
    for name, found in [
        ("chromium", CHROMIUM),
        ("chromium-driver", CHROMEDRIVER),
        ("selenium (requirements-dev.txt)", webdriver),
    ]
    if not found
]
needs_chromium = pytest.mark.skipif(
    bool(MISSING),
    reason=f"not installed: {', '.join(MISSING)}; scripts/system-packages installs chromium "
    "and chromium-driver (.ci/run runs it)",
)


def start_chromium() -> webdriver.Chrome:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
        "--force-device-scale-factor=1",
        # A container's root user and its small /dev/shm.
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--lang=en-US",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    # A phone's viewport exactly (a headless window is at least 500 px wide).
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": WINDOW[0], "height": WINDOW[1], "deviceScaleFactor": 1, "mobile": True},
    )
    return driver


@dataclass(frozen=True)
class Request:
    """One line of the page's own request log (#activity-log), as the page recorded it."""

    at: float  # epoch seconds when the answer arrived
    method: str
    path: str
    status: str  # "202", "503", "network error"
    code: str


class BuyerPage:
    """The buyer page for one event, in a browser, read the way a person would."""

    def __init__(self, driver, base_url: str, event_id: int, screenshots: Path):
        self.driver = driver
        self.url = f"{base_url}/buyer/?event={event_id}"
        self.screenshots = screenshots

    def open(self) -> None:
        self.driver.get(self.url)

    def reload(self) -> None:
        self.driver.refresh()

    def stage(self) -> str:
        return self.driver.find_element(By.TAG_NAME, "body").get_attribute("data-stage")

    def text(self, element_id: str) -> str:
        return self.driver.find_element(By.ID, element_id).text

    def announced(self) -> str:
        """What the screen-reader-only live region says now (not visible, so no .text)."""
        return self.driver.find_element(By.ID, "announcer").get_attribute("textContent")

    def focused(self) -> str:
        return self.driver.switch_to.active_element.get_attribute("id") or (
            self.driver.switch_to.active_element.text
        )

    def wait_for(self, predicate, what: str, timeout: float = 60.0):
        """Poll `predicate(self)` until it returns something true; return that."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate(self)
            if value:
                return value
            time.sleep(0.1)
        raise AssertionError(
            f"timed out waiting for {what}; stage {self.stage()!r}, status "
            f"{self.text('status')!r}, notice {self.text('notice')!r}, last requests "
            f"{self.requests()[-5:]}"
        )

    def wait_for_stage(self, *stages: str, timeout: float = 60.0) -> str:
        return self.wait_for(
            lambda page: page.stage() if page.stage() in stages else None,
            f"stage {stages}",
            timeout,
        )

    def type_into_focused(self, *keys) -> None:
        """Type at the keyboard focus, as a person would (Tab, Enter included)."""
        self.driver.switch_to.active_element.send_keys(*keys)

    def log_in(self, username: str, password: str) -> None:
        """Log in by keyboard alone: the page focuses the username field itself."""
        self.wait_for_stage("login")
        assert self.focused() == "username"
        self.type_into_focused(username, Keys.TAB, password, Keys.ENTER)

    def set_quantity(self, element_id: str, quantity: int) -> None:
        field = self.driver.find_element(By.ID, element_id)
        field.send_keys(Keys.CONTROL, "a")
        field.send_keys(str(quantity))

    def press_enter(self) -> None:
        self.type_into_focused(Keys.ENTER)

    def saved(self, event_id: int, username: str) -> dict:
        """What the page keeps in localStorage for this buyer and event."""
        raw = self.driver.execute_script(
            "return localStorage.getItem(arguments[0])", f"buyer:{event_id}:{username}"
        )
        return json.loads(raw or "{}")

    def requests(self) -> list[Request]:
        """The page's request log, oldest first (it keeps the last 60)."""
        rows = self.driver.execute_script(
            "return Array.from(document.querySelectorAll('#activity-log li'),"
            " (li) => ({...li.dataset}))"
        )
        return [
            Request(int(r["at"]) / 1000, r["method"], r["path"], r["status"], r["code"])
            for r in reversed(rows)
        ]

    def screenshot(self, name: str) -> Path:
        path = self.screenshots / f"{name}.png"
        self.driver.save_screenshot(str(path))
        return path


# What the tests share: the password of tests/conftest.py's make_user, an event as a
# buyer sees it (and the screenshots show it), and readings of the page.
PASSWORD = "correct-horse-battery"


def concert(make_event, **fields):
    return make_event(name="The Night Orchestra", venue="Main hall", **fields)


def confirmed(page: BuyerPage) -> bool:
    return page.stage() == "final" and page.text("final-title") == "Confirmed"


def number_shown(page: BuyerPage) -> int | None:
    text = page.text("number")
    return int(text) if text.isdigit() else None


def purchases(page: BuyerPage) -> list[Request]:
    return [r for r in page.requests() if r.method == "POST" and r.path.endswith("/purchase/")]
