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


ATTEMPTS = [
    {"at": 1795437040.1234, "attempt": 1, "duration_ms": 3, "error_type": "PermanentProviderError",
     "mode": "submit", "outcome": "dead_letter", "reason": "rejected", "status_code": 422,
     "task_id": "84447b18-ec82-4676-9109-34eee59613c1"},
]  # fmt: skip


def test_list_prints_a_header_and_each_field_once(cli_env, stub_server, capsys):
    # given a letter whose detail only repeats its reason (what the worker stores today)
    letter = {**LETTER, "detail": "rejected"}
    stub_server.handler = lambda _r: (200, {"items": [letter], "count": 1})

    # when
    main(["dlq", "list", "--url", stub_server.url])

    # then
    header, row, total = capsys.readouterr().out.strip().splitlines()
    assert header.split() == [
        "ID", "CREATED", "(UTC)", "SOURCE", "PROVIDER", "REASON", "HTTP", "ATTEMPTS", "DETAIL",
    ]  # fmt: skip
    assert row.split() == [
        "evt_1:0:0", "2026-11-23T12:30:40Z", "coniq", "ifeelgoods", "rejected", "422", "1", "-",
    ]  # fmt: skip
    assert row.index("rejected") == header.index("REASON")
    assert total == "1 dead letter(s)"


def test_list_shows_a_detail_that_says_more_than_the_reason(cli_env, stub_server, capsys):
    # given
    stub_server.handler = lambda _r: (200, {"items": [LETTER], "count": 1})

    # when
    main(["dlq", "list", "--url", stub_server.url])

    # then
    row = capsys.readouterr().out.splitlines()[1]
    assert row.endswith("promotion closed")


def test_show_prints_attempts_as_a_table_with_utc_times(cli_env, stub_server, capsys):
    # given
    stub_server.handler = lambda _r: (200, {**LETTER, "attempts": ATTEMPTS})

    # when
    code = main(["dlq", "show", "evt_1:0:0", "--url", stub_server.url])

    # then
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert code == 0
    assert "created_at   2026-11-23T12:30:40Z" in lines
    assert "attempts     1" in lines
    header = next(line for line in lines if line.strip().startswith("#"))
    assert header.split() == ["#", "AT", "(UTC)", "MODE", "OUTCOME", "REASON", "HTTP", "MS", "TASK"]
    row = lines[lines.index(header) + 1].split()
    assert row[:6] == ["1", "2026-11-23T12:30:40.123Z", "submit", "dead_letter", "rejected", "422"]
    assert "1795437040" not in out and "{" not in out


def test_show_json_keeps_the_api_answer_and_ends_with_a_newline(cli_env, stub_server, capsys):
    # given
    stub_server.handler = lambda _r: (200, {**LETTER, "attempts": ATTEMPTS})

    # when
    main(["dlq", "show", "evt_1:0:0", "--json", "--url", stub_server.url])

    # then
    out = capsys.readouterr().out
    assert json.loads(out) == {**LETTER, "attempts": ATTEMPTS}
    assert out.endswith("}\n") and not out.endswith("\n\n")


def test_list_json_ends_with_a_newline(cli_env, stub_server, capsys):
    # given
    stub_server.handler = lambda _r: (200, {"items": [LETTER], "count": 1})

    # when
    main(["dlq", "list", "--json", "--url", stub_server.url])

    # then
    out = capsys.readouterr().out
    assert json.loads(out)["count"] == 1
    assert out.endswith("}\n") and not out.endswith("\n\n")
