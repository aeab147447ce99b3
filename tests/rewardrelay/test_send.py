"""``rewardrelay send`` posts a correctly signed Standard Webhooks request."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from standardwebhooks.webhooks import Webhook

from rewardrelay.cli import main
from rewardrelay.commands.send import sample_event
from webhooks.schemas import load_event

from .conftest import CONIQ_SECRET, EVENT_SECRET

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("source", "path", "secret"),
    [("coniq", "/webhooks/coniq", CONIQ_SECRET), ("internal", "/events", EVENT_SECRET)],
)
def test_posts_a_request_the_reference_verifier_accepts(
    cli_env, stub_server, capsys, source, path, secret
):
    # given
    stub_server.handler = lambda r: (202, {"status": "accepted", "id": json.loads(r.body)["id"]})

    # when
    code = main(["send", "--source", source, "--url", stub_server.url])

    # then
    assert code == 0
    [request] = stub_server.requests
    assert request.method == "POST"
    assert request.path == path
    assert request.headers["content-type"] == "application/json"
    verified = Webhook(secret).verify(request.body, request.headers)
    assert verified["id"] == request.headers["webhook-id"]
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "HTTP 202"
    assert lines[-1] == verified["id"]


@pytest.mark.parametrize("source", ["coniq", "internal"])
def test_sample_event_passes_the_edge_schema(source):
    # when
    event = load_event(source, sample_event(source))

    # then
    assert event.id.startswith("evt_")
    assert event.type == ("reward.issued" if source == "coniq" else "reward.granted")


def test_sample_coniq_event_names_offer_1001():
    # when
    event = sample_event("coniq")

    # then
    assert event["data"]["reward"]["offer_id"] == "1001"
    assert len(event["id"]) == len("evt_") + 26


def test_each_send_uses_a_fresh_event_id(cli_env, stub_server, capsys):
    # given
    stub_server.handler = lambda _r: (202, {"status": "accepted"})

    # when
    main(["send", "--url", stub_server.url])
    main(["send", "--url", stub_server.url])

    # then
    ids = [r.headers["webhook-id"] for r in stub_server.requests]
    assert len(set(ids)) == 2


def test_sends_the_given_file_under_its_own_id(cli_env, stub_server, tmp_path, capsys):
    # given
    event = sample_event("internal", "evt_from_file_1")
    path = tmp_path / "event.json"
    path.write_text(json.dumps(event))
    stub_server.handler = lambda _r: (200, {"status": "duplicate"})

    # when
    code = main(["send", "--source", "internal", "--url", stub_server.url, "--file", str(path)])

    # then
    assert code == 0
    [request] = stub_server.requests
    assert json.loads(request.body) == event
    assert request.headers["webhook-id"] == "evt_from_file_1"
    assert capsys.readouterr().out.strip().splitlines()[-1] == "evt_from_file_1"


@pytest.mark.parametrize(
    ("name", "path"),
    [
        ("internal-reward-granted.json", "/events"),
        ("coniq-reward-issued.json", "/webhooks/coniq"),
    ],
)
def test_a_file_without_source_goes_to_the_endpoint_its_type_belongs_to(
    cli_env, stub_server, name, path
):
    # given an example file and no --source
    stub_server.handler = lambda r: (202, {"status": "accepted", "id": json.loads(r.body)["id"]})

    # when it is sent
    code = main(["send", "--url", stub_server.url, "--file", str(REPO / "examples" / name)])

    # then a reward.granted goes to /events (internal), anything else to Coniq's endpoint
    assert code == 0
    [request] = stub_server.requests
    assert request.path == path


def test_exits_non_zero_on_a_refused_event(cli_env, stub_server, capsys):
    # given
    stub_server.handler = lambda _r: (401, {"type": "signature-invalid", "status": 401})

    # when
    code = main(["send", "--url", stub_server.url])

    # then
    out = capsys.readouterr().out.strip().splitlines()
    assert code == 1
    assert out[0] == "HTTP 401"
    assert out[-1].startswith("evt_")


def test_signs_with_the_data_dir_secret_when_none_is_set(clean_env, stub_server, capsys):
    # given
    from rewardrelay.datadir import DataDir

    stub_server.handler = lambda _r: (202, {"status": "accepted"})

    # when
    code = main(["send", "--url", stub_server.url])

    # then
    secret = DataDir(clean_env).secrets().first_secret("CONIQ_WEBHOOK_SECRETS")
    [request] = stub_server.requests
    assert code == 0
    Webhook(secret).verify(request.body, request.headers)


def test_send_loads_none_of_the_edge_or_worker_frameworks(cli_env, stub_server):
    # given a fresh interpreter (what a `rewardrelay send` is)
    stub_server.handler = lambda _r: (202, {"status": "accepted"})
    script = (
        "import sys\n"
        "from rewardrelay.cli import main\n"
        f"code = main(['send', '--url', {stub_server.url!r}])\n"
        "heavy = ('flask', 'celery', 'kombu', 'sentry_sdk', 'marshmallow', 'redis', 'webhooks')\n"
        "print(sorted(m for m in heavy if m in sys.modules), code)\n"
    )

    # when
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip

    # then the signed request went out without importing any of them (they cost ~0.5 s)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[] 0"
    assert len(stub_server.requests) == 1
