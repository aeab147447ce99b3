"""The shipped alert rules and dashboard: valid for Prometheus, unit-tested, and built only
from metric names the code exports.

``promtool`` comes with Debian's ``prometheus`` package (.ci/run installs it). Without it
these tests skip, unless ``CI`` is set, where they fail.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import TEST_ADMIN_TOKEN
from webhooks import create_app
from worker.config import Settings

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "ops" / "prometheus" / "alerts.yml"
RULE_TESTS = REPO / "ops" / "prometheus" / "alerts.test.yml"
DASHBOARD = REPO / "ops" / "grafana" / "rewardrelay.json"
METRIC = re.compile(r"\brewardrelay_[a-z0-9_]+\b")


def _promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is missing: apt-get install -y prometheus")
        pytest.skip("promtool is not installed: apt-get install -y prometheus")
    return found


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_promtool(), *argv], capture_output=True, text=True, timeout=60, check=False
    )


def test_promtool_finds_no_problem_in_the_rules() -> None:
    result = _run("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_rules_unit_tests_pass() -> None:
    result = _run("test", "rules", str(RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_would_catch_a_broken_rule(tmp_path: Path) -> None:
    # The check above can fail: a rule whose threshold moved no longer meets its tests.
    broken = tmp_path / "alerts.yml"
    broken.write_text(RULES.read_text().replace("> 600", "> 60"))
    tests = tmp_path / "alerts.test.yml"
    tests.write_text(RULE_TESTS.read_text())
    result = _run("test", "rules", str(tests))
    assert result.returncode != 0


@pytest.fixture
def client(settings: Settings) -> Iterator[FlaskClient]:
    app = create_app(settings)
    yield app.test_client()
    app.extensions["rewardrelay"].redis.close()


def _exported(client: FlaskClient) -> set[str]:
    """Every sample name /metrics can show, from a real scrape with a lane paused and each
    labelled metric used once (labelled metrics show no sample before their first use)."""
    from worker import metrics

    auth = {"Authorization": f"Bearer {TEST_ADMIN_TOKEN}"}
    assert client.post("/lanes/ifeelgoods/pause", headers=auth).status_code == 200
    metrics.lane_transition("rewardops", "broken")
    metrics.observe_provider_call("rewardops", "delivered", 0.1)
    metrics.retry_scheduled("rewardops", "http_503")
    metrics.unit_terminal("fulfilled", "rewardops")
    names: set[str] = set()
    for family in text_string_to_metric_families(client.get("/metrics").get_data(as_text=True)):
        names.add(family.name)
        names.update(sample.name for sample in family.samples)
    return names


def test_the_rules_use_only_metric_names_the_code_exports(client: FlaskClient) -> None:
    exported = _exported(client)
    lines = [line for line in RULES.read_text().splitlines() if not line.lstrip().startswith("#")]
    used = set(METRIC.findall("\n".join(lines)))
    assert used, "the rules name no rewardrelay metric"
    assert used <= exported, f"not exported: {sorted(used - exported)}"


def test_the_dashboard_is_json_and_uses_only_exported_metrics(client: FlaskClient) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    used = {name for expr in exprs for name in METRIC.findall(expr)}
    exported = _exported(client)
    assert used and used <= exported, f"not exported: {sorted(used - exported)}"
