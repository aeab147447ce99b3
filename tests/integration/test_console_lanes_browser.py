"""The console's lanes page in a real headless browser against a real stack: pause a
provider behind the confirmation, see its units wait with no provider call, resume it and
see them fulfilled. Same browser set-up (and skip/fail rule) as test_console_browser.py.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.conftest import TEST_ADMIN_TOKEN
from tests.integration.conftest import Stack, coniq_reward
from tests.integration.test_console_browser import _wait_for, browser  # noqa: F401
from worker.stores.lanes import LaneStore

pytestmark = pytest.mark.integration


def _lane_row(driver: Any, provider: str) -> str:
    from selenium.webdriver.common.by import By

    for row in driver.find_elements(By.CSS_SELECTOR, "table.lanes tbody tr"):
        if row.text.startswith(provider):
            return str(row.text)
    return ""


def test_operator_pauses_and_resumes_a_lane_from_the_console(
    make_stack: Any,
    ifeelgoods: Any,
    browser: Any,  # noqa: F811
) -> None:
    from selenium.webdriver.common.by import By

    stack: Stack = make_stack()
    lanes = LaneStore(stack.redis, stack.keys)
    driver = browser

    # given an operator signed in to the console, on the Lanes page
    driver.get(stack.edge_url + "/admin/lanes")
    driver.find_element(By.ID, "token").send_keys(TEST_ADMIN_TOKEN)
    driver.find_element(By.CSS_SELECTOR, "form.card button[type=submit]").click()
    _wait_for(lambda: driver.current_url.endswith("/admin/lanes"), "the lanes page")
    _wait_for(lambda: "open" in _lane_row(driver, "ifeelgoods"), "ifeelgoods open")

    # when they pause Ifeelgoods, confirming with a reason
    driver.find_element(By.CSS_SELECTOR, 'a[href="/admin/lanes/ifeelgoods/pause"]').click()
    _wait_for(lambda: "Pause the" in driver.page_source, "the confirmation")
    driver.find_element(By.ID, "reason").send_keys("vendor maintenance")
    driver.find_element(By.CSS_SELECTOR, "main form button[type=submit]").click()
    _wait_for(lambda: "paused" in _lane_row(driver, "ifeelgoods"), "ifeelgoods paused")
    assert "vendor maintenance" in _lane_row(driver, "ifeelgoods")

    # then rewards for it wait, and the provider is not called
    events = [coniq_reward() for _ in range(3)]
    for event in events:
        assert stack.send(event).status_code == 202
    deadline = time.time() + 20
    while lanes.view("ifeelgoods").waiting < len(events):
        assert time.time() < deadline, stack.worker_logs()[-3000:]
        time.sleep(0.1)
    assert ifeelgoods.counters()["requests"] == 0
    driver.get(stack.edge_url + "/admin/lanes")
    assert " 3 " in f" {_lane_row(driver, 'ifeelgoods')} "

    # when they resume it
    driver.find_element(By.CSS_SELECTOR, 'a[href="/admin/lanes/ifeelgoods/resume"]').click()
    _wait_for(lambda: "Resume the" in driver.page_source, "the confirmation")
    driver.find_element(By.CSS_SELECTOR, "main form button[type=submit]").click()
    _wait_for(lambda: "open" in _lane_row(driver, "ifeelgoods"), "ifeelgoods open again")

    # then every reward is fulfilled, and the audit log names the console
    for event in events:
        assert stack.wait_terminal(event["id"])["units"][0]["state"] == "fulfilled"
    assert [(e["action"], e["by"]) for e in lanes.audit_log()] == [
        ("resume", "console"),
        ("pause", "console"),
    ]
