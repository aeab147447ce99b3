"""The data directory generates secrets once, keeps them private, and never overrides
variables that are set."""

from __future__ import annotations

import base64
import os
import re
import stat

from rewardrelay.datadir import _HEADER, SECRET_VARIABLES, DataDir
from worker.config import Settings
from worker.signing import decode_secret


def test_generates_secrets_once_and_reuses_them(tmp_path):
    # given
    directory = DataDir(tmp_path / "data")

    # when
    first = directory.secrets()
    second = DataDir(tmp_path / "data").secrets()

    # then
    assert first == second
    assert set(first.values) == set(SECRET_VARIABLES)
    assert all(first.values.values())


def test_settings_file_is_private(tmp_path):
    # given
    directory = DataDir(tmp_path / "data")

    # when
    directory.secrets()

    # then
    assert stat.S_IMODE(os.stat(directory.settings_file).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(directory.path).st_mode) == 0o700


def test_webhook_secrets_are_32_random_bytes_and_valid_settings(tmp_path):
    # given
    local = DataDir(tmp_path / "data").secrets()

    # when
    # (with the addresses and offer id `run` adds once the source sandboxes listen)
    settings = Settings.from_env(
        {
            **local.values,
            "IGNICO_BASE_URL": "http://127.0.0.1:1/api/v1",
            "ORDERS_BASE_URL": "http://127.0.0.1:2",
            "CONIQ_RECORD_OFFER_ID": "9001",
        }
    )

    # then
    for name in ("CONIQ_WEBHOOK_SECRETS", "EVENT_SECRETS"):
        secret = local[name]
        assert secret.startswith("whsec_")
        assert len(base64.b64decode(secret.removeprefix("whsec_"))) == 32
        assert len(decode_secret(secret)) == 32
    assert len(settings.admin_token) >= 16
    assert local["CONIQ_WEBHOOK_SECRETS"] != local["EVENT_SECRETS"]


def test_fills_in_a_value_missing_from_an_older_file(tmp_path):
    # given
    directory = DataDir(tmp_path / "data")
    directory.ensure()
    directory.settings_file.write_text("ADMIN_TOKEN='kept-admin-token-1234567890'\n")

    # when
    local = directory.secrets()

    # then
    assert local["ADMIN_TOKEN"] == "kept-admin-token-1234567890"
    assert local["EVENT_SECRETS"].startswith("whsec_")


def test_client_environ_uses_set_variables_first(tmp_path):
    # given
    directory = DataDir(tmp_path / "data")
    environ = {"ADMIN_TOKEN": "from-the-environment-123456"}

    # when
    env = directory.client_environ(environ)

    # then
    assert env["ADMIN_TOKEN"] == "from-the-environment-123456"
    assert env["EVENT_SECRETS"] == directory.secrets()["EVENT_SECRETS"]
    # Provider credentials are only lent to a running stack's sandboxes.
    assert "IFEELGOODS_API_KEY" not in env


def test_client_environ_creates_nothing_when_everything_is_set(tmp_path):
    # given
    directory = DataDir(tmp_path / "data")
    environ = {"CONIQ_WEBHOOK_SECRETS": "a", "EVENT_SECRETS": "b", "ADMIN_TOKEN": "c"}

    # when
    directory.client_environ(environ)

    # then
    assert not directory.path.exists()


def test_running_stack_is_ignored_once_its_process_is_gone(tmp_path):
    # given
    directory = DataDir(tmp_path / "data")
    directory.write_stack({"pid": os.getpid(), "env": {"PORT": "9001"}, "sandboxes": []})
    live = directory.running_stack()
    directory.write_stack({"pid": 2**22 + 12345, "env": {"PORT": "9001"}, "sandboxes": []})

    # when
    dead = directory.running_stack()

    # then
    assert live is not None and live["env"]["PORT"] == "9001"
    assert dead is None
    assert directory.client_environ({}).get("PORT") is None


def test_values_are_written_without_quotes_exactly_as_used(tmp_path):
    # given
    directory = DataDir(tmp_path / "data")

    # when
    local = directory.secrets()

    # then each line is NAME=value with the value as it is used (nothing to strip)
    lines = [line for line in directory.settings_file.read_text().splitlines() if "=" in line]
    assert lines == [f"{name}={local[name]}" for name in SECRET_VARIABLES]


def test_generated_values_never_need_shell_quotes(tmp_path):
    # given many generated files (the generators are random)
    values = [
        value
        for index in range(40)
        for value in DataDir(tmp_path / str(index)).secrets().values.values()
    ]

    # then every value is made of characters a shell takes as they are
    assert all(re.fullmatch(r"[A-Za-z0-9_+/=.:-]+", value) for value in values)


def test_a_file_written_with_quotes_is_read_and_rewritten_bare(tmp_path):
    # given a settings.env as earlier versions wrote it
    first = DataDir(tmp_path / "data")
    local = first.secrets()
    quoted = "".join(f"{name}='{local[name]}'\n" for name in SECRET_VARIABLES)
    first.settings_file.write_text(_HEADER + quoted)

    # when
    again = DataDir(tmp_path / "data").secrets()

    # then the values are the same and the file no longer has quotes
    assert again == local
    assert "'" not in first.settings_file.read_text()


def test_a_hand_edited_file_with_quotes_is_read_but_left_as_it_is(tmp_path):
    # given an operator's own file: a comment of theirs and a double-quoted value
    directory = DataDir(tmp_path / "data")
    local = directory.secrets()
    lines = [f'{name}="{local[name]}"' for name in SECRET_VARIABLES]
    text = "# mine\n" + "\n".join(lines) + "\n"
    directory.settings_file.write_text(text)

    # when
    again = directory.secrets()

    # then
    assert again == local
    assert directory.settings_file.read_text() == text


def test_a_value_that_needs_quotes_keeps_them_and_reads_back(tmp_path):
    # given a hand-set value with a space and a quote, and a missing value to generate
    directory = DataDir(tmp_path / "data")
    directory.ensure()
    directory.settings_file.write_text("ADMIN_TOKEN='it'\\''s a long token value'\n")

    # when
    local = directory.secrets()

    # then
    assert local["ADMIN_TOKEN"] == "it's a long token value"
    assert DataDir(tmp_path / "data").secrets()["ADMIN_TOKEN"] == "it's a long token value"
