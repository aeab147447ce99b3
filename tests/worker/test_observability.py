"""``scrub``: the last line of defence that keeps secrets and tokens out of log lines."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from worker.observability import _SECRET, _blank, scrub

WEBHOOK_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


@pytest.mark.parametrize(
    ("line", "kept", "secret"),
    [
        (f"verifying with {WEBHOOK_SECRET} now", "whsec_M***", WEBHOOK_SECRET[7:]),
        ("Authorization: Bearer eyJhbGciOi.x-y_z", "Bearer ***", "eyJhbGciOi.x-y_z"),
        ("authorization: basic dXNlcjpwYXNz", "basic d***", "dXNlcjpwYXNz"),
        ("POST client_secret=s3cr3t-value&grant=x", "client_***", "s3cr3t-value"),
        ('{"api-secret": "k-9f8e7d6c"}', "api-sec***", "k-9f8e7d6c"),
        ("ACCESS_TOKEN=tok_0123456789", "ACCESS_***", "tok_0123456789"),
        ("password: hunter2-hunter2", "passwor***", "hunter2-hunter2"),
    ],
)
def test_each_secret_shape_is_blanked_after_its_first_seven_characters(line, kept, secret):
    # when
    scrubbed = scrub(line)
    # then the secret is gone and what kind of secret it was stays readable
    assert secret not in scrubbed
    assert kept in scrubbed


def test_a_line_without_secrets_comes_back_unchanged():
    # given an ordinary line, including words close to the hints
    line = "event evt_1 source=internal type=reward.granted units=1 outcome=accepted (basically)"
    # then
    assert scrub(line) == line


_FRAGMENTS = st.sampled_from(
    [
        "whsec_",
        "WHSEC_",
        "Bearer ",
        "bASic\t",
        "client_secret",
        "api-secret",
        "Access_Token",
        "PASSWORD",
        "=",
        ": ",
        '"',
        "'",
        "&",
        " ",
        "abc",
        "XyZ09+/=",
        "é",
    ]
)


@given(st.lists(_FRAGMENTS | st.text(max_size=6), max_size=12).map("".join))
def test_the_quick_check_never_skips_a_line_the_pattern_would_blank(text):
    # the hint check before the regex is only a shortcut: same result as the regex alone
    assert scrub(text) == _SECRET.sub(_blank, text)


def test_records_keep_process_and_thread_ids_for_formats_of_other_libraries(capsys):
    # given the record fields switched off for speed, and gunicorn's error-log format
    import logging
    import os
    import sys

    from worker.observability import skip_unused_record_fields

    saved = (logging._srcfile, logging.logProcesses, logging.logThreads, logging.logMultiprocessing)
    logger = logging.getLogger("test.gunicorn.error")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("[%(process)d] [%(thread)d] %(message)s"))
    logger.addHandler(handler)
    logger.propagate = False
    try:
        skip_unused_record_fields()

        # when gunicorn logs as a worker exits
        logger.warning("Worker exiting (pid: %s)", os.getpid())
    finally:
        logger.removeHandler(handler)
        (
            logging._srcfile,
            logging.logProcesses,
            logging.logThreads,
            logging.logMultiprocessing,
        ) = saved

    # then the line is written, not a "--- Logging error ---" traceback
    err = capsys.readouterr().err
    assert "Logging error" not in err
    assert f"[{os.getpid()}] " in err
