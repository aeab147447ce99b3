"""``rewardrelay console``: the console URL and the admin token, ready to paste."""

from __future__ import annotations

import stat
import sys

from rewardrelay.cli import main
from rewardrelay.datadir import DataDir

from .conftest import ADMIN_TOKEN


def test_prints_the_console_url_and_the_token(cli_env, stub_server, capsys):
    # given
    stub_server.handler = lambda _r: (200, {"status": "ok"})

    # when
    code = main(["console", "--url", stub_server.url])

    # then
    out = capsys.readouterr().out.splitlines()
    assert code == 0
    assert out == [f"console  {stub_server.url}/admin/", f"token    {ADMIN_TOKEN}"]


def test_prints_the_data_dir_token_as_stored_without_quotes(clean_env, stub_server, capsys):
    # given no ADMIN_TOKEN set: the local data directory's is used
    stub_server.handler = lambda _r: (200, {"status": "ok"})

    # when
    main(["console", "--url", stub_server.url])

    # then it is the very text after ADMIN_TOKEN= in settings.env
    token = capsys.readouterr().out.splitlines()[1].split()[-1]
    directory = DataDir(clean_env)
    assert f"ADMIN_TOKEN={token}\n" in directory.settings_file.read_text()
    assert token == directory.secrets()["ADMIN_TOKEN"]


def test_open_hands_the_url_to_the_browser(cli_env, stub_server, monkeypatch, tmp_path, capsys):
    # given a "browser" that records what it was asked to open
    opened = tmp_path / "opened"
    browser = tmp_path / "browser"
    browser.write_text(f'#!/bin/sh\necho "$1" > {opened}\n')
    browser.chmod(browser.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("BROWSER", str(browser))
    stub_server.handler = lambda _r: (200, {"status": "ok"})
    monkeypatch.delitem(sys.modules, "webbrowser", raising=False)  # reads BROWSER on import

    # when
    code = main(["console", "--open", "--url", stub_server.url])

    # then
    assert code == 0
    assert opened.read_text().strip() == f"{stub_server.url}/admin/"


def test_says_the_stack_is_down(cli_env, capsys):
    # when
    code = main(["console", "--url", "http://127.0.0.1:9"])

    # then
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert err == [
        "rewardrelay: cannot reach the receiver at http://127.0.0.1:9 (connection refused) — "
        "start `rewardrelay run`, or give --url / set RECEIVER_URL"
    ]
