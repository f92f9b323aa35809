"""Headless Chromium for the console tests: Debian's chromium and chromium-driver, found on
PATH (nothing downloads a browser); screenshots go to $BITPATCH_SCREENSHOTS."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REQUIRED = os.environ.get("BITPATCH_REQUIRE_BROWSER") == "1"  # .ci/run: a missing browser fails


def chromium_paths() -> tuple[str, str]:
    """The browser and its driver, or skip (fail where the browser is required)."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not (browser and driver):
        message = (
            "needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)"
        )
        if REQUIRED:
            pytest.fail(message)
        pytest.skip(message)
    return browser, driver


def start_chromium():
    """A headless Chromium session that keeps the browser's console log."""
    pytest.importorskip("selenium")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser, driver = chromium_paths()
    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager never downloads
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--window-size=1280,900",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(options=options, service=Service(executable_path=driver))


def screenshot_dir(fallback: Path) -> Path:
    """Where the tests save their screenshots."""
    folder = Path(os.environ.get("BITPATCH_SCREENSHOTS") or fallback)
    folder.mkdir(parents=True, exist_ok=True)
    return folder
