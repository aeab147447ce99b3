"""Shared fixtures: a real Redis (a database number of the tests' own plus a unique key
prefix per test, cleaned up afterwards) and Settings built from them."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import replace

import pytest
import redis

from worker.config import Settings

# Shared fixtures of the source sandboxes (an Ignico sandbox, its seeder).
pytest_plugins = ["tests.source_seeds"]

TEST_REDIS_HOST = os.environ.get("RR_TEST_REDIS_HOST", "127.0.0.1")
TEST_REDIS_PORT = int(os.environ.get("RR_TEST_REDIS_PORT", "6379"))
# Database numbers of the tests' own: 14 for store tests, 15 for worker/broker tests.
STORE_DB = 14
TEST_CONIQ_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
TEST_EVENT_SECRET = "whsec_dGVzdC1pbnRlcm5hbC1ldmVudHMtc2VjcmV0"
TEST_ADMIN_TOKEN = "test-admin-token-0123456789"
# A fixed Fernet key for tests (CODE_KEYS); never used outside them.
TEST_CODE_KEY = "dGVzdC1jb2RlLWtleS0wMTIzNDU2Nzg5YWJjZGVmMDE="


def redis_url(db: int) -> str:
    return f"redis://{TEST_REDIS_HOST}:{TEST_REDIS_PORT}/{db}"


@pytest.fixture(scope="session")
def redis_available() -> None:
    try:
        redis.Redis(host=TEST_REDIS_HOST, port=TEST_REDIS_PORT, socket_timeout=1).ping()
    except redis.RedisError:
        if os.environ.get("CI"):
            raise
        pytest.skip("no Redis on 127.0.0.1:6379 (CI starts one)")


@pytest.fixture
def key_prefix(redis_available: None) -> Iterator[str]:
    prefix = f"rrtest-{uuid.uuid4().hex[:10]}"
    yield prefix
    client = redis.Redis.from_url(redis_url(STORE_DB))
    for key in client.scan_iter(match=f"{prefix}:*", count=1000):
        client.delete(key)
    client.close()


@pytest.fixture
def redis_client(key_prefix: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url(STORE_DB))
    yield client
    client.close()


@pytest.fixture
def settings(key_prefix: str) -> Settings:
    return replace(
        Settings(),
        redis_url=redis_url(STORE_DB),
        key_prefix=key_prefix,
        coniq_webhook_secrets=(TEST_CONIQ_SECRET,),
        event_secrets=(TEST_EVENT_SECRET,),
        admin_token=TEST_ADMIN_TOKEN,
        code_keys=(TEST_CODE_KEY,),
        retry_base_seconds=0.05,
        retry_max_delay_seconds=0.5,
    )
