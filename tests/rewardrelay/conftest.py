"""Fixtures for the command-line tests: an isolated environment and a stub HTTP server.

The stub plays the receiver's side of the CLI's HTTP contract (ingest and admin API), so
the commands are tested over real HTTP without the rest of the stack.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

CONIQ_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
EVENT_SECRET = "whsec_dGVzdC1pbnRlcm5hbC1ldmVudHMtc2VjcmV0"
ADMIN_TOKEN = "cli-test-admin-token-0123456789"
# Variables that would change what the commands do if the developer's shell set them.
_ISOLATED = (
    "REDIS_URL", "CELERY_BROKER_URL", "CONIQ_WEBHOOK_SECRETS", "EVENT_SECRETS", "ADMIN_TOKEN",
    "PORT", "FLOWER_PORT", "RULES_FILE", "IFEELGOODS_API_KEY", "IFEELGOODS_API_SECRET",
    "IFEELGOODS_BASE_URL", "REWARDOPS_CLIENT_ID", "REWARDOPS_CLIENT_SECRET",
    "REWARDOPS_BASE_URL", "RR_KEY_PREFIX", "SENTRY_DSN", "RECEIVER_URL", "IGNICO_BASE_URL",
    "IGNICO_CLIENT_ID", "IGNICO_CLIENT_SECRET", "ORDERS_BASE_URL", "ORDERS_CLIENT_ID",
    "ORDERS_CLIENT_SECRET", "CONIQ_BASE_URL", "CONIQ_API_KEY",
)  # fmt: skip


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> Any:
    """No rewardrelay variables set; the data directory is a fresh temporary one."""
    for name in _ISOLATED:
        monkeypatch.delenv(name, raising=False)
    data_dir = tmp_path / "data"
    monkeypatch.setenv("RR_DATA_DIR", str(data_dir))
    return data_dir


@pytest.fixture
def cli_env(clean_env: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Known secrets and admin token, as an operator would export them."""
    monkeypatch.setenv("CONIQ_WEBHOOK_SECRETS", CONIQ_SECRET)
    monkeypatch.setenv("EVENT_SECRETS", EVENT_SECRET)
    monkeypatch.setenv("ADMIN_TOKEN", ADMIN_TOKEN)
    return clean_env


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


Reply = tuple[int, dict[str, Any] | list[Any] | None]


@dataclass
class StubServer:
    """Answers each request with ``handler(recorded) -> (status, json body)``."""

    url: str
    requests: list[Recorded] = field(default_factory=list)
    handler: Callable[[Recorded], Reply] = lambda _r: (404, None)


@pytest.fixture
def stub_server() -> Iterator[StubServer]:
    stub = StubServer(url="")

    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            recorded = Recorded(
                method=self.command,
                path=self.path,
                headers={k.lower(): v for k, v in self.headers.items()},
                body=self.rfile.read(length) if length else b"",
            )
            stub.requests.append(recorded)
            status, body = stub.handler(recorded)
            raw = json.dumps(body).encode() if body is not None else b""
            self.send_response(status)
            if body is not None:
                kind = "application/problem+json" if status >= 400 else "application/json"
                self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        do_GET = do_POST = do_DELETE = _serve  # noqa: N815 - http.server's naming

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    stub.url = f"http://127.0.0.1:{server.server_port}"
    yield stub
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def problem(status: int, kind: str, detail: str) -> Reply:
    return status, {"type": kind, "title": kind, "status": status, "detail": detail}
