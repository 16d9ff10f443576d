"""The page in the Airflow UI, in a real browser against a real Airflow 3 api-server.

Headless Chromium and chromidriver from Debian's packages (``./dev test`` installs them), driven
by Selenium pointed at both binaries, so nothing is downloaded. The test:

- without a login, the page and its API answer 401 (403 with a forged token);
- logs in through Airflow's own login form, opens Browse → Cross-deployment (the page in an
  iframe of the Airflow UI) and finds the outbox rows of a real forwarding run;
- makes a real dead item: an asset the downstream does not have (404), given up on by the
  real delivery worker once its retry horizon passed (a worker with ``retry_horizon=0``);
- a viewer sees the dead item but cannot retry it (disabled button, and 403 from the API with
  the viewer's own login cookie);
- deploys the consuming DAG downstream, an admin retries the item from the page, and it is
  delivered: the downstream has the event;
- saves screenshots of the page and of the graph into docs/ (shown in the README).
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.integration.conftest import ROOT, run_cli

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
DOCS = ROOT / "docs"
DAGS_LATER = Path(__file__).with_name("dags_later")
UI_BEARS = "file://include/ui_bears"
PAGE = "/xdeps/ui/"


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.fail(
            f"{CHROMIUM} and {CHROMEDRIVER} are needed for the browser test: run ./dev test (it installs "
            "them), or apt-get install chromium chromium-driver."
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
        "--window-size=1440,1100",
    ):
        options.add_argument(arg)
    # An explicit chromedriver: Selenium does not run selenium-manager (which would download).
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(120)
    driver.set_script_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


# -- helpers ------------------------------------------------------------------------------------
def _wait(driver, condition, timeout: float = 90, what: str = "condition"):
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.5).until(condition)
    except TimeoutException:
        raise AssertionError(
            f"timed out after {timeout:.0f}s waiting for {what}; page:\n{driver.page_source[:3000]}"
        ) from None


def _login(driver, deployment, user: str) -> None:
    """Sign in through Airflow's own login form, as a person would."""
    from selenium.webdriver.common.by import By

    driver.delete_all_cookies()
    driver.get(f"{deployment.url}/auth/login")
    inputs = _wait(
        driver,
        lambda d: (lambda els: els if len(els) >= 2 else False)(d.find_elements(By.CSS_SELECTOR, "input")),
        what="the login form",
    )
    inputs[0].send_keys(user)
    inputs[1].send_keys(deployment.passwords[user])
    driver.find_element(By.XPATH, "//button[normalize-space()='Sign in']").click()
    _wait(driver, lambda d: d.get_cookie("_token"), what=f"the login of {user}")


def _open_page(driver, deployment) -> None:
    driver.get(deployment.url + PAGE)
    _wait_loaded(driver)


def _wait_loaded(driver, after: int = 0) -> None:
    from selenium.webdriver.common.by import By

    def loaded(d):
        value = d.find_element(By.TAG_NAME, "body").get_attribute("data-loaded")
        return value is not None and int(value) > after

    _wait(driver, loaded, what="the page to load its data")


def _api(deployment, path: str, token: str | None = None, method: str = "GET", **kwargs) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return requests.request(method, deployment.url + PAGE + path, headers=headers, timeout=60, **kwargs)


def _find_item(deployment, token: str, run_id: str, timeout: float = 120) -> dict:
    """The outbox item whose provenance names ``run_id`` (appears once the task's event is recorded)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = _api(deployment, "api/items", token, params={"limit": 200})
        assert r.status_code == 200, r.text
        for item in r.json()["items"]:
            if item["provenance"].get("source", {}).get("run_id") == run_id:
                return item
        time.sleep(1)
    raise AssertionError(f"no outbox item for run {run_id} after {timeout:.0f}s")


def _wait_item(deployment, token: str, item_id: int, state: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    item: dict = {}
    while time.monotonic() < deadline:
        item = _api(deployment, f"api/items/{item_id}", token).json()
        if item["state"] == state:
            return item
        time.sleep(1)
    raise AssertionError(f"item {item_id} not {state} after {timeout:.0f}s: {item}")


def _give_up_on(upstream, downstream, item_id: int, timeout: float = 180) -> dict:
    """Let the deployment's own delivery worker give up on the item, as it does once the retry
    horizon (3 days) has passed since the item was enqueued.

    The item is moved 4 days into the past (its ``created_at``, nothing else); at its next try the
    real worker gets the real 404 from the real downstream and marks it dead with that error.
    """
    import sqlite3

    from astro_xdeps.outbox import Outbox

    path = upstream.home / "xdeps_outbox.db"
    with Outbox.sqlite(path) as outbox:
        table = outbox.table_name
    db = sqlite3.connect(path, timeout=30)
    try:
        with db:
            db.execute(f"UPDATE {table} SET created_at = created_at - 4 * 86400 WHERE id = ?", (item_id,))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            row = db.execute(f"SELECT state FROM {table} WHERE id = ?", (item_id,)).fetchone()
            if row is not None and row[0] == "dead":
                with Outbox.sqlite(path) as outbox:
                    return dataclasses.asdict(outbox.get(item_id))
            time.sleep(1)
    finally:
        db.close()
    raise AssertionError(f"item {item_id} did not become dead after {timeout:.0f}s")


def _fetch_in_page(driver, path: str, body: dict) -> dict:
    """POST from the page itself, with whatever login cookie the browser holds."""
    return driver.execute_async_script(
        """
        const [path, body, done] = arguments;
        fetch(path, {method: "POST", credentials: "same-origin",
                     headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)})
          .then(async r => done({status: r.status, body: await r.text()}))
          .catch(e => done({status: -1, body: String(e)}));
        """,
        path,
        body,
    )


# -- the test -----------------------------------------------------------------------------------
def test_page_in_the_airflow_ui(upstream, downstream, browser) -> None:
    from selenium.webdriver.common.by import By

    # 1. Nobody who is not logged in sees anything, or can act.
    assert _api(upstream, "").status_code == 401
    for path in ("api/summary", "api/items", "api/relay", "api/graph"):
        assert _api(upstream, path).status_code == 401, path
        assert _api(upstream, path, token="not-a-jwt").status_code == 403, path
    assert _api(upstream, "api/retry", method="POST", json={"all_dead": True}).status_code == 401
    browser.delete_all_cookies()
    browser.get(upstream.url + PAGE)
    assert "Log in to Airflow first" in browser.page_source

    admin = upstream.login("admin")
    viewer = upstream.login("viewer")

    # 2. A real forwarding run: its outbox row is delivered.
    run_id = upstream.trigger("producer_dag", run_id=f"ui_{uuid.uuid4().hex[:8]}")
    assert upstream.wait_for_run("producer_dag", run_id)["state"] == "success"
    delivered = _wait_item(upstream, admin, _find_item(upstream, admin, run_id)["id"], "delivered")

    # 3. A real dead item: an asset downstream does not have, given up on by the worker.
    upstream.add_dag(DAGS_LATER / "ui_producer.py")
    upstream.wait_for_dag("ui_producer")
    dead_run = upstream.trigger("ui_producer", run_id=f"ui_dead_{uuid.uuid4().hex[:8]}")
    assert upstream.wait_for_run("ui_producer", dead_run)["state"] == "success"
    dead = _give_up_on(upstream, downstream, _find_item(upstream, admin, dead_run)["id"])
    assert "gave up after 72 h of retries" in dead["last_error"]
    dead = _api(upstream, f"api/items/{dead['id']}", admin).json()
    assert dead["last_error_plain"] == (
        f"gave up after 72 h of retries; last: downstream has no asset '{UI_BEARS}' yet: deploy a DAG there that uses it"
    )

    # 4. An admin logs in and opens Browse -> Cross-deployment: the page inside the Airflow UI.
    _login(browser, upstream, "admin")
    browser.get(upstream.url + "/plugin/xdeps")
    frame = _wait(
        browser,
        lambda d: next(
            (f for f in d.find_elements(By.TAG_NAME, "iframe") if PAGE in (f.get_attribute("src") or "")),
            False,
        ),
        what="the page's iframe in the Airflow UI",
    )
    browser.switch_to.frame(frame)
    _wait_loaded(browser)
    target_row = browser.find_element(By.CSS_SELECTOR, "tr[data-target='xdeps_default']")
    assert int(target_row.find_element(By.CSS_SELECTOR, "td[data-col='delivered']").text) >= 1
    assert int(target_row.find_element(By.CSS_SELECTOR, "td[data-col='dead']").text) >= 1
    items = browser.find_element(By.ID, "items-body")
    row = items.find_element(By.CSS_SELECTOR, f"tr[data-id='{delivered['id']}']")
    assert row.get_attribute("data-state") == "delivered"
    assert f"upstream / producer_dag.get_bear run {run_id}" in row.text
    dead_row = browser.find_element(By.CSS_SELECTOR, f"#dead-body tr[data-id='{dead['id']}']")
    assert f"downstream has no asset '{UI_BEARS}' yet" in dead_row.text and dead_run in dead_row.text
    assert dead_row.find_element(By.CSS_SELECTOR, "button.retry").is_enabled()
    # The relay's journal: the scheduler's listener fed it the producer's success.
    deadline = time.monotonic() + 60
    while run_id not in browser.find_element(By.ID, "relay-body").text and time.monotonic() < deadline:
        time.sleep(2)
        loaded_at = int(browser.find_element(By.TAG_NAME, "body").get_attribute("data-loaded"))
        browser.find_element(By.ID, "refresh").click()
        _wait_loaded(browser, after=loaded_at)
    assert run_id in browser.find_element(By.ID, "relay-body").text
    assert "no rule matched" in browser.find_element(By.ID, "relay-body").text
    DOCS.mkdir(exist_ok=True)
    browser.switch_to.default_content()
    browser.save_screenshot(str(DOCS / "ui-page.png"))

    # The graph, on the page itself: the producer's link is healthy, the missing asset's is dead.
    _open_page(browser, upstream)
    svg = browser.find_element(By.ID, "graph-svg")
    nodes = {g.get_attribute("data-id") for g in svg.find_elements(By.CSS_SELECTOR, "g.node")}
    assert {
        "dag:upstream:producer_dag",
        "dag:upstream:ui_producer",
        f"asset:{UI_BEARS}",
        "deployment:xdeps_default",
    } <= nodes
    healths = {p.get_attribute("data-health") for p in svg.find_elements(By.CSS_SELECTOR, "path.edge")}
    assert {"ok", "dead"} <= healths
    graph = browser.find_element(By.ID, "graph")
    browser.execute_script("arguments[0].scrollIntoView()", graph)
    graph.screenshot(str(DOCS / "ui-graph.png"))

    # 5. A viewer sees the dead item but may not retry it: the button is off, the API says 403.
    _login(browser, upstream, "viewer")
    _open_page(browser, upstream)
    dead_row = browser.find_element(By.CSS_SELECTOR, f"#dead-body tr[data-id='{dead['id']}']")
    assert not dead_row.find_element(By.CSS_SELECTOR, "button.retry").is_enabled()
    assert not browser.find_element(By.ID, "retry-all").is_enabled()
    refused = _fetch_in_page(browser, PAGE + "api/retry", {"ids": [dead["id"]]})
    assert refused["status"] == 403, refused
    assert _api(upstream, "api/retry", viewer, method="POST", json={"all_dead": True}).status_code == 403
    assert _api(upstream, f"api/items/{dead['id']}", viewer).json()["state"] == "dead"

    # 6. The asset is deployed downstream; an admin retries from the page; it is delivered.
    downstream.add_dag(DAGS_LATER / "ui_consumer.py")
    downstream.wait_for_dag("ui_consumer")
    _login(browser, upstream, "admin")
    _open_page(browser, upstream)
    loaded_at = int(browser.find_element(By.TAG_NAME, "body").get_attribute("data-loaded"))
    browser.find_element(By.CSS_SELECTOR, f"#dead-body tr[data-id='{dead['id']}'] button.retry").click()
    _wait(
        browser,
        lambda d: "1 item(s) queued" in d.find_element(By.ID, "banner").text,
        what="the retry's answer",
    )
    _wait_loaded(browser, after=loaded_at)
    _wait_item(upstream, admin, dead["id"], "delivered")
    deadline = time.monotonic() + 60
    events: list = []
    while time.monotonic() < deadline and not events:
        events = [
            e
            for e in downstream.asset_events(UI_BEARS)
            if e["extra"]["xdeps"]["source"]["run_id"] == dead_run
        ]
        time.sleep(1)
    assert len(events) == 1
    loaded_at = int(browser.find_element(By.TAG_NAME, "body").get_attribute("data-loaded"))
    browser.find_element(By.ID, "refresh").click()
    _wait_loaded(browser, after=loaded_at)
    row = browser.find_element(By.CSS_SELECTOR, f"#items-body tr[data-id='{dead['id']}']")
    assert row.get_attribute("data-state") == "delivered"

    # 7. `astro-xdeps graph` on each real deployment: what upstream sent, what downstream received.
    sent = run_cli("graph", env=upstream.env())
    assert sent.returncode == 0, sent.stderr
    line = next(x for x in sent.stdout.splitlines() if x.startswith("upstream / ui_producer -> "))
    assert line.startswith(f"upstream / ui_producer -> {UI_BEARS} -> xdeps_default  [OK: 1 delivered"), (
        sent.stdout
    )
    received = run_cli("graph", "--format", "text", env=downstream.env())
    assert received.returncode == 0, received.stderr
    assert (
        f"upstream / ui_producer -> {UI_BEARS} -> downstream / ui_consumer  [OK: 1 delivered"
        in received.stdout
    ), received.stdout + received.stderr
    mermaid = run_cli("graph", "--format", "mermaid", env=downstream.env())
    assert mermaid.returncode == 0 and mermaid.stdout.startswith("flowchart LR"), mermaid.stderr
    print(
        "\n--- astro-xdeps graph (upstream) ---\n" + sent.stdout + "--- (downstream) ---\n" + received.stdout
    )
    assert (DOCS / "ui-page.png").stat().st_size > 10_000 and (DOCS / "ui-graph.png").stat().st_size > 5_000
