"""The dead-letter console in a real headless browser (Debian's chromium + chromedriver,
driven by Selenium), against a real stack: sign in, filter, open a dead letter, replay it
once the provider's fault is cleared, and see the unit fulfilled.

Nothing is downloaded at run time: the system chromedriver and chromium are named
explicitly, so Selenium Manager is never asked for a driver. Without chromium the test is
skipped, unless ``CI`` is set (CI installs it: see .ci/run), where it fails.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import TEST_ADMIN_TOKEN
from tests.integration.conftest import Stack, coniq_reward

pytestmark = pytest.mark.integration

CHROMIUM = Path(os.environ.get("RR_TEST_CHROMIUM", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("RR_TEST_CHROMEDRIVER", "/usr/bin/chromedriver"))
REDEMPTIONS = "/fulfillment/v2/promotions/*/redemptions/actions/redeem"  # create-and-redeem
WAIT_SECONDS = 20.0
INSTALL = "apt-get install -y chromium chromium-driver"


@pytest.fixture
def browser(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} or {CHROMEDRIVER} missing: {INSTALL}")
        pytest.skip(f"chromium is not installed: {INSTALL}")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    # Never let Selenium Manager look for (or download) a driver or a browser.
    monkeypatch.setenv("SE_OFFLINE", "true")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless=new",
        "--no-sandbox",  # root in a container has no user namespaces for the sandbox
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--no-first-run",
        "--window-size=1280,900",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        options.add_argument(argument)
    service = Service(executable_path=str(CHROMEDRIVER), log_output=str(tmp_path / "driver.log"))
    driver = webdriver.Chrome(service=service, options=options)
    driver.set_page_load_timeout(WAIT_SECONDS)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(tmp_path / "chromium-profile", ignore_errors=True)


def _wait_for(condition: Any, what: str) -> Any:
    """Poll ``condition`` (a page may still be loading: stale elements are retried)."""
    from selenium.common.exceptions import WebDriverException

    deadline = time.time() + WAIT_SECONDS
    while time.time() < deadline:
        try:
            result = condition()
        except WebDriverException:
            result = None
        if result:
            return result
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_operator_signs_in_filters_and_replays_a_dead_letter_to_fulfilment(
    make_stack: Any, ifeelgoods: Any, browser: Any
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    # given two dead letters: one refused by Ifeelgoods (while it fails), one unroutable
    stack: Stack = make_stack()
    ifeelgoods.set_faults(
        {"method": "POST", "path": REDEMPTIONS, "kind": "permanent", "status": 422}
    )
    refused, unroutable = coniq_reward(), coniq_reward(offer_id="no-such-offer")
    for event in (refused, unroutable):
        assert stack.send(event).status_code == 202
    assert stack.wait_terminal(refused["id"])["units"][0]["state"] == "dead_lettered"
    assert stack.wait_terminal(unroutable["id"])["units"][0]["state"] == "unroutable"
    letter_id = f"{refused['id']}:0:0"
    driver = browser

    # when the operator opens the console: sent to the sign-in form
    driver.get(stack.edge_url + "/admin/dead-letters")
    assert "/admin/sign-in" in driver.current_url

    # then a wrong token is refused
    driver.find_element(By.ID, "token").send_keys("not-the-admin-token-000")
    driver.find_element(By.CSS_SELECTOR, "form.card button[type=submit]").click()
    _wait_for(lambda: "That token is not the admin token." in driver.page_source, "a refusal")
    assert "/admin/sign-in" in driver.current_url

    # when the right token is given: the list, with a Secure, HttpOnly session cookie
    driver.find_element(By.ID, "token").send_keys(TEST_ADMIN_TOKEN)
    driver.find_element(By.CSS_SELECTOR, "form.card button[type=submit]").click()
    _wait_for(lambda: driver.current_url.endswith("/admin/dead-letters"), "the list")
    [cookie] = [c for c in driver.get_cookies() if c["name"] == "rr_console"]
    assert cookie["secure"] and cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert TEST_ADMIN_TOKEN not in cookie["value"]
    _wait_for(
        lambda: len(driver.find_elements(By.CSS_SELECTOR, "table.letters tbody tr")) == 2,
        "both letters listed",
    )

    # and filtered by provider: only the Ifeelgoods letter is left
    Select(driver.find_element(By.NAME, "provider")).select_by_value("ifeelgoods")
    driver.find_element(By.CSS_SELECTOR, "form.filters button[type=submit]").click()

    def listed() -> list[str]:
        rows = driver.find_elements(By.CSS_SELECTOR, "table.letters tbody tr")
        return [r.find_element(By.TAG_NAME, "a").text for r in rows]

    _wait_for(lambda: "provider=ifeelgoods" in driver.current_url, "the filtered list")
    _wait_for(lambda: listed() == [letter_id], "only the Ifeelgoods letter")

    # when the letter is opened: its reason and attempt history
    driver.find_element(By.LINK_TEXT, letter_id).click()
    _wait_for(lambda: "Attempts" in driver.page_source, "the letter page")
    assert "ifeelgoods" in driver.page_source
    attempts = driver.find_elements(By.CSS_SELECTOR, "table.attempts tbody tr")
    assert len(attempts) == 1 and "dead_letter" in attempts[0].text

    # then a replay whose form lost its CSRF token is refused and changes nothing
    driver.find_element(By.LINK_TEXT, "Replay…").click()
    _wait_for(lambda: "Yes, replay" in driver.page_source, "the confirmation")
    driver.execute_script("document.querySelector('main form input[name=csrf_token]').remove()")
    driver.find_element(By.XPATH, "//button[text()='Yes, replay']").click()
    _wait_for(lambda: "Form refused" in driver.page_source, "the CSRF refusal")
    letter = stack.dead_letters.get(letter_id)
    assert letter is not None and letter.status.value == "waiting"

    # when the fault is cleared and the operator confirms the replay
    ifeelgoods.clear_faults()
    driver.get(f"{stack.edge_url}/admin/dead-letters/{letter_id}/replay")
    _wait_for(lambda: "Yes, replay" in driver.page_source, "the confirmation")
    driver.find_element(By.XPATH, "//button[text()='Yes, replay']").click()
    _wait_for(lambda: f"Replayed {letter_id}" in driver.page_source, "the event page")
    assert "/admin/events?event_id=" in driver.current_url

    # then the event page shows the unit fulfilled (a worker picked it up)
    def fulfilled() -> bool:
        driver.refresh()
        states = driver.find_elements(By.CSS_SELECTOR, "td.unit-state")
        return [s.text for s in states] == ["fulfilled"]

    _wait_for(fulfilled, "the unit to be fulfilled")
    assert "state-fulfilled" in driver.find_element(
        By.CSS_SELECTOR, "dd.event-state"
    ).get_attribute("class")
    # and only the unroutable letter is still waiting
    driver.find_element(By.LINK_TEXT, "Dead letters").click()
    _wait_for(
        lambda: len(driver.find_elements(By.CSS_SELECTOR, "table.letters tbody tr")) == 1,
        "a list of one",
    )
