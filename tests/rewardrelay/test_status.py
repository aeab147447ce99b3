"""``rewardrelay status``: exit 0 when done, 1 when failed, 3 while in progress."""

from __future__ import annotations

import json

import pytest

from rewardrelay.cli import main

from .conftest import ADMIN_TOKEN, problem


def _fulfillment(*states: str) -> dict:
    return {
        "event_id": "evt_1",
        "source": "coniq",
        "type": "reward.issued",
        "received_at": 1795437040.1,
        "state": "in_progress",
        "units": [
            {
                "id": f"evt_1:0:{index}",
                "state": state,
                "attempts": 1,
                "provider": "ifeelgoods",
                "provider_ref": "R-1" if state == "fulfilled" else None,
                "codes": ["****1234"] if state == "fulfilled" else [],
                "last_error": {"detail": "HTTP 503"} if state == "retrying" else {},
                "next_attempt_at": None,
                "dead_letter_id": f"evt_1:0:{index}" if state == "dead_lettered" else None,
            }
            for index, state in enumerate(states)
        ],
    }


@pytest.mark.parametrize(
    ("states", "expected"),
    [
        (("fulfilled",), 0),
        (("fulfilled", "ignored"), 0),
        (("fulfilled", "dead_lettered"), 1),
        (("unroutable",), 1),
        (("retrying", "dead_lettered"), 1),
        (("fulfilled", "retrying"), 3),
        (("pending",), 3),
        (("awaiting_delivery",), 3),
    ],
)
def test_exit_code_follows_the_units(cli_env, stub_server, capsys, states, expected):
    # given
    stub_server.handler = lambda _r: (200, _fulfillment(*states))

    # when
    code = main(["status", "evt_1", "--url", stub_server.url])

    # then
    assert code == expected
    [request] = stub_server.requests
    assert request.path == "/fulfillments/evt_1"
    assert request.headers["authorization"] == f"Bearer {ADMIN_TOKEN}"
    out = capsys.readouterr().out
    for index, state in enumerate(states):
        assert f"evt_1:0:{index}  {state}" in out


def test_wait_polls_until_terminal(cli_env, stub_server, capsys):
    # given
    answers = iter([_fulfillment("pending"), _fulfillment("submitting")])
    stub_server.handler = lambda _r: (200, next(answers, _fulfillment("fulfilled")))

    # when
    code = main(["status", "evt_1", "--wait", "10", "--url", stub_server.url])

    # then
    assert code == 0
    assert len(stub_server.requests) == 3


def test_wait_gives_up_with_3_while_still_in_progress(cli_env, stub_server, capsys):
    # given
    stub_server.handler = lambda _r: (200, _fulfillment("retrying"))

    # when
    code = main(["status", "evt_1", "--wait", "0.6", "--url", stub_server.url])

    # then
    assert code == 3
    assert len(stub_server.requests) >= 2


def test_json_prints_the_api_answer(cli_env, stub_server, capsys):
    # given
    stub_server.handler = lambda _r: (200, _fulfillment("fulfilled"))

    # when
    code = main(["status", "evt_1", "--json", "--url", stub_server.url])

    # then
    assert code == 0
    assert json.loads(capsys.readouterr().out) == _fulfillment("fulfilled")


def test_unknown_event_prints_the_problem_and_exits_4(cli_env, stub_server, capsys):
    # given
    stub_server.handler = lambda _r: problem(404, "event-not-found", "No accepted event.")

    # when
    code = main(["status", "evt_404", "--url", stub_server.url])

    # then
    err = capsys.readouterr().err.strip()
    assert code == 4
    assert err == "rewardrelay: HTTP 404 event-not-found: No accepted event."


def test_unreachable_receiver_exits_4(cli_env, capsys):
    # when
    code = main(["status", "evt_1", "--url", "http://127.0.0.1:9"])

    # then
    assert code == 4
    assert "cannot reach" in capsys.readouterr().err


def test_wait_reports_each_state_change_on_stderr(cli_env, stub_server, capsys):
    # given the units move pending → pending → submitting → fulfilled
    answers = iter([_fulfillment("pending"), _fulfillment("pending"), _fulfillment("submitting")])
    stub_server.handler = lambda _r: (200, next(answers, _fulfillment("fulfilled")))

    # when
    code = main(["status", "evt_1", "--wait", "10", "--url", stub_server.url])

    # then one line per change (not per poll), and stdout keeps only the final state
    captured = capsys.readouterr()
    changes = [line.split("] ", 1)[1] for line in captured.err.strip().splitlines()]
    assert code == 0
    assert changes == ["evt_1:0:0 pending", "evt_1:0:0 submitting", "evt_1:0:0 fulfilled"]
    assert all(line.startswith("rewardrelay: [") for line in captured.err.strip().splitlines())
    assert "pending" not in captured.out


def test_without_wait_nothing_goes_to_stderr(cli_env, stub_server, capsys):
    # given
    stub_server.handler = lambda _r: (200, _fulfillment("pending"))

    # when
    main(["status", "evt_1", "--url", stub_server.url])

    # then
    assert capsys.readouterr().err == ""


def test_json_output_ends_with_one_newline(cli_env, stub_server, capsys):
    # given
    stub_server.handler = lambda _r: (200, _fulfillment("fulfilled"))

    # when
    main(["status", "evt_1", "--json", "--url", stub_server.url])

    # then
    out = capsys.readouterr().out
    assert out.endswith("}\n") and not out.endswith("\n\n")


def test_event_ids_are_percent_encoded_in_the_url(cli_env, stub_server, capsys):
    # when
    main(["status", "evt_a/b#c?d%e", "--url", stub_server.url])

    # then
    assert stub_server.requests[0].path == "/fulfillments/evt_a%2Fb%23c%3Fd%25e"


@pytest.mark.parametrize(
    ("event_id", "path"), [("..", "/fulfillments/%2E%2E"), (".", "/fulfillments/%2E")]
)
def test_an_id_that_is_a_dot_segment_is_not_resolved_away(
    cli_env, stub_server, capsys, event_id, path
):
    # given an accepted event whose id is "." or ".." (printable ASCII: the edge takes it,
    # and its Location quotes the dots)
    stub_server.handler = lambda _r: (200, _fulfillment("fulfilled"))

    # when
    main(["status", event_id, "--url", stub_server.url])

    # then the request names that event, not the parent of /fulfillments/
    assert stub_server.requests[0].path == path
