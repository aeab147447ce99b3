"""ConiqClient against the running Coniq sandbox over HTTP (providers.md section 3)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sandboxes import SandboxControl, serve_in_thread
from sandboxes import coniq as coniq_sandbox_app
from sandboxes.server import RunningServer
from tasks.http.errors import ConflictError, ProviderAuthError, UnknownOutcomeError
from tasks.sources.clients.coniq import ConiqClient

API_KEY = "test-coniq-key-5e0b1c"
ASSIGN = "/subscription/*/reward"


@pytest.fixture(scope="module")
def coniq_server() -> Iterator[RunningServer]:
    with serve_in_thread(coniq_sandbox_app.create_app(api_key=API_KEY), log_requests=False) as s:
        yield s


@pytest.fixture
def coniq_sandbox(coniq_server: RunningServer) -> Iterator[SandboxControl]:
    with SandboxControl(coniq_server.url) as control:
        control.reset()
        yield control


@pytest.fixture
def client(coniq_sandbox: SandboxControl) -> Iterator[ConiqClient]:
    made = ConiqClient(coniq_sandbox.url, API_KEY, timeout=2.0)
    yield made
    made.close()


def test_assign_then_replay_records_once(
    client: ConiqClient, coniq_sandbox: SandboxControl
) -> None:
    # given / when
    first = client.assign_reward("sub-1", "9001", "ref-1", "2027-01-31")
    again = client.assign_reward("sub-1", "9001", "ref-1", "2027-01-31")
    # then
    assert first.created and not again.created and first.id == again.id
    assert first.subscription_id == "sub-1" and first.offer_id == "9001"
    assert coniq_sandbox.issued("ref-1") == 1


def test_reference_reused_for_another_subscription_is_a_conflict(client: ConiqClient) -> None:
    # given
    client.assign_reward("sub-1", "9001", "ref-1")
    # when / then
    with pytest.raises(ConflictError):
        client.assign_reward("sub-2", "9001", "ref-1")


def test_wrong_key_is_refused_without_echoing_it(coniq_sandbox: SandboxControl) -> None:
    # given
    wrong = ConiqClient(coniq_sandbox.url, "wrong-coniq-key-77")
    # when / then
    with pytest.raises(ProviderAuthError) as caught:
        wrong.assign_reward("sub-1", "9001", "ref-1")
    assert "wrong-coniq-key-77" not in str(caught.value) + repr(caught.value) + repr(wrong)
    wrong.close()


def test_a_5xx_is_an_unknown_outcome_and_the_retry_records_once(
    client: ConiqClient, coniq_sandbox: SandboxControl
) -> None:
    # given: the first assignment fails with 503
    coniq_sandbox.set_faults({"kind": "status", "status": 503, "path": ASSIGN, "times": 1})
    with pytest.raises(UnknownOutcomeError):
        client.assign_reward("sub-1", "9001", "ref-1")
    # when
    record = client.assign_reward("sub-1", "9001", "ref-1")
    # then
    assert record.created and coniq_sandbox.issued("ref-1") == 1
