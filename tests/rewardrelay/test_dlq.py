"""``rewardrelay dlq`` drives the admin API's dead-letter endpoints."""

from __future__ import annotations

import json

from rewardrelay.cli import main

from .conftest import ADMIN_TOKEN, problem

LETTER = {
    "id": "evt_1:0:0",
    "event_id": "evt_1",
    "source": "coniq",
    "provider": "ifeelgoods",
    "product": "1/APP-ITU-10USD-US",
    "reason": "rejected",
    "error_type": "PermanentProviderError",
    "status_code": 422,
    "detail": "promotion closed",
    "attempts": 1,
    "created_at": 1795437040.1,
    "status": "waiting",
}


def test_list_passes_filters_and_prints_each_letter(cli_env, stub_server, capsys):
    # given
    stub_server.handler = lambda _r: (200, {"items": [LETTER], "count": 1})

    # when
    code = main(
        ["dlq", "list", "--provider", "ifeelgoods", "--reason", "rejected", "--since", "100",
         "--url", stub_server.url]
    )  # fmt: skip

    # then
    assert code == 0
    [request] = stub_server.requests
    assert request.path.startswith("/dead-letters?")
    assert "provider=ifeelgoods" in request.path and "reason=rejected" in request.path
    assert "since=100.0" in request.path
    assert request.headers["authorization"] == f"Bearer {ADMIN_TOKEN}"
    assert "evt_1:0:0" in capsys.readouterr().out


def test_replay_all_dry_run_posts_the_filter(cli_env, stub_server, capsys):
    # given
    stub_server.handler = lambda _r: (200, {"dry_run": True, "matched": 1, "replayed": ["a"]})

    # when
    code = main(["dlq", "replay", "--all", "--source", "coniq", "--dry-run", "--url",
                 stub_server.url])  # fmt: skip

    # then
    assert code == 0
    [request] = stub_server.requests
    assert (request.method, request.path) == ("POST", "/dead-letters/replay")
    assert json.loads(request.body) == {"source": "coniq", "dry_run": True}
    assert "would replay 1" in capsys.readouterr().out


def test_replay_one_that_was_already_handled_exits_1(cli_env, stub_server, capsys):
    # given
    stub_server.handler = lambda _r: problem(409, "dead-letter-not-waiting", "Already handled.")

    # when
    code = main(["dlq", "replay", "evt_1:0:0", "--url", stub_server.url])

    # then
    assert code == 1
    assert stub_server.requests[0].path == "/dead-letters/evt_1:0:0/replay"
    assert "409 dead-letter-not-waiting" in capsys.readouterr().err


def test_discard_sends_the_reason(cli_env, stub_server, capsys):
    # given
    stub_server.handler = lambda _r: (200, {"id": "evt_1:0:0", "status": "discarded"})

    # when
    code = main(["dlq", "discard", "evt_1:0:0", "--reason", "customer refunded", "--url",
                 stub_server.url])  # fmt: skip

    # then
    assert code == 0
    [request] = stub_server.requests
    assert request.method == "DELETE"
    assert json.loads(request.body) == {"reason": "customer refunded"}


def test_replay_needs_an_id_or_all(cli_env, capsys):
    # when
    code = main(["dlq", "replay"])

    # then
    assert code == 2
