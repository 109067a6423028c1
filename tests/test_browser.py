"""The test bench in a real browser: headless Chromium (Debian's) driven by Selenium.

It clicks through what a person would: pick a patient, sign an order, read the
cards, open the questionnaire, answer it, sign again and see the decision
change; accept a suggestion; override a warning. Authentication is on, so every
call the page makes carries a signed JWT. Screenshots are saved under
tests/artifacts/ as test artifacts.
"""

from __future__ import annotations

import os
import re
import shutil
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from werkzeug.serving import make_server

from cds_server.web.app import create_app

ARTIFACTS = Path(__file__).parent / "artifacts"
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
NOW = datetime(
    2024, 12, 31, 15, 0, tzinfo=UTC
)  # after every scenario the bench opens: orders are decided as of their own date


def _browser_available() -> bool:
    return Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists() and shutil.which("chromedriver") is not None


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Flask]]:
    tmp = tmp_path_factory.mktemp("bench")
    app = create_app(
        {
            "DATABASE_URL": f"sqlite:///{tmp / 'bench.sqlite'}",
            "CLOCK": lambda: NOW,
            "AUTH_REQUIRED": True,
            "DEMO_ENABLED": True,
            "DEMO_KEY_FILE": str(tmp / "demo.pem"),
        }
    )
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", app
    server.shutdown()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not _browser_available():
        message = "Debian chromium and chromium-driver are not installed (apt-get install chromium chromium-driver)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        "--window-size=1280,2200",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # the console, for the no-errors test
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def wait_for(driver: Any, condition: Any, timeout: float = 20) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(condition)


def text_in(element_id: str, text: str) -> Any:
    from selenium.webdriver.common.by import By

    def check(driver: Any) -> bool:
        return text in driver.find_element(By.ID, element_id).text

    return check


def shot(driver: Any, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    driver.save_screenshot(str(ARTIFACTS / f"{name}.png"))


def open_bench(driver: Any, base: str, scenario: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    driver.get(f"{base}/demo/")
    wait_for(driver, text_in("status", "Loaded"))
    Select(driver.find_element(By.ID, "scenario")).select_by_value(scenario)
    wait_for(driver, text_in("status", f"Loaded {scenario}"))


def sign(driver: Any) -> None:
    from selenium.webdriver.common.by import By

    driver.find_element(By.ID, "sign").click()
    wait_for(driver, text_in("status", "Answered"))


def _open_count(name: str) -> str:
    """ "N answers" as the card counts them: the questions the questionnaire still requires."""
    from cds_server.carepath_store import load_carepaths
    from cds_server.pipeline.dtr_response import open_questions
    from cds_server.scenarios import SCENARIO_DIR, load_scenario, run_scenario

    (decision,) = run_scenario(load_scenario(SCENARIO_DIR / f"{name}.json"), load_carepaths())
    n = len(open_questions(decision))
    assert n, "the scenario still needs answers"
    return f"{n} answer{'s' if n != 1 else ''}"


def test_the_documentation_loop_in_the_browser(browser: Any, live: tuple[str, Flask]) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    base, _ = live
    open_bench(browser, base, "mri/conservative-care-exactly-42-days")
    assert "Client authentication on" in browser.find_element(By.ID, "auth-mode").text
    sign(browser)
    assert "documentation needed" in browser.find_element(By.ID, "coverage").text
    cards = browser.find_elements(By.CSS_SELECTOR, "#cards .card")
    assert cards and f"{_open_count('mri/conservative-care-exactly-42-days')} needed for prior" in cards[0].text
    assert "info" in cards[0].get_attribute("class")
    assert cards[0].find_elements(By.CSS_SELECTOR, "a[href*='/determinations/']"), "the card's markdown link is a link"
    assert "](" not in cards[0].text, "no raw markdown"
    shot(browser, "1-documentation-needed")

    browser.find_element(By.ID, "open-questionnaire").click()
    wait_for(browser, lambda d: d.find_elements(By.ID, "dtr-form"))
    assert browser.find_element(By.ID, "q-cc.pt.completed").get_attribute("value") == "true", "pre-filled"
    weeks = browser.find_element(By.ID, "q-cc.weeks")
    weeks.clear()
    weeks.send_keys("8")
    Select(browser.find_element(By.ID, "q-mri.contraindication")).select_by_value("none")
    shot(browser, "2-questionnaire")
    browser.find_element(By.ID, "submit-answers").click()
    wait_for(browser, text_in("coverage", "Prior authorization satisfied"))
    assert "approved, prior authorization PA-" in browser.find_element(By.ID, "cards").text
    shot(browser, "3-authorized")
    raw = browser.find_element(By.ID, "raw-response").get_attribute("textContent")
    assert "satisfied-pa-id" in raw
    link = browser.find_element(By.ID, "decision").get_attribute("href")
    assert "/determinations/ca-" in link


def test_the_adaptive_form_asks_step_by_step_and_its_answers_decide(browser: Any, live: tuple[str, Flask]) -> None:
    """The bench's adaptive form ($next-question): asks what is open, pre-filled, then says it is settled."""
    from selenium.webdriver.common.by import By

    base, _ = live
    open_bench(browser, base, "mri/conservative-care-exactly-42-days")
    sign(browser)
    browser.find_element(By.ID, "open-adaptive").click()
    wait_for(browser, lambda d: d.find_elements(By.ID, "adaptive-next"))
    assert browser.find_element(By.ID, "q-cc.weeks").get_attribute("value") == "", "6.0 weeks is a lower bound: asked"
    assert browser.find_element(By.ID, "q-cc.pt.start-date").get_attribute("value"), "pre-filled from the record"
    assert not browser.find_elements(By.ID, "q-rf.hoffmann"), "red flags are settled by the record: not asked"
    weeks = browser.find_element(By.ID, "q-cc.weeks")
    weeks.clear()
    weeks.send_keys("8")
    browser.find_element(By.ID, "adaptive-next").click()
    wait_for(browser, lambda d: d.find_elements(By.ID, "adaptive-done"))
    shot(browser, "4-adaptive-settled")
    browser.find_element(By.ID, "adaptive-sign").click()
    wait_for(browser, text_in("coverage", "Prior authorization satisfied"))


def test_accepting_a_suggestion_and_overriding_a_warning_send_feedback(browser: Any, live: tuple[str, Flask]) -> None:
    from selenium.webdriver.common.by import By

    base, app = live
    store = app.extensions["cds"].store
    before = store.count("feedback")
    open_bench(browser, base, "esi/no-mri-documentation-needed")
    sign(browser)
    browser.find_element(By.CSS_SELECTOR, "#cards button.suggestion").click()
    wait_for(browser, text_in("status", "Suggestion accepted"))
    assert "72141" in browser.find_element(By.ID, "orders").text, "the companion MRI order was added"
    shot(browser, "4-suggestion-accepted")

    open_bench(browser, base, "ct-ctm/ct-plain-no-qualifying-reason-not-met")
    sign(browser)
    warning = browser.find_element(By.CSS_SELECTOR, "#cards .card.warning")
    assert "not approved" in warning.text
    warning.find_element(By.CSS_SELECTOR, "button.override").click()
    wait_for(browser, text_in("status", "Feedback sent (overridden)"))
    shot(browser, "5-overridden")
    assert store.count("feedback") == before + 2


def test_card_markdown_cannot_inject_markup(browser: Any, live: tuple[str, Flask]) -> None:
    base, _ = live
    browser.get(f"{base}/demo/")
    wait_for(browser, text_in("status", "Loaded"))
    html = browser.execute_script("return renderMarkdown('<img src=x onerror=alert(1)> **bold** \\\\_x\\\\_ - item')")
    assert "<img" not in html and "&lt;img" in html and "<strong>bold</strong>" in html


def test_the_bench_has_a_favicon_no_console_error_and_reaches_the_raw_exchange(
    browser: Any, live: tuple[str, Flask]
) -> None:
    from selenium.webdriver.common.by import By

    base, _ = live
    browser.get_log("browser")  # drop what earlier tests left
    open_bench(browser, base, "mri/conservative-care-exactly-42-days")
    sign(browser)
    icon = browser.execute_script("return document.querySelector('link[rel~=icon]').href")
    assert icon.startswith("data:image/svg+xml"), "an inline icon: the browser asks for no /favicon.ico"
    errors = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert errors == [], errors
    browser.execute_script("window.scrollTo(0, 0)")
    link = browser.find_element(By.ID, "show-raw")
    assert link.is_displayed()
    link.click()
    wait_for(browser, lambda d: d.find_element(By.ID, "raw-response").is_displayed())
    assert browser.find_element(By.ID, "raw-request").is_displayed()
    assert '"hookInstance"' in browser.find_element(By.ID, "raw-request").text
    assert "coverage-information" in browser.find_element(By.ID, "raw-response").text
    top = browser.execute_script("return document.getElementById('raw-exchange').getBoundingClientRect().top")
    assert 0 <= top < browser.execute_script("return window.innerHeight"), "scrolled to the panel"
    shot(browser, "4-raw-exchange")


def test_the_service_works_offline_without_cdn(live: tuple[str, Flask]) -> None:
    base, app = live
    client = app.test_client()
    with client.get("/demo/") as response:
        page = response.get_data(as_text=True)
    assert not re.search(r'(src|href)="(https?:)?//', page), "every asset is served by the service itself"
    with client.get("/demo/static/app.js") as response:
        script = response.get_data(as_text=True)
    assert not re.search(r"(fetch|import)\(\s*[\"'`](https?:)?//", script), "the script calls only this service"
