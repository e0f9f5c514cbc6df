"""The log pipeline's redaction: secrets, their fragments, and channel URL tokens."""

from __future__ import annotations

import io
import json
import logging

import pytest

from keymon import log as logging_setup
from keymon.log import REDACTED, Redactor


def test_secret_replaced_wherever_it_appears() -> None:
    """A secret inside a longer string is replaced; other text is left alone."""
    redactor = Redactor()
    redactor.update(["s3cr3tValue0123456789"])
    assert redactor.redact("sig=s3cr3tValue0123456789&x=1") == f"sig={REDACTED}&x=1"
    assert redactor.redact("nothing to hide") == "nothing to hide"


def test_pem_lines_are_hidden_one_by_one() -> None:
    """A line of a PEM key that surfaces alone is hidden too."""
    pem = (
        "-----BEGIN PRIVATE KEY-----\n"
        "MC4CAQAwBQYDK2VwBCIEIAbcdefghijklmnopqrstuv\n"
        "-----END PRIVATE KEY-----"
    )
    redactor = Redactor()
    redactor.update([pem])
    assert "MC4CAQAw" not in redactor.redact("line: MC4CAQAwBQYDK2VwBCIEIAbcdefghijklmnopqrstuv")


@pytest.mark.parametrize(
    ("url", "leak"),
    [
        ("slack://T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX/#ops", "XXXXXXXXXXXXXXXXXXXXXXXX"),
        (
            "tgram://123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw/-1001234567",
            "AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw",
        ),
        (
            "json://hooks.example:8080/path/hookTokenSecret99?+X-Token=hdrSecretValue77",
            "hdrSecretValue77",
        ),
    ],
    ids=["slack", "telegram", "json-header"],
)
def test_channel_url_tokens_are_hidden_alone(url: str, leak: str) -> None:
    """A token of a notification URL is hidden even when a library logs it on its own."""
    redactor = Redactor()
    redactor.update([url])
    assert leak not in redactor.redact(f"POST failed for token {leak} (HTTP 500)")


def test_many_secrets_and_longest_first() -> None:
    """Ten thousand secrets are all found; a secret containing another is hidden whole."""
    secrets = [f"secretNumber{i:05d}abcdef" for i in range(10_000)]
    redactor = Redactor()
    redactor.update([*secrets, "secretNumber00042abcdefEXTRA"])
    text = "a secretNumber09999abcdef b secretNumber00042abcdefEXTRA c"
    assert redactor.redact(text) == f"a {REDACTED} b {REDACTED} c"


def test_library_log_records_are_redacted() -> None:
    """A standard-library log record (aiohttp, asyncio) goes through the same redaction."""
    stream = io.StringIO()
    logging_setup.configure(fmt="json", level="info", stream=stream)
    logging_setup.redactor.update(["libraryLeakSecret123"])
    logging.getLogger("some.library").warning("failed with libraryLeakSecret123")
    record = json.loads(stream.getvalue().strip().splitlines()[-1])
    assert record["event"] == f"failed with {REDACTED}"
    assert record["logger"] == "some.library"
