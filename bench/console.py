"""`python -m bench console`: how fast the web console loads on the default server (headless
Chromium; each cold load in a new browser session, so nothing is cached), and screenshots of
its main views on the demo patches (--out)."""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from bitpatch.testing import ServerProcess

ADMIN = "console-bench-admin-token"
VIEWS = {  # screenshot name -> route, and the button pressed before the picture
    "tasks": ("tasks", None),
    "playground-classification": ("tasks/sentiment", "#play-run"),
    "playground-embedding": ("tasks/embedding", "#play-run"),
    "fanout": ("fanout", "#fanout-run"),
    "traffic": ("traffic", None),
}
READY = "return performance.getEntriesByName('bitpatch:view-ready').map((m) => m.startTime)"
TIMING = """const nav = performance.getEntriesByType('navigation')[0];
const resources = performance.getEntriesByType('resource');
const bytes = resources.reduce((n, r) => n + r.transferSize, 0) + nav.transferSize;
return {dom_ms: nav.domContentLoadedEventEnd, load_ms: nav.loadEventEnd, bytes: bytes,
        requests: resources.length};"""


def chromium():
    """Headless Debian chromium through its chromedriver."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--window-size=1280,860",
    ):
        options.add_argument(arg)
    return webdriver.Chrome(options=options, service=Service(shutil.which("chromedriver")))


def ready_ms(driver, timeout: float = 30.0) -> float:
    """Milliseconds from navigation to the first view drawn with its data."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        marks = driver.execute_script(READY)
        if marks:
            return marks[0]
        time.sleep(0.02)
    raise TimeoutError("the console never drew its view")


def cold_load(url: str) -> dict:
    """One load of the task list in a fresh browser (empty cache)."""
    driver = chromium()
    try:
        driver.get(f"{url}/ui/")
        driver.execute_script("sessionStorage.setItem('bitpatch.token', arguments[0])", ADMIN)
        driver.get(f"{url}/ui/?cold=1#/tasks")
        ready = ready_ms(driver)
        return {"ready_ms": round(ready, 1), **driver.execute_script(TIMING)}
    finally:
        driver.quit()


def traffic(url: str, seconds: float, clients: int = 4) -> None:
    """Predictions on the demo tasks from a few clients, so the traffic view has figures."""
    import random
    import threading

    import httpx

    bodies = {
        "sentiment": ["a wonderful film", "dull and far too long"],
        "paraphrase": [["he left early", "he went home early"]],
        "similarity": [["a man plays guitar", "someone plays music"]],
        "embedding": ["a cat on a mat", "stock prices fell"],
    }
    stop = time.monotonic() + seconds

    def client(seed: int) -> None:
        rng = random.Random(seed)
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {ADMIN}"}) as http:
            while time.monotonic() < stop:
                task = rng.choice(list(bodies))
                http.post(f"/tasks/{task}/predict", json={"inputs": bodies[task]})
                time.sleep(rng.uniform(0.0, 0.05))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def screenshots(url: str, folder: Path) -> list[str]:
    """The main views on the demo patches, as PNGs in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    driver = chromium()
    saved = []
    try:
        driver.get(f"{url}/ui/")
        driver.execute_script("sessionStorage.setItem('bitpatch.token', arguments[0])", ADMIN)
        for i, (name, (route, button)) in enumerate(VIEWS.items()):
            driver.get(f"{url}/ui/?shot={i}#/{route}")
            ready_ms(driver)
            if button:
                driver.find_element("css selector", button).click()
                time.sleep(1.0)
            path = folder / f"console-{name}.png"
            driver.save_screenshot(str(path))
            saved.append(str(path))
    finally:
        driver.quit()
    return saved


def run_console(quick: bool, out: Path | None) -> dict:
    """Cold loads of the console on the default backbone with the demo patches."""
    with (
        tempfile.TemporaryDirectory() as tmp,
        ServerProcess("default", Path(tmp) / "store", "--admin-token", ADMIN) as server,
    ):
        loads = [cold_load(server.url) for _ in range(2 if quick else 10)]
        if out and not quick:
            traffic(server.url, seconds=45)  # the traffic view's charts have a curve
        shots = screenshots(server.url, out) if out else []
    ready = [x["ready_ms"] for x in loads]
    return {
        "loads": loads,
        "ready_ms_median": statistics.median(ready),
        "ready_ms_max": max(ready),
        "screenshots": shots,
    }


def console_markdown(results: dict) -> str:
    """The table for docs/BENCHMARKS.md."""
    first = results["loads"][0]
    return "\n".join(
        [
            "| cold loads | first view drawn, median | max | DOMContentLoaded | bytes | requests |",
            "|---|---|---|---|---|---|",
            f"| {len(results['loads'])} | {results['ready_ms_median']:.0f} ms | "
            f"{results['ready_ms_max']:.0f} ms | {first['dom_ms']:.0f} ms | {first['bytes']} | "
            f"{first['requests']} |",
        ]
    )
