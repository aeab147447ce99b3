"""Numeric options and dead-letter ids the parser refuses: exit 2, one error line naming
the option and what it takes, before anything is sent or started."""

from __future__ import annotations

import pytest

from rewardrelay.cli import build_parser
from rewardrelay.commands.dlq import DEAD_LETTER_LIMIT_MAX
from webhooks.admin import BULK_REPLAY_MAX

SECONDS_OR_ZERO = "must be a number of seconds, 0 or more"
SECONDS = "must be a number of seconds, above 0"
LIMIT = f"must be a whole number from 1 to {DEAD_LETTER_LIMIT_MAX}"
PORT = "must be a port number from 1 to 65535"
NOT_AN_ID = "is not a dead-letter id: one is EVENT_ID:LINE:INDEX"

REFUSED = [
    (["status", "evt_1", "--wait", "-5"], f"argument --wait: {SECONDS_OR_ZERO}, got '-5'"),
    (["status", "evt_1", "--wait", "nan"], f"argument --wait: {SECONDS_OR_ZERO}, got 'nan'"),
    (["status", "evt_1", "--wait", "inf"], f"argument --wait: {SECONDS_OR_ZERO}, got 'inf'"),
    (["dlq", "list", "--limit", "0"], f"argument --limit: {LIMIT}, got '0'"),
    (["dlq", "list", "--limit", "-3"], f"argument --limit: {LIMIT}, got '-3'"),
    (["dlq", "list", "--limit", "1001"], f"argument --limit: {LIMIT}, got '1001'"),
    (["dlq", "list", "--limit", "ten"], f"argument --limit: {LIMIT}, got 'ten'"),
    (["dlq", "replay", "--all", "--limit", "0"], f"argument --limit: {LIMIT}, got '0'"),
    (["run", "--port", "0"], f"argument --port: {PORT}, got '0'"),
    (["run", "--port", "65536"], f"argument --port: {PORT}, got '65536'"),
    (["run", "--flower-port", "-1"], f"argument --flower-port: {PORT}, got '-1'"),
    (
        ["sandbox", "ifeelgoods", "--port", "70000"],
        "argument --port: must be a port number from 0 to 65535 (0: a free one), got '70000'",
    ),
    (
        ["connect", "orders-platform", "--timeout", "0"],
        f"argument --timeout: {SECONDS}, got '0'",
    ),
    (
        ["connect", "orders-platform", "--timeout", "-1"],
        f"argument --timeout: {SECONDS}, got '-1'",
    ),
    (["dlq", "show", "evt_1"], f"argument id: 'evt_1' {NOT_AN_ID}"),
    (["dlq", "show", "evt_1:0"], f"argument id: 'evt_1:0' {NOT_AN_ID}"),
    (["dlq", "show", "evt_1:a:0"], f"argument id: 'evt_1:a:0' {NOT_AN_ID}"),
    (["dlq", "replay", ":0:1"], f"argument id: ':0:1' {NOT_AN_ID}"),
    (["dlq", "discard", "replay"], f"argument id: 'replay' {NOT_AN_ID}"),
]


@pytest.mark.parametrize(("argv", "said"), REFUSED, ids=[" ".join(a) for a, _ in REFUSED])
def test_a_bad_value_is_refused_naming_the_option(argv, said, capsys):
    # when
    with pytest.raises(SystemExit) as refused:
        build_parser().parse_args(argv)

    # then
    assert refused.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith(f"rewardrelay {' '.join(argv[: 2 if argv[0] == 'dlq' else 1])}: ")
    assert f"error: {said}" in error, error


@pytest.mark.parametrize(
    ("argv", "name", "value"),
    [
        (["status", "evt_1", "--wait", "0"], "wait", 0.0),
        (["status", "evt_1", "--wait", "2.5"], "wait", 2.5),
        (["dlq", "list", "--limit", "1"], "limit", 1),
        (["dlq", "list", "--limit", str(DEAD_LETTER_LIMIT_MAX)], "limit", DEAD_LETTER_LIMIT_MAX),
        (["run", "--port", "65535"], "port", 65535),
        (["sandbox", "ifeelgoods", "--port", "0"], "port", 0),
        (["connect", "orders-platform", "--timeout", "0.5"], "timeout", 0.5),
        # event ids may hold ':' themselves; the id is split from the right
        (["dlq", "show", "shop:evt:7:0:12"], "id", "shop:evt:7:0:12"),
    ],
)
def test_values_in_range_are_taken(argv, name, value):
    assert getattr(build_parser().parse_args(argv), name) == value


def test_the_limit_is_the_admin_apis():
    assert DEAD_LETTER_LIMIT_MAX == BULK_REPLAY_MAX
