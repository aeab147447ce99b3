"""gunicorn as production runs it, for tests; and a WSGI app to serve with it
(``tests.webhooks.serving:failing``)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[2]

LEAKED = "sk_live_do-not-echo-me"


def failing(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """``/healthz`` answers; every other path raises, outside any Flask error handler."""
    if environ["PATH_INFO"] == "/healthz":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]
    raise RuntimeError(f"a bug whose message holds {LEAKED}")


@contextmanager
def gunicorn_server(env: dict[str, str], log_path: Path, *args: str) -> Iterator[str]:
    """gunicorn as production starts it (``gunicorn.conf.py``, so its worker class), one
    process on a free loopback port, ``args`` appended (an app to serve instead); its
    base URL once ``/healthz`` answers. Its log goes to ``log_path``."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    full_env = {**os.environ, **env, "WEB_CONCURRENCY": "1"}
    full_env.pop("SENTRY_DSN", None)
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py"]
            + ["-b", f"127.0.0.1:{port}", *args],
            env=full_env,
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert proc.poll() is None and time.monotonic() < deadline, log_path.read_text()[
                    -2000:
                ]
                time.sleep(0.1)
            yield url
        finally:
            proc.terminate()
            proc.wait(timeout=20)
