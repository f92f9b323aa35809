"""The web console in a real headless Chromium against a real `bitpatch serve`: the token
prompt, the task list, a playground answer for every kind equal to the API's, upload, rollback,
rollout, fan-out, traffic, and no errors in the browser's console."""

from __future__ import annotations

import base64
import math
from dataclasses import replace

import httpx
import pytest

from bitpatch.testing import ServerProcess

from console_browser import screenshot_dir, start_chromium
from tiny import kind_patch, make_model

ADMIN, PREDICT = "browser-admin-token", "browser-predict-token"
KINDS = ("classification", "regression", "multi_label", "token_classification", "embedding")
WAIT_S = 20
VIEW_DRAWN = "return ['ready', 'failed'].includes(document.body.dataset.view)"
SELECT_KIND = (
    "const s = document.getElementById('filter-kind'); s.value = arguments[0];"
    "s.dispatchEvent(new Event('change'))"
)
DROP_FILE = """const bytes = Uint8Array.from(atob(arguments[1]), (c) => c.charCodeAt(0));
const transfer = new DataTransfer();
transfer.items.add(new File([bytes], arguments[2], {type: 'application/octet-stream'}));
const zone = document.querySelector(arguments[0]);
for (const type of ['dragover', 'drop']) {
  const init = {dataTransfer: transfer, bubbles: true, cancelable: true};
  zone.dispatchEvent(new DragEvent(type, init));
}"""


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def model():
    return make_model("bert")[0]


@pytest.fixture(scope="module")
def server(tiny_bert_dir, tmp_path_factory, model):
    store = tmp_path_factory.mktemp("console-browser") / "store"
    args = ("--no-demo-patches", "--admin-token", ADMIN, "--predict-token", PREDICT)
    with ServerProcess(tiny_bert_dir, store, *args) as srv, httpx.Client(base_url=srv.url) as http:
        patches = {kind: kind_patch(model, kind, kind, seed=i) for i, kind in enumerate(KINDS)}
        patches["pairs"] = replace(
            kind_patch(model, "classification", "pairs", 7), inputs="text_pair"
        )
        for task, patch in patches.items():
            reply = http.put(
                f"/tasks/{task}/patch", content=patch.to_bytes(), headers=bearer(ADMIN)
            )
            assert reply.status_code == 201, reply.text
        yield srv


@pytest.fixture(scope="module")
def api(server):
    with httpx.Client(base_url=server.url, headers=bearer(ADMIN), timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def browser(server):
    driver = start_chromium()
    driver.get(f"{server.url}/ui/")
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    return screenshot_dir(tmp_path_factory.mktemp("screenshots"))


class Console:
    """Drives the console: open a route with a token, wait, read the page."""

    loads = 0

    def __init__(self, browser, url: str):
        self.browser, self.url = browser, url

    def open(self, route: str, token: str | None = ADMIN) -> None:
        """A fresh load of the console at `#/route`, with `token` in sessionStorage."""
        self.browser.execute_script(
            "sessionStorage.clear();"
            "if (arguments[0]) sessionStorage.setItem('bitpatch.token', arguments[0]);",
            token,
        )
        Console.loads += 1
        self.browser.get(f"{self.url}/ui/?load={Console.loads}#/{route}")
        self.wait(lambda d: d.execute_script(VIEW_DRAWN))

    def wait(self, condition, timeout: float = WAIT_S):
        """`condition`'s first truthy answer; elements replaced by a redraw mid-check retry."""
        from selenium.common.exceptions import (
            NoSuchElementException,
            StaleElementReferenceException,
        )
        from selenium.webdriver.support.ui import WebDriverWait

        retried = (NoSuchElementException, StaleElementReferenceException)
        return WebDriverWait(self.browser, timeout, ignored_exceptions=retried).until(condition)

    def click(self, selector: str) -> None:
        """Click the element once it is there (found afresh if a redraw replaced it)."""

        def clicked(driver) -> bool:
            driver.find_element("css selector", selector).click()
            return True

        self.wait(clicked)

    def attribute(self, selector: str, name: str) -> str | None:
        """An attribute of the element once it is there."""
        return self.wait(lambda d: [d.find_element("css selector", selector).get_attribute(name)])[
            0
        ]

    def css(self, selector: str):
        return self.browser.find_elements("css selector", selector)

    def one(self, selector: str):
        return self.wait(lambda d: (d.find_elements("css selector", selector) or [None])[0])

    def js(self, script: str, *args):
        return self.browser.execute_script(script, *args)

    def errors(self, allowed: tuple[str, ...] = ()) -> list[str]:
        """SEVERE browser log entries (script errors, CSP refusals, failed loads) not allowed."""
        entries = self.browser.get_log("browser")
        return [
            e["message"]
            for e in entries
            if e["level"] == "SEVERE" and not any(a in e["message"] for a in allowed)
        ]


@pytest.fixture
def console(browser, server):
    page = Console(browser, server.url)
    page.errors()  # drop what earlier tests left in the log
    yield page


def test_token_prompt_refuses_a_wrong_token_and_the_predict_token_reads_only(console, shots):
    console.open("tasks", token=None)
    console.wait(lambda d: d.execute_script("return document.getElementById('token-dialog').open"))
    assert "401" in console.one("#banner").text  # what the open page was refused
    console.browser.save_screenshot(str(shots / "token-prompt.png"))
    field = console.one("#token-input")
    field.send_keys("not-the-right-token")
    console.click("#token-save")
    error = console.wait(
        lambda d: (
            d.find_element("id", "token-error").is_displayed()
            and d.find_element("id", "token-error")
        )
    )
    assert "403" in error.text and "neither this server's admin nor its predict token" in error.text
    field.clear()
    field.send_keys(PREDICT)
    console.click("#token-save")
    console.wait(
        lambda d: not d.execute_script("return document.getElementById('token-dialog').open")
    )
    console.wait(lambda d: "read-only" in d.find_element("id", "whoami").text)
    assert console.js("return sessionStorage.getItem('bitpatch.token')") == PREDICT
    console.wait(
        lambda d: len(d.find_elements("css selector", "#tasks-table tbody tr[data-task]")) == 6
    )
    console.open("tasks/classification", token=PREDICT)
    console.one("#versions-table")
    assert not console.css("[data-action=activate]") and not console.css("[data-action=delete]")
    assert not console.css(".upload") or not console.css(".upload")[0].is_displayed()
    assert "admin token" in console.one(".rollout").text
    assert console.errors(allowed=("status of 401", "status of 403")) == []


def test_task_list_filters_by_name_and_kind(console, shots):
    console.open("tasks")

    def rows():  # read in one script: the table may be redrawn between two reads
        return console.js(
            "return [...document.querySelectorAll('#tasks-table tr[data-task]')]"
            ".map((r) => r.dataset.task)"
        )

    console.wait(lambda d: len(rows()) == 6)
    assert rows() == sorted(rows())
    assert console.one("#tasks-status").text == "1–6 of 6"
    console.browser.save_screenshot(str(shots / "tasks.png"))
    console.one("#filter-name").send_keys("multi")
    console.wait(lambda d: rows() == ["multi_label"])
    console.one("#filter-name").clear()
    console.js(SELECT_KIND, "classification")
    console.wait(lambda d: rows() == ["classification", "pairs"])
    assert console.errors() == []


def cosine(a, b) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


@pytest.mark.parametrize("task", [*KINDS, "pairs"])
def test_playground_shows_what_the_api_answers(console, api, shots, task):
    console.open(f"tasks/{task}")
    console.click("#play-run")
    output = console.wait(
        lambda d: (
            d.find_element("id", "play-output").get_attribute("data-version")
            and d.find_element("id", "play-output")
        )
    )
    text = console.one("#play-text").get_attribute("value")
    pair = console.css("#play-pair")
    if task == "embedding":
        inputs = [t.strip() for t in text.split("\n") if t.strip()]
    else:
        inputs = [[text, pair[0].get_attribute("value")]] if pair else [text]
    answer = api.post(f"/tasks/{task}/predict", json={"inputs": inputs}).json()["predictions"]
    kind = "classification" if task == "pairs" else task
    if kind == "classification":
        shown = output.find_element("css selector", ".prediction")
        assert shown.get_attribute("data-label") == answer[0]["label"]
        bars = {
            b.get_attribute("data-label"): b.find_element("css selector", ".bar-score").text
            for b in shown.find_elements("css selector", ".bar")
        }
        assert bars == {label: f"{s:.3f}" for label, s in answer[0]["scores"].items()}
    elif kind == "regression":
        value = float(
            output.find_element("css selector", ".prediction").get_attribute("data-value")
        )
        assert value == pytest.approx(answer[0]["value"], abs=1e-4)
    elif kind == "multi_label":
        shown = output.find_element("css selector", ".prediction")
        assert shown.get_attribute("data-labels") == ",".join(answer[0]["labels"])
        assert len(shown.find_elements("css selector", ".bar-threshold")) == 3
    elif kind == "token_classification":
        marks = output.find_elements("css selector", ".tagged-text mark")
        assert [m.get_attribute("data-label") for m in marks] == [
            t["label"] for t in answer[0]["tokens"]
        ]
    else:
        cells = output.find_elements("css selector", "td.sim")
        assert len(cells) == len(inputs) ** 2
        for cell in cells:
            i, j = int(cell.get_attribute("data-i")), int(cell.get_attribute("data-j"))
            expected = cosine(answer[i]["embedding"], answer[j]["embedding"])
            assert float(cell.get_attribute("data-value")) == pytest.approx(expected, abs=1e-4)
    console.browser.save_screenshot(str(shots / f"playground-{task}.png"))
    assert console.errors() == []


def drop_file(console, selector: str, data: bytes, name: str) -> None:
    """Drag-and-drop a file onto an element, as a browser delivers it."""
    console.js(
        DROP_FILE,
        selector,
        base64.b64encode(data).decode(),
        name,
    )


V1, V2 = "#versions-table tr[data-version='1']", "#versions-table tr[data-version='2']"


def version_row(console, version: int):
    return console.wait(
        lambda d: (
            d.find_elements("css selector", f"#versions-table tr[data-version='{version}']")
            or [None]
        )[0]
    )


def test_upload_by_drag_and_drop_then_activate_roll_back_and_delete(console, api, model, shots):
    console.open("tasks/classification")
    patch = kind_patch(model, "classification", "classification", seed=42)
    drop_file(console, ".dropzone", patch.to_bytes(), "classification-v2.safetensors")
    console.click("#upload-candidate")
    console.wait(lambda d: d.find_element("css selector", ".upload-send").is_enabled())
    console.click(".upload-send")
    version_row(console, 2)
    assert console.attribute(V2, "data-active") == "false"  # stored as a candidate
    assert api.get("/tasks/classification").json()["active_version"] == 1
    console.browser.save_screenshot(str(shots / "task-versions.png"))
    console.click(f"{V2} [data-action=activate]")
    console.wait(lambda d: d.find_element("id", "active-version").text == "active v2")
    assert api.get("/tasks/classification").json()["active_version"] == 2
    console.click(f"{V1} [data-action=activate]")  # roll back
    console.wait(lambda d: d.find_element("id", "active-version").text == "active v1")
    assert api.get("/tasks/classification").json()["active_version"] == 1
    console.click(f"{V2} [data-action=delete]")
    console.wait(
        lambda d: "Delete v2?" in d.find_element("css selector", f"{V2} [data-action=delete]").text
    )
    console.click(f"{V2} [data-action=delete]")  # the second click confirms
    console.wait(lambda d: not d.find_elements("css selector", V2))
    assert [v["version"] for v in api.get("/tasks/classification").json()["versions"]] == [1]
    assert console.errors() == []


def test_a_new_task_from_the_list_takes_its_name_from_the_file(console, api, model, tmp_path):
    path = tmp_path / "fresh.safetensors"
    path.write_bytes(kind_patch(model, "regression", "fresh-task", seed=5).to_bytes())
    console.open("tasks")
    console.one("input.file-input").send_keys(str(path))
    console.wait(
        lambda d: (
            d.find_element("css selector", ".upload input[type=text]").get_attribute("value")
            == "fresh-task"
        )
    )
    console.click(".upload-send")
    console.wait(lambda d: d.execute_script("return location.hash") == "#/tasks/fresh-task")
    assert api.get("/tasks/fresh-task").json()["active_version"] == 1
    api.delete("/tasks/fresh-task")
    assert console.errors() == []


def test_rollout_canary_then_promote(console, api, model, shots):
    candidate = kind_patch(model, "regression", "regression", seed=77)
    reply = api.put(
        "/tasks/regression/patch", params={"activate": "false"}, content=candidate.to_bytes()
    )
    assert reply.status_code == 201
    console.open("tasks/regression")
    console.js("const s = document.getElementById('canary-version'); s.value = '2'")
    percent = console.one("#canary-percent")
    percent.clear()
    percent.send_keys("25")
    console.click("#rollout-start")
    console.wait(
        lambda d: d.find_element("id", "rollout-state").get_attribute("data-canary") == "2"
    )
    rollout = api.get("/tasks/regression/rollout").json()
    assert rollout["canary"] == {"version": 2, "percent": 25.0}
    console.browser.save_screenshot(str(shots / "rollout.png"))
    console.click("#rollout-promote")
    console.wait(lambda d: d.find_element("id", "active-version").text == "active v2")
    after = api.get("/tasks/regression/rollout").json()
    assert after["active"] == 2 and after["canary"] is None
    assert console.errors() == []


def test_fanout_answers_side_by_side(console, api, shots):
    console.open("fanout")
    chosen = ("classification", "multi_label", "regression")
    for box in console.css(".task-choice input"):
        if box.is_selected() != (box.get_attribute("value") in chosen):
            box.click()
    console.one("#fanout-filter").send_keys("reg")  # filtering keeps what was chosen
    console.wait(lambda d: len(d.find_elements("css selector", ".task-choice")) == 1)
    console.click("#fanout-run")
    console.wait(lambda d: len(d.find_elements("css selector", "#fanout-output .result")) == 3)
    text = console.one("#fanout-text").get_attribute("value")
    results = api.post("/predict", json={"tasks": list(chosen), "inputs": [text]}).json()["results"]
    card = console.one("#fanout-output .result[data-task=classification] .prediction")
    assert card.get_attribute("data-label") == results["classification"]["predictions"][0]["label"]
    value = console.one("#fanout-output .result[data-task=regression] .prediction").get_attribute(
        "data-value"
    )
    assert float(value) == pytest.approx(results["regression"]["predictions"][0]["value"], abs=1e-4)
    console.browser.save_screenshot(str(shots / "fanout.png"))
    assert console.errors() == []


def test_traffic_shows_live_figures_charts_and_busiest_tasks(console, api, shots):
    for _ in range(5):
        assert api.post("/tasks/embedding/predict", json={"inputs": ["a b c"]}).status_code == 200
    console.open("traffic")
    tile = console.wait(
        lambda d: d.find_elements("css selector", "[data-figure='requests/s'] .tile-value")
    )
    assert float(tile[0].text) > 0
    assert len(console.css("#traffic-charts figure.chart svg")) == 4
    console.wait(
        lambda d: d.find_elements("css selector", "#busiest-table tr[data-task=embedding]")
    )
    console.browser.save_screenshot(str(shots / "traffic.png"))
    assert console.errors() == []
