"""``python -m keymon.simulator EXCHANGE``: every simulated exchange served from a keys file.

For each exchange the runner serves a real port that ``keymon check`` audits like the exchange
itself; bad keys files give one clear line and exit status 2, whatever the exchange.
"""

from __future__ import annotations

import inspect
import io
import json
import os
import re
import select
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from keymon.cli import check
from keymon.simulator import SIMULATORS
from keymon.simulator.__main__ import main as cli_main
from keymon.simulator.coinbase import new_key_pair

REPO_ROOT = Path(__file__).resolve().parents[2]
#: Credentials by add_key argument name; keymon's configuration calls the secret api_secret.
CREDENTIALS = {
    "api_key": "runnerKey0001",
    "secret": "runnerSecret0001",
    "passphrase": "runnerPassphrase",
    "uid": "778899",
    "memo": "runnerMemo0001",
}
CONFIG_FIELD = {
    "api_key": "api_key",
    "secret": "api_secret",
    "passphrase": "passphrase",
    "uid": "uid",
    "memo": "memo",
}
#: Exchanges whose secrets have a form of their own (Coinbase's: an EC private key, of which
#: its simulator keeps the public half).
SECRETS = {"kraken": "a3Jha2VuUnVubmVyU2VjcmV0MDAwMQ==", "coinbase": new_key_pair("ES256")[0]}
#: Exchanges whose API keys have a form of their own (Coinbase's: a CDP key name).
API_KEYS = {
    "coinbase": "organizations/00000000-0000-4000-8000-00000000aaaa/"
    "apiKeys/00000000-0000-4000-8000-00000000bbbb"
}
OTHERS = sorted(name for name in SIMULATORS if name != "binance")


def _fields(exchange: str) -> tuple[list[str], list[str]]:
    """The required (credentials) and optional (state) fields of the exchange's key entries."""
    parameters = inspect.signature(SIMULATORS[exchange].add_key).parameters.values()
    required = [p.name for p in parameters if p.default is p.empty and p.name != "self"]
    return required, [p.name for p in parameters if p.default is not p.empty]


def _credentials(exchange: str) -> dict[str, Any]:
    credentials = {name: CREDENTIALS[name] for name in _fields(exchange)[0]}
    if exchange in SECRETS:
        credentials["secret"] = SECRETS[exchange]
    if exchange in API_KEYS:
        credentials["api_key"] = API_KEYS[exchange]
    return credentials


def _read_url(proc: subprocess.Popen[str]) -> str:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 20)
    if not ready:
        pytest.fail("the simulator printed nothing within 20 s")
    line = proc.stdout.readline()
    match = re.search(r"http://127\.0\.0\.1:\d+", line)
    assert match, line
    return match.group(0)


@pytest.mark.parametrize("exchange", OTHERS)
def test_runner_serves_keys_that_keymon_audits(tmp_path: Path, exchange: str) -> None:
    """A key from the keys file, served on 127.0.0.1, audits OK; SIGTERM exits 0."""
    entry = _credentials(exchange)
    if "ips" in _fields(exchange)[1]:
        entry["ips"] = ["127.0.0.1"]  # bound to the trusted IP (HTX keys are unbound by default)
    keys_file = tmp_path / "keys.yaml"
    keys_file.write_text(yaml.safe_dump([entry]))
    command = [sys.executable, "-m", "keymon.simulator", exchange, "--port", "0"]
    command += ["--keys", str(keys_file)]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    with subprocess.Popen(
        command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as proc:
        try:
            url = _read_url(proc)
            key: dict[str, Any] = {"name": "runner-key", "client": "c", "exchange": exchange}
            key |= {CONFIG_FIELD[name]: entry[name] for name in _fields(exchange)[0]}
            config = tmp_path / "keymon.yaml"
            config.write_text(
                yaml.safe_dump(
                    {
                        "data_dir": str(tmp_path / "data"),
                        "exchanges": {exchange: {"base_url": url}},
                        "trusted_ips": ["127.0.0.1/32"],
                        "keys": [key],
                    }
                )
            )
            out = io.StringIO()
            status = check(config, fmt="json", out=out)
            proc.send_signal(signal.SIGTERM)
            _, stderr = proc.communicate(timeout=15)
        finally:
            if proc.poll() is None:
                proc.kill()
    report = json.loads(out.getvalue())
    assert [(k["key"], k["exchange"], k["error"], k["findings"]) for k in report["keys"]] == [
        ("runner-key", exchange, None, [])
    ]
    assert status == 0
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr


@pytest.mark.parametrize("exchange", OTHERS)
@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"api_key": "k"}, "key entry 1: missing"),
        ({"bogus": 1}, "unknown fields bogus (known: api_key"),
        ({"api_key": 12345}, "api_key must be a string (quote it in YAML)"),
        ({"ips": ["1.2.3.400"]}, "key entry 1: "),
    ],
    ids=["missing-credential", "unknown-field", "numeric-key", "bad-ip"],
)
def test_runner_bad_keys_file_exits_2_with_one_line(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    exchange: str,
    entry: dict[str, Any],
    message: str,
) -> None:
    """A bad key entry names the file, the entry and the problem; exit status 2."""
    if "ips" in entry and "ips" not in _fields(exchange)[1]:
        pytest.skip(f"{exchange}'s simulator takes no IP list")
    full = entry if entry == {"api_key": "k"} else _credentials(exchange) | entry
    keys = tmp_path / "keys.yaml"
    keys.write_text(yaml.safe_dump([full]))
    assert cli_main([exchange, "--keys", str(keys)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1
    assert captured.err.startswith(f"python -m keymon.simulator: error: {keys}: ")
    assert message in captured.err
    assert _credentials(exchange)["secret"] not in captured.err


def test_runner_help_lists_every_exchange_and_its_key_fields(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """--help names every simulated exchange; each exchange's help names its key fields."""
    with pytest.raises(SystemExit):
        cli_main(["--help"])
    top = capsys.readouterr().out
    assert all(name in top for name in SIMULATORS)
    with pytest.raises(SystemExit):
        cli_main(["okx", "--help"])
    assert "api_key, secret, passphrase" in " ".join(capsys.readouterr().out.split())
