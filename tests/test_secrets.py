"""A sentinel secret never appears in any output, log line, exception text or repr."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import structlog
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from keymon import log as logging_setup
from keymon.audit import Auditor
from keymon.cli import check
from keymon.config import load
from keymon.exchanges.binance import BinanceAdapter
from keymon.simulator.binance import BinanceSimulator
from tests.conftest import SENTINEL, FakeClock

SENTINEL_KEY = "KEY" + SENTINEL[::-1]
PEM_PRIVATE = ed25519.Ed25519PrivateKey.generate()
PEM_SECRET = PEM_PRIVATE.private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
).decode()
PEM_PUBLIC = (
    PEM_PRIVATE.public_key()
    .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    .decode()
)
PEM_BODY = "".join(PEM_SECRET.splitlines()[1:-1])


def secrets_in(text: str) -> list[str]:
    """Which secret values (or long pieces of them) occur in ``text``."""
    needles = {
        "sentinel secret": SENTINEL,
        "sentinel api key": SENTINEL_KEY,
        "pem body": PEM_BODY[:24],
    }
    needles.update({f"pem line {i}": line for i, line in enumerate(PEM_SECRET.splitlines()[1:-1])})
    return [name for name, needle in needles.items() if needle in text]


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Two keys whose secrets are the sentinels: an HMAC key and an Ed25519 key."""
    monkeypatch.setenv("SENTINEL_SECRET", SENTINEL)
    (tmp_path / "pem").write_text(PEM_SECRET)
    path = tmp_path / "keymon.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "exchanges": {"binance": {"base_url": "https://binance.test"}},
                "audit": {"timeout": "300ms", "jitter": "0s"},
                "keys": [
                    {
                        "name": "hmac-key",
                        "client": "acme",
                        "exchange": "binance",
                        "api_key": SENTINEL_KEY,
                        "api_secret": {"env": "SENTINEL_SECRET"},
                    },
                    {
                        "name": "pem-key",
                        "client": "acme",
                        "exchange": "binance",
                        "api_key": "pemKey0123456789abcdef",
                        "api_secret": {"file": str(tmp_path / "pem")},
                    },
                ],
            }
        )
    )
    return path


def _faults(sim: BinanceSimulator, fault: str) -> None:
    if fault == "deleted":
        sim.delete_key(SENTINEL_KEY)
        sim.delete_key("pemKey0123456789abcdef")
    elif fault == "ip-refused":
        sim.set_ip_whitelist(SENTINEL_KEY, ["203.0.113.10"])
    elif fault == "5xx":
        sim.fail_next(20, status=502)
    elif fault == "truncated":
        sim.truncate_next(20)
    elif fault == "skew":
        sim.clock_skew_ms = 3_600_000
    elif fault == "withdraw":
        sim.update_key(SENTINEL_KEY, enableWithdrawals=True)


FAULTS = [
    "healthy",
    "withdraw",
    "deleted",
    "ip-refused",
    "5xx",
    "truncated",
    "skew",
    "wrong-secret",
]


@pytest.mark.parametrize("fmt", ["table", "json"])
@pytest.mark.parametrize("fault", FAULTS)
def test_check_output_and_logs_hold_no_secret(
    config: Path, capsys: pytest.CaptureFixture[str], fault: str, fmt: str
) -> None:
    """Every audit outcome, in both formats, with debug logs: no secret on stdout or stderr."""
    sim = BinanceSimulator()
    sim.add_key(SENTINEL_KEY, hmac_secret="different" if fault == "wrong-secret" else SENTINEL)
    sim.add_key("pemKey0123456789abcdef", public_key_pem=PEM_PUBLIC)
    _faults(sim, fault)
    text = config.read_text().replace("level: info", "")
    config.write_text(text + "log: {level: debug, format: json}\n")
    status = check(config, fmt=fmt, transport_factory=lambda _n: sim.transport())
    out, err = capsys.readouterr()
    assert status in (0, 2, 3)
    assert out
    assert secrets_in(out + err) == []


def test_check_over_a_real_server_holds_no_secret(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Timeouts and refused IPs over real sockets: no secret in what check prints."""
    sim = BinanceSimulator()
    sim.add_key(SENTINEL_KEY, hmac_secret=SENTINEL)
    sim.latency = 1.0
    with sim.serve_in_thread() as url:
        config.write_text(config.read_text().replace("https://binance.test", url))
        check(config, fmt="json")
    out, err = capsys.readouterr()
    report = json.loads(out)
    assert {k["error"]["reason"] for k in report["keys"]} == {"timeout"}
    assert secrets_in(out + err) == []


def test_reprs_and_dumps_hold_no_secret(config: Path) -> None:
    """The loaded settings, keys and auth objects never show a secret in repr or dumps."""
    settings = load(config).settings
    texts = [
        repr(settings),
        str(settings),
        repr(settings.keys),
        settings.model_dump_json(),
        str(settings.model_dump()),
    ]
    assert secrets_in("\n".join(texts)) == []


async def test_a_crash_carrying_a_secret_is_redacted(
    config: Path, monkeypatch: pytest.MonkeyPatch, clock: FakeClock
) -> None:
    """An unexpected exception whose text holds the secret is logged with it redacted."""
    settings = load(config).settings

    async def explode(self: BinanceAdapter, key: object) -> None:
        raise RuntimeError(f"bug leaking {SENTINEL} and {PEM_SECRET}")

    monkeypatch.setattr(BinanceAdapter, "audit", explode)
    stream = io.StringIO()
    logging_setup.redactor.update(settings.secret_values())
    try:
        for fmt in ("json", "console"):
            logging_setup.configure(fmt=fmt, level="debug", stream=stream)
            async with Auditor(settings, clock=clock) as auditor:
                result = await auditor.audit(settings.keys[0])
            assert result.error is not None
            assert str(result.error.reason) == "internal"
            assert secrets_in(result.error.message + repr(result)) == []
    finally:
        logging_setup.redactor.update(())
        structlog.reset_defaults()
    written = stream.getvalue()
    assert "audit_crashed" in written
    assert "RuntimeError" in written  # the traceback is there, minus the secret
    assert secrets_in(written) == []


def test_no_credential_of_any_exchange_reaches_output_or_logs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`keymon check` over the demo fleet (every exchange; deleted, refused and expired keys
    among them), logging at debug: no API key, secret, passphrase or memo of any key appears
    in the report or the logs."""
    import time

    from keymon.demo import build_simulators, demo_keys, write_config
    from keymon.simulator import DEMO_VENUES as _VENUES

    keys = demo_keys(time.time())
    simulators = build_simulators(keys)
    transports = {name: sim.transport() for name, sim in simulators.items()}
    config = write_config(
        tmp_path,
        {name: f"https://{name}.test" for name in simulators},
        keys,
        log={"format": "json", "level": "debug"},
    )
    status = check(config, fmt="json", transport_factory=transports.get)
    out, err = capsys.readouterr()
    assert status == 2
    assert len(json.loads(out)["keys"]) == len(keys)
    assert "audit_failed" in err  # the failing keys were logged, at debug level too
    credentials: dict[str, str] = {}
    for key in keys:
        venue = _VENUES[key.exchange]
        credentials[f"{key.name} api_key"] = venue.key_of(key)
        secret = venue.secret_of(key)
        credentials[f"{key.name} secret"] = secret
        for line in secret.splitlines():
            if len(line) >= 16 and not line.startswith("-----"):
                credentials[f"{key.name} secret line"] = line
        if "passphrase" in venue.extra:
            credentials[f"{key.name} passphrase"] = key.passphrase
        if "memo" in venue.extra:
            credentials[f"{key.name} memo"] = key.memo
    leaked = [name for name, value in credentials.items() if value in out or value in err]
    assert leaked == []
