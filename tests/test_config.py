"""The configuration loader (keymon.config.load) and the validate-config and check commands.

Invalid files live in tests/testdata/invalid-*.yaml. Their secrets come from environment
variables named ``KMTEST_*`` that an autouse fixture sets, and ``@TMP@`` in a file stands for
the test's temporary directory (for secret files the test writes). Nothing here reaches an
exchange: ``check`` is only ever run on configurations that fail to load.
"""

from __future__ import annotations

import ipaddress
import os
import re
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from pydantic import ValidationError

from keymon import cli
from keymon import config as config_module
from keymon.config import (
    MAX_NESTING,
    AuditSettings,
    ExchangesSettings,
    LoadedConfig,
    LogSettings,
    NotifySettings,
    Policy,
    Settings,
    key_secrets,
    load,
)
from keymon.errors import ConfigError
from keymon.exchanges import EXCHANGES
from keymon.exchanges.biconomy import BiconomyKey
from keymon.exchanges.binance import BinanceKey
from keymon.exchanges.bingx import BingxKey
from keymon.exchanges.bitget import BitgetKey
from keymon.exchanges.bitmart import BitmartKey
from keymon.exchanges.bitrue import BitrueKey
from keymon.exchanges.coinbase import CoinbaseKey
from keymon.exchanges.coinstore import CoinstoreKey
from keymon.exchanges.gate import GateKey
from keymon.exchanges.htx import HtxKey
from keymon.exchanges.kraken import KrakenKey
from keymon.exchanges.kucoin import KucoinKey
from keymon.exchanges.lbank import LbankKey
from keymon.exchanges.okx import OkxKey, OkxSettings
from keymon.exchanges.xt import XtKey
from keymon.model import Severity
from tests.conftest import SHARED_EXCHANGE_MODULES, exchange_modules_after

REPO = Path(__file__).resolve().parents[1]
TESTDATA = Path(__file__).resolve().parent / "testdata"
EXAMPLE = REPO / "config" / "example.yaml"
MINIMAL = REPO / "config" / "minimal.yaml"

#: A secret value that must never surface in anything keymon prints or renders.
SENTINEL = "SENTINEL-SECRET-7f3a9c"
UNSET_ENV = "KEYMON_TEST_DEFINITELY_UNSET_SECRET"
#: The environment variables the static test files read their secrets from.
TEST_SECRETS = {
    "KMTEST_ACME_KEY": "acme-api-key-0001",
    "KMTEST_ACME_SECRET": "acme-api-secret-0001",
    "KMTEST_BETA_KEY": "beta-api-key-0002",
    "KMTEST_BETA_SECRET": "beta-api-secret-0002",
}

KEY_BLOCK = """\
keys:
  - name: acme-binance-main
    client: acme
    exchange: binance
    api_key: {env: KMTEST_ACME_KEY}
    api_secret: {env: KMTEST_ACME_SECRET}
"""


@pytest.fixture(autouse=True)
def _test_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Start every test without KEYMON_* overrides and with the KMTEST_* secrets set."""
    for name in list(os.environ):
        if name.upper().startswith("KEYMON_"):
            monkeypatch.delenv(name)
    for name, value in TEST_SECRETS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv(UNSET_ENV, raising=False)


def write(tmp_path: Path, text: str, name: str = "keymon.yaml") -> Path:
    """Write a configuration file into ``tmp_path`` and return its path."""
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def materialize(name: str, tmp_path: Path) -> Path:
    """Copy ``testdata/<name>`` into ``tmp_path``, filling in ``@TMP@`` and its secret files."""
    (tmp_path / "secrets").mkdir(exist_ok=True)
    (tmp_path / "secrets" / "empty_secret").write_bytes(b"")
    text = (TESTDATA / name).read_text(encoding="utf-8")
    return write(tmp_path, text.replace("@TMP@", str(tmp_path)), name)


def problems_of(path: Path) -> list[str]:
    """The problems ``load`` reports for ``path`` (it must fail)."""
    with pytest.raises(ConfigError) as info:
        load(path)
    return info.value.problems


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run ``keymon ARGS`` in-process; return the exit status, stdout and stderr."""
    try:
        status = cli.main(args)
    except SystemExit as exc:  # argparse usage errors
        status = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return status, out, err


COINBASE_EXAMPLE_NAME = (
    "organizations/6f1c2d3e-0000-4000-8000-000000000001/"
    "apiKeys/0b5e7a11-0000-4000-8000-000000000002"
)


def coinbase_pem() -> str:
    """A fresh EC P-256 private key in SEC1 PEM, as the CDP portal gives one."""
    return (
        ec.generate_private_key(ec.SECP256R1())
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
        .decode()
    )


def pem_private_key(kind: str) -> str:
    """A freshly generated unencrypted PKCS#8 PEM private key (``ed25519`` or ``rsa``)."""
    key: ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey
    if kind == "ed25519":
        key = ed25519.Ed25519PrivateKey.generate()
    else:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


# ----------------------------------------------------------------------------- invalid files

_PERMISSION_LIST = (
    "read, spot_trade, margin_trade, margin_loan, futures_trade, options_trade, "
    "portfolio_margin, withdraw, internal_transfer, universal_transfer, fix_trade, fix_read"
)

#: (file, substrings): each substring (location prefix included) must be one of the
#: problems, and there must be no other problem. ``{path}`` is the loaded file's path,
#: ``{tmp}`` the test's temporary directory.
INVALID_CASES: list[tuple[str, tuple[str, ...]]] = [
    (
        "invalid-notify-url.yaml",
        (
            "notify.urls[0]: not a notification URL Apprise understands (scheme 'slak')",
            "notify.reminder: must be at least 1s",
        ),
    ),
    (
        "invalid-unknown-top-level-typo.yaml",
        ("trusted_ip: unknown field (did you mean 'trusted_ips'?)",),
    ),
    (
        "invalid-unknown-audit-field.yaml",
        ("audit.intreval: unknown field (did you mean 'interval'?)",),
    ),
    ("invalid-unknown-log-field.yaml", ("log.fromat: unknown field (did you mean 'format'?)",)),
    (
        "invalid-unknown-binance-field.yaml",
        ("exchanges.binance.recvWindow: unknown field (did you mean 'recv_window'?)",),
    ),
    (
        "invalid-unknown-policy-field.yaml",
        ("policies.market-maker.requires: unknown field (did you mean 'require'?)",),
    ),
    (
        "invalid-unknown-key-field.yaml",
        (
            "keys[0].api_secert: unknown field (did you mean 'api_secret'?)",
            "keys[0].api_secret: required field is missing",
        ),
    ),
    (
        "invalid-duration-unit.yaml",
        (
            "audit.interval: '5x' is not a duration or auto;"
            " write it like 30s, 5m, 1h or 14d, or auto",
        ),
    ),
    ("invalid-interval-below-1s.yaml", ("audit.interval: must be at least 1s",)),
    (
        "invalid-jitter-not-below-interval.yaml",
        ("audit: jitter (1m) must be shorter than interval (1m)",),
    ),
    ("invalid-timeout-zero.yaml", ("audit.timeout: must be more than 0s",)),
    (
        "invalid-recv-window-90s.yaml",
        ("exchanges.binance.recv_window: must be more than 0s and at most 60s",),
    ),
    (
        "invalid-max-weight-zero.yaml",
        ("exchanges.binance.max_weight_per_minute: Input should be greater than 0",),
    ),
    (
        "invalid-base-url-scheme.yaml",
        (
            "exchanges.binance.base_url: 'api.binance.com' is not an http(s) base URL "
            "such as https://api.binance.com",
        ),
    ),
    (
        "invalid-exchange-unknown.yaml",
        (
            "keys[0].exchange: unknown exchange 'kraken2' "
            "(did you mean 'kraken'? supported: binance, bybit, okx, kucoin, bitget, htx, gate, "
            "kraken, bingx, coinbase, mexc, bitmart, bitrue, xt, lbank, coinstore, biconomy)",
        ),
    ),
    (
        "invalid-exchange-missing.yaml",
        (
            "keys[0].exchange: exchange is missing "
            "(supported: binance, bybit, okx, kucoin, bitget, htx, gate, kraken, bingx, "
            "coinbase, mexc, bitmart, bitrue, xt, lbank, coinstore, biconomy)",
        ),
    ),
    (
        "invalid-duplicate-key-names.yaml",
        (
            "keys[1].name: 'acme-binance-main' is already the name of keys[0]; "
            "key names must be unique",
        ),
    ),
    ("invalid-client-missing.yaml", ("keys[0].client: required field is missing",)),
    (
        "invalid-key-name-space.yaml",
        ("keys[0].name: 'acme binance main' is not a key name",),
    ),
    (
        "invalid-secret-env-unset.yaml",
        (f"keys[1].api_secret: environment variable {UNSET_ENV} is not set",),
    ),
    (
        "invalid-secret-file-missing.yaml",
        (
            "keys[0].api_secret: cannot read secret file "
            "{tmp}/secrets/acme_binance_secret_typo: No such file or directory",
        ),
    ),
    (
        "invalid-secret-file-empty.yaml",
        ("keys[0].api_secret: secret file {tmp}/secrets/empty_secret is empty",),
    ),
    (
        "invalid-secret-pem-not-a-key.yaml",
        ("keys[0].api_secret: looks like PEM but is not an unencrypted private key",),
    ),
    (
        "invalid-secret-kraken-not-base64.yaml",
        (
            "keys[0].api_secret: the Kraken private key of key 'acme-kraken-spot' is not base64; "
            "copy the whole 'Private key' Kraken showed when the key was created",
        ),
    ),
    (
        "invalid-key-type-rsa-with-hmac.yaml",
        ("keys[0].key_type: api_secret is hmac key material but key_type is rsa",),
    ),
    (
        "invalid-permission-unknown-require.yaml",
        (
            "policies.market-maker.require[1]: unknown permission "
            f"(expected one of: {_PERMISSION_LIST})",
        ),
    ),
    (
        "invalid-permission-unknown-forbid.yaml",
        (
            "policies.market-maker.forbid.enableFutures: unknown permission "
            f"(expected one of: {_PERMISSION_LIST})",
        ),
    ),
    (
        "invalid-severity-fatal.yaml",
        (
            "policies.market-maker.forbid.internal_transfer: "
            "the severity must be warning or critical",
        ),
    ),
    (
        "invalid-forbid-withdraw.yaml",
        (
            "policies.market-maker.forbid: withdraw is always checked by the withdraw_enabled "
            "rule (critical); remove it from forbid",
        ),
    ),
    (
        "invalid-permission-required-and-forbidden.yaml",
        ("policies.market-maker: margin_loan: both required and forbidden",),
    ),
    (
        "invalid-review-critical-longer.yaml",
        (
            "policies.market-maker: review_critical (14d) must not be longer than "
            "review_warning (3d)",
        ),
    ),
    (
        "invalid-default-policy-missing.yaml",
        ("default_policy: no policy named 'market_maker' (defined: market-maker)",),
    ),
    (
        "invalid-key-policy-missing.yaml",
        ("keys[0].policy: no policy named 'conservtive' (defined: conservative, market-maker)",),
    ),
    (
        "invalid-trusted-ip-garbage.yaml",
        ("trusted_ips[1]: 'garbage' is not an IP address or CIDR network",),
    ),
    (
        "invalid-trusted-ip-host-bits.yaml",
        ("trusted_ips[0]: '10.0.0.1/8' is not an IP address or CIDR network (has host bits set)",),
    ),
    (
        "invalid-listen-no-port.yaml",
        ("listen: '0.0.0.0' is not host:port, such as 0.0.0.0:9877",),
    ),
    ("invalid-label-reserved.yaml", ("keys[0].labels: 'key' is a label keymon sets itself",)),
    ("invalid-keys-empty.yaml", ("keys: at least one key must be configured",)),
    (
        "invalid-yaml-syntax.yaml",
        ("{path}:5:1: invalid YAML: found character '\\t' that cannot start any token",),
    ),
    ("invalid-empty-file.yaml", ("{path}: the file is empty",)),
    ("invalid-top-level-list.yaml", ("{path}: the top level must be a mapping of settings",)),
    (
        "invalid-several-problems.yaml",
        (
            "audit.interval: '5x' is not a duration",
            "trusted_ips[1]: 'garbage' is not an IP address or CIDR network",
            f"keys[0].api_secret: environment variable {UNSET_ENV} is not set",
            "keys[1].name: 'acme-binance-main' is already the name of keys[0]",
        ),
    ),
    # Known defects of keymon/config.py (see each reason).
    (
        "invalid-secret-mapping-typo.yaml",
        ("keys[0].api_secret: a secret is {env: NAME}, {file: PATH} or a string",),
    ),
    (
        "invalid-several-problems-with-policy-reference.yaml",
        (
            "audit.interval: '5x' is not a duration",
            "keys[0].policy: no policy named 'conservative' (defined: market-maker)",
        ),
    ),
]


def _case_id(name: str) -> str:
    return name.removeprefix("invalid-").removesuffix(".yaml")


def test_every_invalid_file_is_in_the_table() -> None:
    """Every tests/testdata/invalid-*.yaml file has an expected message in the table."""
    on_disk = {p.name for p in TESTDATA.glob("invalid-*.yaml")}
    in_table = {name for name, _ in INVALID_CASES} | {"invalid-top-level-number-key.yaml"}
    assert on_disk == in_table
    assert len(on_disk) >= 24


@pytest.mark.parametrize(
    ("name", "expected"),
    [pytest.param(n, e) for n, e in INVALID_CASES],
    ids=[_case_id(n) for n, _ in INVALID_CASES],
)
def test_invalid_file_reports_each_problem_with_its_location(
    name: str, expected: tuple[str, ...], tmp_path: Path
) -> None:
    """An invalid file raises ConfigError listing exactly its problems, each with its location."""
    path = materialize(name, tmp_path)
    problems = problems_of(path)
    for substring in expected:
        wanted = substring.replace("{path}", str(path)).replace("{tmp}", str(tmp_path))
        assert any(wanted in problem for problem in problems), (wanted, problems)
    assert len(problems) == len(expected), problems


def test_top_level_key_that_is_a_number_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    """A stray top-level key YAML reads as a number is reported like any unknown field."""
    path = materialize("invalid-top-level-number-key.yaml", tmp_path)
    problems = problems_of(path)
    assert len(problems) == 1
    assert "9877" in problems[0]


def test_yaml_syntax_error_gives_position_but_not_the_line(tmp_path: Path) -> None:
    """A YAML syntax error says file:line:column and never quotes the offending line."""
    path = materialize("invalid-yaml-syntax.yaml", tmp_path)
    problems = problems_of(path)
    assert len(problems) == 1
    assert problems[0].startswith(f"{path}:5:1: invalid YAML: ")
    assert "client: acme" not in problems[0]


def test_yaml_missing_colon_points_at_the_line_of_the_mistake(tmp_path: Path) -> None:
    """A key line missing its ':' is reported at that line, not at the next one."""
    path = write(
        tmp_path,
        KEY_BLOCK.replace("    client: acme\n", "    client acme\n"),  # line 3
    )
    problems = problems_of(path)
    assert len(problems) == 1
    assert re.search(rf"^{re.escape(str(path))}:3:\d+: |\bline 3\b", problems[0]), problems


def test_missing_file_is_one_problem(tmp_path: Path) -> None:
    """A configuration path that does not exist is reported as such, not as a crash."""
    path = tmp_path / "nope.yaml"
    assert problems_of(path) == [f"{path}: no such file"]


# ----------------------------------------------------------------------------- valid files


PRODUCT_SHAPE = """\
listen: "127.0.0.1:19877"
data_dir: "{tmp}/state"
log: {{format: console, level: debug}}

audit:
  interval: 2m
  jitter: 15s
  timeout: 7s

exchanges:
  binance:
    base_url: "https://api1.binance.com/"
    recv_window: 3s
    max_weight_per_minute: 600
    time_sync_interval: 30m

trusted_ips: ["203.0.113.10", "198.51.100.0/28"]

policies:
  market-maker:
    require: [read, spot_trade]
    forbid:
      internal_transfer: critical
      universal_transfer: critical
      futures_trade: warning
      options_trade: warning
      margin_loan: warning
      portfolio_margin: warning
    require_ip_restriction: true
    review_warning: 14d
    review_critical: 3d
    max_age: 365d
  read-only:
    require: [read]
    forbid: {{spot_trade: critical}}
    require_ip_restriction: false
    review_warning: 7d
    review_critical: 1d
default_policy: market-maker

keys:
  - name: acme-binance-main
    client: acme
    exchange: binance
    api_key: {{env: KMTEST_ACME_KEY}}
    api_secret: {{file: {tmp}/acme_binance_secret}}
  - name: beta-binance.readonly_1
    client: beta
    exchange: binance
    key_type: hmac
    api_key: {{env: KMTEST_BETA_KEY}}
    api_secret: {{env: KMTEST_BETA_SECRET}}
    policy: read-only
    labels: {{desk: eu, tier: gold}}

notify:
  urls:
    - "slack://T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX/#ops"
    - {{env: KMTEST_NOTIFY_URL}}
  reminder: 1h30m
  send_resolved: false
"""


def test_product_example_shape_loads_every_field(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file of PRODUCT.md's shape loads with every field set to what the file says."""
    (tmp_path / "acme_binance_secret").write_text("acme-file-secret\n", encoding="utf-8")
    monkeypatch.setenv("KMTEST_NOTIFY_URL", "json://hooks.example/keymon")
    loaded = load(write(tmp_path, PRODUCT_SHAPE.format(tmp=tmp_path)))
    s = loaded.settings

    assert s.listen == "127.0.0.1:19877"
    assert s.data_dir == tmp_path / "state"
    assert (s.log.format, s.log.level) == ("console", "debug")
    assert s.audit == AuditSettings(
        interval=timedelta(minutes=2), jitter=timedelta(seconds=15), timeout=timedelta(seconds=7)
    )
    binance = s.exchanges.binance
    assert binance.base_url == "https://api1.binance.com"  # trailing slash dropped
    assert binance.recv_window == timedelta(seconds=3)
    assert binance.max_weight_per_minute == 600
    assert binance.time_sync_interval == timedelta(minutes=30)
    assert s.trusted_ips == (
        ipaddress.ip_network("203.0.113.10/32"),
        ipaddress.ip_network("198.51.100.0/28"),
    )

    mm = s.policies["market-maker"]
    assert mm.require == ("read", "spot_trade")
    assert mm.forbid == {
        "internal_transfer": Severity.CRITICAL,
        "universal_transfer": Severity.CRITICAL,
        "futures_trade": Severity.WARNING,
        "options_trade": Severity.WARNING,
        "margin_loan": Severity.WARNING,
        "portfolio_margin": Severity.WARNING,
    }
    assert mm.require_ip_restriction is True
    assert (mm.review_warning, mm.review_critical) == (timedelta(days=14), timedelta(days=3))
    assert mm.max_age == timedelta(days=365)
    ro = s.policies["read-only"]
    assert (ro.require, ro.forbid, ro.require_ip_restriction) == (
        ("read",),
        {"spot_trade": Severity.CRITICAL},
        False,
    )
    assert ro.max_age is None
    assert s.default_policy == "market-maker"

    acme, beta = s.keys
    assert isinstance(acme, BinanceKey)
    assert isinstance(beta, BinanceKey)
    assert (acme.name, acme.client, acme.exchange) == ("acme-binance-main", "acme", "binance")
    assert acme.api_key.get() == TEST_SECRETS["KMTEST_ACME_KEY"]
    assert acme.api_secret.get() == "acme-file-secret"
    assert acme.resolved_key_type == "hmac"  # detected from the secret
    assert acme.labels == {}
    assert s.policy_for(acme) == ("market-maker", mm)
    assert beta.name == "beta-binance.readonly_1"
    assert beta.api_secret.get() == TEST_SECRETS["KMTEST_BETA_SECRET"]
    assert beta.resolved_key_type == "hmac"
    assert beta.labels == {"desk": "eu", "tier": "gold"}
    assert s.policy_for(beta) == ("read-only", ro)

    assert [u.get() for u in s.notify.urls] == [
        "slack://T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX/#ops",
        "json://hooks.example/keymon",
    ]
    assert s.notify.reminder == timedelta(hours=1, minutes=30)
    assert s.notify.send_resolved is False
    # A channel URL written literally (as PRODUCT.md does) is accepted, with a warning.
    assert [w.split(":")[0] for w in loaded.warnings] == ["notify.urls[0]"]


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        ("30s", timedelta(seconds=30)),
        ("5m", timedelta(minutes=5)),
        ("1h", timedelta(hours=1)),
        ("14d", timedelta(days=14)),
        ("1h30m", timedelta(hours=1, minutes=30)),
    ],
    ids=["30s", "5m", "1h", "14d", "1h30m"],
)
def test_durations_are_read_as_written(written: str, expected: timedelta, tmp_path: Path) -> None:
    """Durations written 30s, 5m, 1h, 14d and 1h30m mean what they say."""
    text = (
        f"audit: {{interval: {written}, jitter: 1s}}\n"
        f"policies: {{p: {{max_age: {written}, review_warning: {written}, review_critical: 1s}}}}\n"
        f"default_policy: p\n{KEY_BLOCK}"
    )
    s = load(write(tmp_path, text)).settings
    assert s.audit.interval == expected
    assert s.policies["p"].max_age == expected
    assert s.policies["p"].review_warning == expected


def test_defaults_of_a_minimal_file(tmp_path: Path) -> None:
    """A file with only a key gets the documented defaults for everything else."""
    loaded = load(write(tmp_path, KEY_BLOCK))
    s = loaded.settings
    assert s.listen == "0.0.0.0:9877"
    assert s.data_dir == Path("data")
    assert (s.log.format, s.log.level) == ("json", "info")
    assert s.audit.interval == timedelta(minutes=5)
    assert s.audit.jitter == timedelta(seconds=10)
    assert s.audit.timeout == timedelta(seconds=10)
    assert s.exchanges.binance.base_url == "https://api.binance.com"
    assert s.exchanges.binance.max_weight_per_minute == 1200
    assert s.exchanges.binance.recv_window == timedelta(seconds=5)
    assert s.trusted_ips == ()
    assert s.notify.urls == ()
    assert s.notify.reminder == timedelta(hours=4)
    assert s.notify.send_resolved is True
    assert loaded.warnings == ()


def test_default_policy_exists_when_no_policies_are_given(tmp_path: Path) -> None:
    """Without a policies section every key gets PRODUCT.md's market-maker policy."""
    s = load(write(tmp_path, KEY_BLOCK)).settings
    assert s.default_policy == "market-maker"
    assert list(s.policies) == ["market-maker"]
    name, policy = s.policy_for(s.keys[0])
    assert name == "market-maker"
    assert policy.require == ("read", "spot_trade")
    assert policy.forbid == {
        "internal_transfer": Severity.CRITICAL,
        "universal_transfer": Severity.CRITICAL,
        "futures_trade": Severity.WARNING,
        "options_trade": Severity.WARNING,
        "margin_loan": Severity.WARNING,
        "portfolio_margin": Severity.WARNING,
    }
    assert policy.require_ip_restriction is True
    assert policy.review_warning == timedelta(days=14)
    assert policy.review_critical == timedelta(days=3)
    assert policy.max_age is None


def test_trusted_ips_accept_ipv4_ipv6_and_cidr(tmp_path: Path) -> None:
    """trusted_ips takes single IPv4/IPv6 addresses and CIDR networks of both families."""
    text = (
        'trusted_ips: ["203.0.113.10", "2001:db8::1", "198.51.100.0/28", "2001:db8:abcd::/48"]\n'
        + KEY_BLOCK
    )
    nets = load(write(tmp_path, text)).settings.trusted_ips
    assert nets == (
        ipaddress.ip_network("203.0.113.10/32"),
        ipaddress.ip_network("2001:db8::1/128"),
        ipaddress.ip_network("198.51.100.0/28"),
        ipaddress.ip_network("2001:db8:abcd::/48"),
    )
    assert ipaddress.ip_address("198.51.100.15") in nets[2]
    assert ipaddress.ip_address("198.51.100.16") not in nets[2]
    assert ipaddress.ip_address("2001:db8:abcd:12::5") in nets[3]


def test_env_secret_is_read_from_the_environment(tmp_path: Path) -> None:
    """{env: NAME} secrets hold the value of the named environment variable."""
    s = load(write(tmp_path, KEY_BLOCK)).settings
    assert s.keys[0].api_key.get() == TEST_SECRETS["KMTEST_ACME_KEY"]
    assert s.keys[0].api_secret.get() == TEST_SECRETS["KMTEST_ACME_SECRET"]


@pytest.mark.parametrize(
    "content",
    [b"file-secret-value", b"file-secret-value\n", b"file-secret-value\r\n"],
    ids=["no-newline", "lf", "crlf"],
)
def test_file_secret_drops_the_trailing_newline(content: bytes, tmp_path: Path) -> None:
    """{file: PATH} secrets hold the file's text without its trailing LF or CRLF."""
    secret_file = tmp_path / "api_secret"
    secret_file.write_bytes(content)
    text = KEY_BLOCK.replace("{env: KMTEST_ACME_SECRET}", f"{{file: {secret_file}}}")
    s = load(write(tmp_path, text)).settings
    assert s.keys[0].api_secret.get() == "file-secret-value"


def test_literal_secrets_are_accepted_with_a_warning_naming_the_location(tmp_path: Path) -> None:
    """Literal secrets load, and each one draws a warning naming its location."""
    text = (
        KEY_BLOCK
        + """\
  - name: trial
    client: beta
    exchange: binance
    api_key: literal-api-key
    api_secret: literal-api-secret
"""
    )
    loaded = load(write(tmp_path, text))
    trial = loaded.settings.keys[1]
    assert (trial.api_key.get(), trial.api_secret.get()) == (
        "literal-api-key",
        "literal-api-secret",
    )
    assert len(loaded.warnings) == 2
    assert loaded.warnings[0].startswith("keys[1].api_key: ")
    assert loaded.warnings[1].startswith("keys[1].api_secret: ")
    assert all("literal" in w for w in loaded.warnings)


@pytest.mark.parametrize("kind", ["ed25519", "rsa"])
def test_pem_private_key_secret_is_detected(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A PEM private key secret makes an Ed25519 or RSA key; an explicit key_type must agree."""
    pem = pem_private_key(kind)
    (tmp_path / "detected.pem").write_text(pem, encoding="utf-8")
    monkeypatch.setenv("KMTEST_PEM", pem)
    text = f"""\
keys:
  - name: detected
    client: acme
    exchange: binance
    api_key: {{env: KMTEST_ACME_KEY}}
    api_secret: {{file: {tmp_path}/detected.pem}}
  - name: explicit
    client: acme
    exchange: binance
    key_type: {kind}
    api_key: {{env: KMTEST_ACME_KEY}}
    api_secret: {{env: KMTEST_PEM}}
"""
    detected, explicit = load(write(tmp_path, text)).settings.keys
    assert isinstance(detected, BinanceKey)
    assert isinstance(explicit, BinanceKey)
    assert detected.resolved_key_type == kind
    assert explicit.resolved_key_type == kind
    assert detected.api_secret.get() == pem.removesuffix("\n")


# ----------------------------------------------------------------------------- environment


OVERRIDDEN_FILE = """\
listen: "0.0.0.0:9877"
log: {level: info, format: console}
audit: {interval: 5m, jitter: 20s, timeout: 7s}
exchanges:
  binance: {base_url: "https://api.binance.com", recv_window: 3s}
"""


@pytest.mark.parametrize(
    ("variable", "value", "field", "expected"),
    [
        ("KEYMON_AUDIT__INTERVAL", "1m", "audit.interval", timedelta(minutes=1)),
        (
            "KEYMON_EXCHANGES__BINANCE__BASE_URL",
            "http://127.0.0.1:9",
            "exchanges.binance.base_url",
            "http://127.0.0.1:9",
        ),
        ("KEYMON_LISTEN", "127.0.0.1:1", "listen", "127.0.0.1:1"),
        ("KEYMON_LOG__LEVEL", "warning", "log.level", "warning"),
    ],
    ids=["audit-interval", "binance-base-url", "listen", "log-level"],
)
def test_environment_overrides_the_file(
    variable: str,
    value: str,
    field: str,
    expected: object,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """KEYMON_<SECTION>__<FIELD> wins over the file and leaves the section's other fields."""
    monkeypatch.setenv(variable, value)
    s = load(write(tmp_path, OVERRIDDEN_FILE + KEY_BLOCK)).settings
    actual: Any = s
    for part in field.split("."):
        actual = getattr(actual, part)
    assert actual == expected
    # The rest of the file still applies.
    assert s.audit.jitter == timedelta(seconds=20)
    assert s.audit.timeout == timedelta(seconds=7)
    assert s.exchanges.binance.recv_window == timedelta(seconds=3)
    assert s.log.format == "console"


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("KEYMON_AUDIT__INTERVAL", "5x", "audit.interval: '5x' is not a duration"),
        ("KEYMON_LISTEN", "localhost", "listen: 'localhost' is not host:port"),
        (
            "KEYMON_EXCHANGES__BINANCE__RECV_WINDOW",
            "90s",
            "exchanges.binance.recv_window: must be more than 0s and at most 60s",
        ),
    ],
    ids=["audit-interval", "listen", "binance-recv-window"],
)
def test_invalid_environment_override_is_reported_with_its_location(
    variable: str, value: str, expected: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bad override is a problem at its setting's location, listed with the file's problems."""
    monkeypatch.setenv(variable, value)
    text = KEY_BLOCK.replace("KMTEST_ACME_SECRET", UNSET_ENV)
    problems = problems_of(write(tmp_path, text))
    assert len(problems) == 2, problems
    assert any(p.startswith(expected) for p in problems), problems
    assert f"keys[0].api_secret: environment variable {UNSET_ENV} is not set" in problems


def test_invalid_environment_override_names_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bad override names the environment variable it came from, since the file looks fine."""
    monkeypatch.setenv("KEYMON_AUDIT__INTERVAL", "5x")
    problems = problems_of(write(tmp_path, "audit: {interval: 5m}\n" + KEY_BLOCK))
    assert len(problems) == 1
    assert problems[0].startswith("audit.interval: ")
    assert "KEYMON_AUDIT__INTERVAL" in problems[0]


def test_unrelated_keymon_variables_are_ignored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Environment variables that merely start with KEYMON_ do not break loading."""
    monkeypatch.setenv("KEYMON_CONFIG", "/etc/keymon/keymon.yaml")
    monkeypatch.setenv("KEYMON_VERSION", "1.2.3")
    s = load(write(tmp_path, KEY_BLOCK)).settings
    assert s.listen == "0.0.0.0:9877"


# ----------------------------------------------------------------------------- secret safety


def _sentinel_config(source: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A valid configuration whose api_secret is SENTINEL, given by ``source``."""
    if source == "env":
        monkeypatch.setenv("KMTEST_SENTINEL", SENTINEL)
        ref = "{env: KMTEST_SENTINEL}"
    elif source == "file":
        (tmp_path / "sentinel_secret").write_text(SENTINEL + "\n", encoding="utf-8")
        ref = f"{{file: {tmp_path}/sentinel_secret}}"
    else:
        ref = SENTINEL
    return KEY_BLOCK.replace("{env: KMTEST_ACME_SECRET}", ref)


@pytest.mark.parametrize("source", ["env", "file", "literal"])
def test_secret_never_appears_in_settings_renderings(
    source: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A loaded secret is absent from repr, str, model dumps and the loader's warnings."""
    loaded = load(write(tmp_path, _sentinel_config(source, tmp_path, monkeypatch)))
    s = loaded.settings
    assert s.keys[0].api_secret.get() == SENTINEL  # it was loaded...
    renderings = {
        "repr": repr(s),
        "str": str(s),
        "json": s.model_dump_json(),
        "dump": str(s.model_dump()),
        "key": repr(s.keys[0]) + str(s.keys[0].api_secret),
        "loaded": repr(loaded),
        "warnings": "\n".join(loaded.warnings),
    }
    for what, text in renderings.items():  # ...and is shown nowhere
        assert SENTINEL not in text, what


@pytest.mark.parametrize("source", ["env", "file", "literal"])
def test_secret_never_appears_in_validate_config_output(
    source: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """validate-config on a valid file prints no secret, whatever the secret's source."""
    path = write(tmp_path, _sentinel_config(source, tmp_path, monkeypatch))
    status, out, err = run_cli(["validate-config", "--config", str(path)], capsys)
    assert status == 0, err
    assert "valid" in out
    assert SENTINEL not in out + err


@pytest.mark.parametrize("source", ["env", "file", "literal"])
def test_secret_never_appears_in_config_errors(
    source: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An invalid file whose problems involve the secret never quotes the secret."""
    text = "audit: {interval: 5x}\n" + _sentinel_config(source, tmp_path, monkeypatch)
    text += "    key_type: ed25519\n"  # the sentinel is an HMAC secret: a key_type mismatch
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load(path)
    assert len(info.value.problems) == 2, info.value.problems
    assert SENTINEL not in str(info.value)
    assert SENTINEL not in repr(info.value)
    status, out, err = run_cli(["validate-config", "--config", str(path)], capsys)
    assert status == 2
    assert "key_type is ed25519" in err
    assert SENTINEL not in out + err


def test_pem_looking_secret_is_not_quoted(tmp_path: Path) -> None:
    """A secret that looks like PEM but is not a key is rejected without quoting its text."""
    text = KEY_BLOCK.replace(
        "{env: KMTEST_ACME_SECRET}",
        f'"-----BEGIN PRIVATE KEY-----\\n{SENTINEL}\\n-----END PRIVATE KEY-----\\n"',
    )
    problems = problems_of(write(tmp_path, text))
    assert problems == ["keys[0].api_secret: looks like PEM but is not an unencrypted private key"]


@pytest.mark.parametrize(
    "line",
    [
        f'    api_secret: "{SENTINEL}',
        f"    api_secret: {SENTINEL}: pasted-twice",
        f"\tapi_secret: {SENTINEL}",
        pytest.param(f"    api_secret: *{SENTINEL}"),
        pytest.param(f"    api_secret: !{SENTINEL}"),
    ],
    ids=["unclosed-quote", "stray-colon", "tab", "star-alias", "bang-tag"],
)
def test_yaml_error_on_a_literal_secret_line_does_not_quote_it(
    line: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A YAML error on the line holding a literal secret never shows the secret."""
    lines = KEY_BLOCK.splitlines()
    lines[5] = line  # the api_secret line
    path = write(tmp_path, "\n".join(lines) + "\n")
    problems = problems_of(path)
    assert len(problems) == 1
    assert problems[0].startswith(f"{path}:")
    assert "invalid YAML" in problems[0]
    assert SENTINEL not in problems[0]
    status, out, err = run_cli(["validate-config", "--config", str(path)], capsys)
    assert status == 2
    assert SENTINEL not in out + err


@pytest.mark.parametrize("valid", [True, False], ids=["valid", "yaml-error"])
def test_secret_never_appears_in_a_real_validate_config_process(
    valid: bool, tmp_path: Path
) -> None:
    """``python -m keymon validate-config`` prints no secret given by env, file or literally."""
    (tmp_path / "sentinel_secret").write_text(SENTINEL + "\r\n", encoding="utf-8")
    text = f"""\
keys:
  - name: by-env
    client: acme
    exchange: binance
    api_key: {{env: KMTEST_ACME_KEY}}
    api_secret: {{env: KMTEST_SENTINEL}}
  - name: by-file
    client: acme
    exchange: binance
    api_key: {{env: KMTEST_ACME_KEY}}
    api_secret: {{file: {tmp_path}/sentinel_secret}}
  - name: literally
    client: acme
    exchange: binance
    api_key: literal-api-key
    api_secret: {SENTINEL}{"" if valid else ": pasted-twice"}
"""
    path = write(tmp_path, text)
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("KEYMON_")}
    env["KMTEST_SENTINEL"] = SENTINEL
    proc = subprocess.run(
        [sys.executable, "-m", "keymon", "validate-config", "--config", str(path)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    output = proc.stdout + proc.stderr
    assert SENTINEL not in output
    assert "Traceback" not in output
    if valid:
        assert proc.returncode == 0, output
        assert "valid (3 key(s)" in proc.stdout
        assert "keys[2].api_secret: secret written literally" in proc.stderr
    else:
        assert proc.returncode == 2, output
        assert f"{path}:16:" in proc.stderr


# ----------------------------------------------------------------------------- command line


def test_validate_config_accepts_a_minimal_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """validate-config exits 0 on a minimal valid file, says so on stdout and nothing on stderr."""
    path = write(tmp_path, KEY_BLOCK)
    status, out, err = run_cli(["validate-config", "--config", str(path)], capsys)
    assert status == 0
    assert out.strip() == f"{path}: valid (1 key(s), 1 policy(ies))"
    assert err == ""


def test_validate_config_prints_literal_secret_warnings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """validate-config still exits 0 with literal secrets, warning about each one on stderr."""
    text = KEY_BLOCK.replace("{env: KMTEST_ACME_SECRET}", "literal-api-secret")
    status, _, err = run_cli(["validate-config", "--config", str(write(tmp_path, text))], capsys)
    assert status == 0
    assert "keys[0].api_secret: secret written literally" in err
    assert "literal-api-secret" not in err


_CLI_FILES = [name for name, _ in INVALID_CASES] + ["invalid-top-level-number-key.yaml"]


@pytest.mark.parametrize(
    "name",
    [pytest.param(n) for n in _CLI_FILES],
    ids=[_case_id(n) for n in _CLI_FILES],
)
def test_validate_config_lists_every_problem_and_exits_2(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """validate-config exits 2 on an invalid file, every problem on stderr, no traceback."""
    path = materialize(name, tmp_path)
    status, out, err = run_cli(["validate-config", "--config", str(path)], capsys)
    problems = problems_of(path)
    assert status == 2
    assert out == ""
    assert "Traceback" not in err
    assert problems
    for problem in problems:  # each on a line of its own
        assert any(line.endswith(problem) for line in err.splitlines()), (problem, err)


@pytest.mark.parametrize(
    "name",
    [
        "invalid-several-problems.yaml",
        "invalid-secret-env-unset.yaml",
        "invalid-yaml-syntax.yaml",
        "invalid-empty-file.yaml",
        "invalid-recv-window-90s.yaml",
    ],
    ids=["several-problems", "secret-env-unset", "yaml-syntax", "empty-file", "recv-window"],
)
def test_check_exits_3_on_an_invalid_file(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """check exits 3 (UNKNOWN) on an invalid file, listing its problems, before any audit."""
    path = materialize(name, tmp_path)
    problems = problems_of(path)  # invalid: check never gets as far as an exchange
    status, out, err = run_cli(["check", "--config", str(path)], capsys)
    assert status == 3
    assert out == ""
    assert "Traceback" not in err
    for problem in problems:
        assert problem in err


def test_check_exits_3_on_a_missing_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """check exits 3 (UNKNOWN) when its configuration file does not exist."""
    path = tmp_path / "missing.yaml"
    status, _, err = run_cli(["check", "--config", str(path)], capsys)
    assert status == 3
    assert "no such file" in err
    assert "Traceback" not in err


def test_validate_config_on_a_missing_file_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """validate-config on a missing file names it, says it does not exist and exits 2."""
    path = tmp_path / "missing.yaml"
    status, out, err = run_cli(["validate-config", "--config", str(path)], capsys)
    assert status == 2
    assert out == ""
    assert str(path) in err
    assert "no such file" in err
    assert "Traceback" not in err


def test_validate_config_on_a_missing_file_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """validate-config on a missing file prints one line, not a header and a list of one."""
    path = tmp_path / "missing.yaml"
    status, _, err = run_cli(["validate-config", "--config", str(path)], capsys)
    assert status == 2
    assert len(err.strip().splitlines()) == 1, err
    assert err.count(str(path)) == 1, err


# ----------------------------------------------------------------------------- shipped examples


def _example_text(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """config/example.yaml with its secret file moved into ``tmp_path`` and its env vars set."""
    text = EXAMPLE.read_text(encoding="utf-8")
    assert "/run/secrets/acme_binance_secret" in text
    (tmp_path / "acme_binance_secret").write_text("example-file-secret\n", encoding="utf-8")
    for name in (
        "ACME_BINANCE_KEY",
        "GLOBEX_BINANCE_KEY",
        "GLOBEX_BINANCE_SECRET",
        "INITECH_BITGET_KEY",
        "INITECH_BITGET_SECRET",
        "INITECH_BITGET_PASSPHRASE",
        "INITECH_KUCOIN_KEY",
        "INITECH_KUCOIN_SECRET",
        "INITECH_KUCOIN_PASSPHRASE",
        "ACME_OKX_KEY",
        "ACME_OKX_SECRET",
        "INITECH_GATE_KEY",
        "INITECH_GATE_SECRET",
        "ACME_OKX_PASSPHRASE",
        "GLOBEX_HTX_KEY",
        "GLOBEX_HTX_SECRET",
        "ACME_KRAKEN_KEY",
        "ACME_BINGX_KEY",
        "ACME_BINGX_SECRET",
        "ACME_BITMART_KEY",
        "ACME_BITMART_SECRET",
        "ACME_BITMART_MEMO",
        "GLOBEX_XT_KEY",
        "GLOBEX_XT_SECRET",
        "ACME_BITRUE_KEY",
        "ACME_BITRUE_SECRET",
        "ACME_LBANK_KEY",
        "ACME_LBANK_SECRET",
        "ACME_COINSTORE_KEY",
        "ACME_COINSTORE_SECRET",
        "ACME_BICONOMY_KEY",
        "ACME_BICONOMY_SECRET",
    ):
        monkeypatch.setenv(name, f"example-{name.lower()}")
    # A Kraken private key is base64 (checked at load time).
    monkeypatch.setenv("ACME_KRAKEN_SECRET", "ZXhhbXBsZS1hY21lLWtyYWtlbi1zZWNyZXQ=")
    monkeypatch.setenv("OPS_NOTIFY_URL", "json://hooks.example/keymon")
    # Coinbase checks its key's shape and private key at load: give it real-looking ones.
    monkeypatch.setenv("ACME_COINBASE_KEY", COINBASE_EXAMPLE_NAME)
    assert "/run/secrets/acme_coinbase_key.pem" in text
    (tmp_path / "acme_coinbase_key.pem").write_text(coinbase_pem(), encoding="utf-8")
    text = text.replace("/run/secrets/acme_coinbase_key.pem", f"{tmp_path}/acme_coinbase_key.pem")
    return text.replace("/run/secrets/acme_binance_secret", f"{tmp_path}/acme_binance_secret")


def test_example_yaml_loads_without_warnings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """config/example.yaml loads once its env vars and secret file exist, with no warning."""
    loaded = load(write(tmp_path, _example_text(tmp_path, monkeypatch)))
    assert loaded.warnings == ()
    s = loaded.settings
    keys = {k.name: k for k in s.keys}
    assert len(keys) == len(s.keys)
    assert set(keys) == {
        "acme-binance-main",
        "globex-binance-futures",
        "initech-bitget-spot",
        "initech-gate-spot",
        "acme-kraken-spot",
        "initech-kucoin-spot",
        "acme-okx-main",
        "globex-htx-spot",
        "acme-bingx-spot",
        "acme-coinbase-spot",
        "acme-bitmart-spot",
        "globex-xt-spot",
        "acme-bitrue-spot",
        "acme-lbank-spot",
        "acme-coinstore-spot",
        "acme-biconomy-spot",
    }
    acme, globex = keys["acme-binance-main"], keys["globex-binance-futures"]
    bitget, gate, kucoin = (
        keys["initech-bitget-spot"],
        keys["initech-gate-spot"],
        keys["initech-kucoin-spot"],
    )
    okx, htx = keys["acme-okx-main"], keys["globex-htx-spot"]
    bitmart, xt = keys["acme-bitmart-spot"], keys["globex-xt-spot"]
    bitrue, lbank = keys["acme-bitrue-spot"], keys["acme-lbank-spot"]
    assert isinstance(bitmart, BitmartKey)
    assert bitmart.memo.get() == "example-acme_bitmart_memo"
    assert isinstance(xt, XtKey)
    assert isinstance(bitrue, BitrueKey)
    assert isinstance(lbank, LbankKey)
    assert lbank.api_secret.get() == "example-acme_lbank_secret"
    coinstore, biconomy = keys["acme-coinstore-spot"], keys["acme-biconomy-spot"]
    assert isinstance(coinstore, CoinstoreKey)
    assert coinstore.api_secret.get() == "example-acme_coinstore_secret"
    assert isinstance(biconomy, BiconomyKey)
    assert biconomy.api_key.get() == "example-acme_biconomy_key"
    kraken, bingx = keys["acme-kraken-spot"], keys["acme-bingx-spot"]
    coinbase = keys["acme-coinbase-spot"]
    assert isinstance(kraken, KrakenKey)
    assert isinstance(bingx, BingxKey)
    assert isinstance(coinbase, CoinbaseKey)
    assert coinbase.api_key.get() == COINBASE_EXAMPLE_NAME
    assert isinstance(htx, HtxKey)
    assert htx.uid == "12345678"
    assert isinstance(gate, GateKey)
    assert isinstance(bitget, BitgetKey)
    assert bitget.passphrase.get() == "example-initech_bitget_passphrase"
    assert isinstance(kucoin, KucoinKey)
    assert kucoin.passphrase.get() == "example-initech_kucoin_passphrase"
    assert kucoin.key_version == 3
    assert acme.api_secret.get() == "example-file-secret"
    assert s.policy_for(acme)[0] == "market-maker"
    assert s.policy_for(globex)[0] == "futures-desk"
    assert isinstance(okx, OkxKey)
    assert okx.passphrase.get() == "example-acme_okx_passphrase"
    assert [u.get() for u in s.notify.urls] == ["json://hooks.example/keymon"]


def test_example_yaml_sets_every_field() -> None:
    """config/example.yaml writes out every setting keymon has, so it documents all of them."""
    raw: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    assert set(raw) == set(Settings.model_fields)
    assert set(raw["log"]) == set(LogSettings.model_fields)
    assert set(raw["audit"]) == set(AuditSettings.model_fields)
    # Every exchange keymon audits has its section (a settings model may precede its adapter).
    assert set(raw["exchanges"]) == set(EXCHANGES)
    assert set(raw["exchanges"]) <= set(ExchangesSettings.model_fields)
    assert set().union(*raw["policies"].values()) == set(Policy.model_fields)
    for name, section in raw["exchanges"].items():
        model = ExchangesSettings.model_fields[name].annotation
        assert model is not None
        # allow_insecure_http (every section has it) is written out once, under binance.
        assert set(section) | {"allow_insecure_http"} == set(model.model_fields), name
    assert "allow_insecure_http" in raw["exchanges"]["binance"]
    assert set().union(*raw["keys"]) == (
        set(BinanceKey.model_fields)
        | set(BitgetKey.model_fields)
        | set(KucoinKey.model_fields)
        | set(OkxKey.model_fields)
        | set(HtxKey.model_fields)
        | set(BitmartKey.model_fields)
        | set(CoinstoreKey.model_fields)
        | set(BiconomyKey.model_fields)
        | set(BingxKey.model_fields)
    )
    assert set(raw["notify"]) == set(NotifySettings.model_fields)
    secrets = [s for k in raw["keys"] for s in (k["api_key"], k["api_secret"])]
    secrets += [k["passphrase"] for k in raw["keys"] if "passphrase" in k]
    secrets += [k["memo"] for k in raw["keys"] if "memo" in k]
    secrets += raw["notify"]["urls"]
    assert all(isinstance(s, dict) and set(s) <= {"env", "file"} for s in secrets)


def test_example_yaml_shows_the_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The values config/example.yaml gives the server settings are keymon's defaults."""
    s = load(write(tmp_path, _example_text(tmp_path, monkeypatch))).settings
    defaults = load(write(tmp_path, KEY_BLOCK, "defaults.yaml")).settings
    assert s.listen == defaults.listen
    assert s.data_dir == defaults.data_dir
    assert s.log == defaults.log
    assert s.audit == defaults.audit
    assert s.exchanges == defaults.exchanges
    assert s.notify.reminder == defaults.notify.reminder
    assert s.notify.send_resolved == defaults.notify.send_resolved
    default_mm = defaults.policies["market-maker"]
    assert s.policies["market-maker"] == default_mm.model_copy(
        update={"max_age": timedelta(days=365)}
    )


def test_minimal_yaml_is_one_key_with_env_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    """config/minimal.yaml holds just one Binance key with env secrets and loads cleanly."""
    raw: dict[str, Any] = yaml.safe_load(MINIMAL.read_text(encoding="utf-8"))
    assert list(raw) == ["keys"]
    monkeypatch.setenv("ACME_BINANCE_KEY", "minimal-key")
    monkeypatch.setenv("ACME_BINANCE_SECRET", "minimal-secret")
    loaded: LoadedConfig = load(MINIMAL)
    assert loaded.warnings == ()
    (key,) = loaded.settings.keys
    assert (key.exchange, key.api_key.get(), key.api_secret.get()) == (
        "binance",
        "minimal-key",
        "minimal-secret",
    )


def test_validate_config_accepts_the_shipped_minimal_yaml(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """validate-config exits 0 on config/minimal.yaml once its env vars are set, 2 before."""
    monkeypatch.delenv("ACME_BINANCE_KEY", raising=False)
    monkeypatch.delenv("ACME_BINANCE_SECRET", raising=False)
    status, _, err = run_cli(["validate-config", "--config", str(MINIMAL)], capsys)
    assert status == 2
    assert "keys[0].api_key: environment variable ACME_BINANCE_KEY is not set" in err
    monkeypatch.setenv("ACME_BINANCE_KEY", "minimal-key")
    monkeypatch.setenv("ACME_BINANCE_SECRET", "minimal-secret")
    status, out, err = run_cli(["validate-config", "--config", str(MINIMAL)], capsys)
    assert status == 0, err
    assert "valid (1 key(s)" in out


def test_key_interval_must_exceed_jitter(tmp_path: Path) -> None:
    """A per-key interval not longer than audit.jitter is refused, with its location."""
    path = tmp_path / "k.yaml"
    path.write_text(
        "audit: {jitter: 10s}\n"
        "keys:\n"
        "  - {name: a, client: c, exchange: binance, api_key: k, api_secret: s, interval: 5s}\n"
    )
    with pytest.raises(ConfigError) as exc:
        load(path)
    assert exc.value.problems == [
        "keys[0].interval: 5s must be at least 1s and longer than audit.jitter (10s)"
    ]


def test_bybit_key_and_settings(tmp_path: Path) -> None:
    """A Bybit key loads with the Bybit defaults; typos get Bybit-specific suggestions."""
    from keymon.exchanges.bybit import BybitKey

    text = """
exchanges:
  bybit: {recv_windw: 5s}
keys:
  - name: acme-bybit
    client: acme
    exchange: bybit
    api_key: k
    api_secret: s
    key_typ: hmac
"""
    problems = problems_of(write(tmp_path, text))
    assert "exchanges.bybit.recv_windw: unknown field (did you mean 'recv_window'?)" in problems
    assert "keys[0].key_typ: unknown field" in problems  # Bybit keys have no key_type
    good = text.replace("  bybit: {recv_windw: 5s}", "  bybit: {}").replace(
        "    key_typ: hmac\n", ""
    )
    settings = load(write(tmp_path, good)).settings
    (key,) = settings.keys
    assert isinstance(key, BybitKey)
    assert settings.exchanges.bybit.base_url == "https://api.bybit.com"
    assert settings.exchanges.bybit.recv_window.total_seconds() == 5
    assert settings.exchanges.bybit.max_weight_per_minute == 60


def test_kucoin_key_passphrase_is_a_secret(tmp_path: Path) -> None:
    """A KuCoin key needs a passphrase; a literal one warns like any literal secret."""
    text = """\
keys:
  - name: k
    client: acme
    exchange: kucoin
    api_key: {env: KMTEST_ACME_KEY}
    api_secret: {env: KMTEST_ACME_SECRET}
    passphrase: literal-passphrase
"""
    loaded = load(write(tmp_path, text))
    (key,) = loaded.settings.keys
    assert isinstance(key, KucoinKey)
    assert key.passphrase.get() == "literal-passphrase"
    assert key.key_version == 3
    assert any(
        w.startswith("keys[0].passphrase: secret written literally") for w in loaded.warnings
    )
    assert all("literal-passphrase" not in w for w in loaded.warnings)
    with pytest.raises(ConfigError) as caught:
        load(write(tmp_path, text.replace("    passphrase: literal-passphrase\n", "")))
    assert "passphrase" in str(caught.value)


def test_kucoin_typos_get_kucoin_suggestions(tmp_path: Path) -> None:
    """Typos under exchanges.kucoin and in a KuCoin key are matched against KuCoin's fields."""
    text = """
exchanges:
  kucoin: {max_weight_per_minut: 600, recv_window: 5s}
keys:
  - name: acme-kucoin
    client: acme
    exchange: kucoin
    api_key: k
    api_secret: s
    passphrase: p
    key_versoin: 2
"""
    problems = problems_of(write(tmp_path, text))
    assert (
        "exchanges.kucoin.max_weight_per_minut: unknown field"
        " (did you mean 'max_weight_per_minute'?)" in problems
    )
    assert any(p.startswith("exchanges.kucoin.recv_window: unknown field") for p in problems)
    assert "keys[0].key_versoin: unknown field (did you mean 'key_version'?)" in problems


def test_okx_key_problems_name_the_passphrase(tmp_path: Path) -> None:
    """An OKX key without a passphrase, or with a misspelt one, says so; okx settings have no
    recv_window (OKX's window is a fixed 30 s)."""
    text = """
exchanges:
  okx: {recv_window: 5s}
keys:
  - {name: a, client: acme, exchange: okx, api_key: k, api_secret: s}
  - {name: b, client: acme, exchange: okx, api_key: k2, api_secret: s2, passphrse: p}
"""
    problems = problems_of(write(tmp_path, text))
    joined = "\n".join(problems)
    assert "keys[0].passphrase" in joined
    assert "did you mean 'passphrase'" in joined
    assert "exchanges.okx.recv_window" in joined


def test_okx_passphrase_is_a_redacted_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    """The passphrase comes from {env: ...} and is among the values logs redact."""
    monkeypatch.setenv("KMTEST_OKX_PASSPHRASE", SENTINEL)
    key = {
        "name": "k",
        "client": "acme",
        "exchange": "okx",
        "api_key": "okx-key",
        "api_secret": "okx-secret",
        "passphrase": {"env": "KMTEST_OKX_PASSPHRASE"},
    }
    s = Settings(keys=[key])
    assert SENTINEL not in repr(s.keys[0])
    assert SENTINEL in {secret.get() for secret in key_secrets(s.keys[0])}


def test_bingx_key_and_settings(tmp_path: Path) -> None:
    """A BingX key needs only key and secret; recv_window is capped at BingX's 5 s and typos
    under exchanges.bingx get BingX-specific suggestions."""
    text = """
exchanges:
  bingx: {recv_windw: 5s}
keys:
  - {name: acme-bingx, client: acme, exchange: bingx, api_key: k, api_secret: s, uid: "1"}
"""
    problems = problems_of(write(tmp_path, text))
    assert "exchanges.bingx.recv_windw: unknown field (did you mean 'recv_window'?)" in problems
    assert "keys[0].uid: unknown field" in problems  # keymon reads BingX keys without a uid
    too_long = text.replace("recv_windw: 5s", "recv_window: 6s").replace(', uid: "1"', "")
    assert problems_of(write(tmp_path, too_long)) == [
        "exchanges.bingx.recv_window: must be more than 0s and at most 5s"
    ]
    good = too_long.replace("recv_window: 6s", "recv_window: 2s")
    settings = load(write(tmp_path, good)).settings
    (key,) = settings.keys
    assert isinstance(key, BingxKey)
    assert settings.exchanges.bingx.base_url == "https://open-api.bingx.com"
    assert settings.exchanges.bingx.recv_window == timedelta(seconds=2)
    assert settings.exchanges.bingx.max_weight_per_minute == 60


# ----------------------------------------------------------------------------- limits (#12)
# The broken side of each limit is in tests/test_config_corpus.py; here, what stays accepted.


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://api.binance.com/", "https://api.binance.com"),
        ("https://api.binance.com:8443", "https://api.binance.com:8443"),
        ("http://127.0.0.1:8900", "http://127.0.0.1:8900"),
        ("http://127.5.6.7", "http://127.5.6.7"),
        ("http://[::1]:8900/", "http://[::1]:8900"),
        ("http://localhost:8900", "http://localhost:8900"),
    ],
)
def test_base_url_https_anywhere_http_on_loopback(url: str, expected: str, tmp_path: Path) -> None:
    """https to any host; plain http to a loopback address (simulators, tests)."""
    text = f"exchanges: {{binance: {{base_url: '{url}'}}}}\n" + KEY_BLOCK
    assert load(write(tmp_path, text)).settings.exchanges.binance.base_url == expected


def test_allow_insecure_http_opens_plain_http_to_one_exchange(tmp_path: Path) -> None:
    """allow_insecure_http lets one section talk plain http to a non-loopback host (the
    compose demo's simulator); every other section keeps the https rule."""
    text = (
        "exchanges:\n"
        "  binance: {base_url: 'http://simulator:8900', allow_insecure_http: true}\n"
        "  bybit: {base_url: 'http://simulator:8901'}\n" + KEY_BLOCK
    )
    problems = problems_of(write(tmp_path, text))
    assert len(problems) == 1, problems
    assert problems[0].startswith("exchanges.bybit.base_url: plain http to simulator ")
    fixed = text.replace("  bybit: {base_url: 'http://simulator:8901'}\n", "")
    settings = load(write(tmp_path, fixed)).settings
    assert settings.exchanges.binance.base_url == "http://simulator:8900"


def test_durations_up_to_ten_years(tmp_path: Path) -> None:
    """3650d is the longest duration accepted, in every setting and however it is written."""
    text = "policies: {market-maker: {max_age: %s}}\n" + KEY_BLOCK
    for written in ("3650d", "520w10d", "315360000"):
        policy = load(write(tmp_path, text % written)).settings.policies["market-maker"]
        assert policy.max_age == timedelta(days=3650), written
    assert problems_of(write(tmp_path, text % "3650d1s")) == [
        "policies.market-maker.max_age: '3650d1s' is longer than 3650d, the longest duration "
        "keymon accepts"
    ]


def test_history_since_is_bounded(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """history --since takes durations up to 3650d; a longer one is exit 2, not an overflow."""
    path = write(tmp_path, f"data_dir: {tmp_path}/state\n" + KEY_BLOCK)
    status, out, err = run_cli(["history", "--config", str(path), "--since", "3650d"], capsys)
    assert status == 0, err
    assert "no changes recorded" in out
    for since in ("1000000d", "99999999999d"):
        status, _, err = run_cli(["history", "--config", str(path), "--since", since], capsys)
        assert status == 2
        assert f"--since {since}: '{since}' is longer than 3650d" in err
        assert "Traceback" not in err


@pytest.mark.parametrize(
    ("written", "expected"),
    [("false", False), ("0", False), ("no", False), ("True", True), ("on", True)],
)
def test_boolean_overrides_take_the_usual_words(
    written: str, expected: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An environment override of a boolean is text: true/false, yes/no, on/off, 1/0."""
    monkeypatch.setenv("KEYMON_NOTIFY__SEND_RESOLVED", written)
    assert load(write(tmp_path, KEY_BLOCK)).settings.notify.send_resolved is expected


def test_env_json_override_still_applies(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A well-formed JSON override (a list) is read as before."""
    monkeypatch.setenv("KEYMON_TRUSTED_IPS", '["203.0.113.10", "2001:db8::/32"]')
    settings = load(write(tmp_path, KEY_BLOCK)).settings
    assert [str(n) for n in settings.trusted_ips] == ["203.0.113.10/32", "2001:db8::/32"]


def test_aliases_and_merge_keys_still_work(tmp_path: Path) -> None:
    """Anchors, aliases and merge keys, as people use them to share parts of keys, load; a key
    a merge brings in may be given again (that is no duplicate)."""
    text = """\
keys:
  - &acme
    name: one
    client: acme
    exchange: binance
    labels: &eu {desk: eu}
    api_key: {env: KMTEST_ACME_KEY}
    api_secret: {env: KMTEST_ACME_SECRET}
  - <<: *acme
    name: two
    labels: *eu
    api_key: {env: KMTEST_BETA_KEY}
    api_secret: {env: KMTEST_BETA_SECRET}
"""
    settings = load(write(tmp_path, text)).settings
    assert [(k.name, k.client, k.labels) for k in settings.keys] == [
        ("one", "acme", {"desk": "eu"}),
        ("two", "acme", {"desk": "eu"}),
    ]
    assert settings.keys[1].api_secret.get() == TEST_SECRETS["KMTEST_BETA_SECRET"]


@pytest.mark.parametrize("loader", ["libyaml", "pure-python"])
def test_unreadable_value_in_a_key_entry_is_located(
    loader: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Key entries are built as they are read (memory): a value a tag cannot read inside one
    is still a problem naming its line and column, and the file's later lines do not matter."""
    if loader == "pure-python":
        monkeypatch.setattr(config_module, "_FastLoader", None)
    text = """\
keys:
  - name: one
    client: acme
    exchange: binance
    api_key: {env: KMTEST_ACME_KEY}
    api_secret: {env: KMTEST_ACME_SECRET}
  - name: two
    client: !!int nope
"""
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load(path)
    assert caught.value.problems == [f"{path}:8:13: invalid YAML: !!int cannot read this value"]


@pytest.mark.parametrize("loader", ["libyaml", "pure-python"])
@pytest.mark.parametrize("style", ["flow", "block"])
def test_nesting_limit_in_both_parsers(
    loader: str, style: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MAX_NESTING levels load (and fail validation as usual); one more, or 100,000, is a
    located problem in either parser, never a crash or a RecursionError."""
    if loader == "pure-python":
        monkeypatch.setattr(config_module, "_FastLoader", None)

    def nested(depth: int) -> str:  # the top-level mapping is the first level
        if style == "flow":
            return "x: " + "[" * (depth - 1) + "]" * (depth - 1) + "\n" + KEY_BLOCK
        return KEY_BLOCK + "x:\n  " + "- " * (depth - 1) + "1\n"

    assert problems_of(write(tmp_path, nested(MAX_NESTING))) == ["x: unknown field"]
    for depth in (MAX_NESTING + 1, 100_000):
        (problem,) = problems_of(write(tmp_path, nested(depth)))
        assert problem.startswith(f"{tmp_path}/keymon.yaml:"), problem
        assert problem.endswith(
            f"nested more than {MAX_NESTING} levels deep (keymon's settings need 5)"
        ), problem


def test_an_unexpected_failure_is_still_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever goes wrong inside load() surfaces as one ConfigError naming the file (and asking
    for a bug report), never as another exception: callers rely on it (reload, check)."""

    def broken(raw: object) -> list[str]:
        raise RuntimeError(SENTINEL)

    monkeypatch.setattr(config_module, "_cross_check", broken)
    path = write(tmp_path, KEY_BLOCK)
    problems = problems_of(path)
    assert problems == [
        f"{path}: the configuration could not be validated (RuntimeError); this is a bug in "
        "keymon, please report it"
    ]


@pytest.mark.parametrize(
    ("name", "shown"),
    [
        ("ACME_BINANCE_SECRET", True),
        ("SECRET", True),
        ("KEY_2", True),
        ("HUNTER2", False),  # a password in capitals
        ("vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A", False),  # a key
        ("acme_secret", False),
    ],
)
def test_env_names_are_quoted_only_when_they_look_like_names(name: str, shown: bool) -> None:
    """An unset variable is named in the message only when its name looks like one: a key or
    password pasted where the name belongs is not echoed."""
    with pytest.raises(ValueError, match="not set") as info:
        config_module._resolve_secret({"env": name})
    assert (name in str(info.value)) is shown


# ----------------------------------------------------------------------------- --no-secrets


def _unset_example_secrets(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Unset every variable config/example.yaml names; return their names."""
    names = re.findall(r"\{env: ([A-Z]+_\w+)\}", EXAMPLE.read_text(encoding="utf-8"))
    for name in names:
        monkeypatch.delenv(name, raising=False)
    return names


def test_validate_config_no_secrets_passes_on_the_example_that_fails_without_it(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The example, whose secrets exist nowhere here, fails plainly but passes --no-secrets."""
    names = _unset_example_secrets(monkeypatch)
    status, _, err = run_cli(["validate-config", "--config", str(EXAMPLE)], capsys)
    assert status == 2
    assert len([line for line in err.splitlines() if line.startswith("  ")]) == 37
    status, out, err = run_cli(
        ["validate-config", "--no-secrets", "--config", str(EXAMPLE)], capsys
    )
    assert (status, err) == (0, "")
    assert "valid (16 key(s)" in out
    assert "37 secret reference(s) not read (--no-secrets)" in out
    assert len(names) == 35  # and two {file: ...} references
    assert "validate-config --no-secrets --config config/example.yaml" in EXAMPLE.read_text()


def test_no_secrets_still_checks_everything_else(tmp_path: Path) -> None:
    """--no-secrets reports bad references, duplicate names, policies, fields and durations."""
    path = write(
        tmp_path,
        """\
audit: {interval: 5x}
keys:
  - name: acme-binance-main
    client: acme
    exchange: binance
    policy: nope
    api_key: {env: lower-case secret?}
    api_secret: {evn: ACME_SECRET}
  - name: acme-binance-main
    client: acme
    exchange: binance
    api_key: {env: NOT_SET_ANYWHERE}
    api_secret: {file: /nonexistent/secret}
    labels: {key: x}
""",
    )
    with pytest.raises(ConfigError) as info:
        load(path, resolve_secrets=False)
    problems = info.value.problems
    expected = [
        "audit.interval: '5x' is not a duration",
        "keys[0].api_key: env: is not an environment variable name",
        "keys[0].api_secret: a secret is {env: NAME}, {file: PATH} or a string",
        "keys[0].policy: no policy named 'nope'",
        "keys[1].name: 'acme-binance-main' is already the name of keys[0]",
        "keys[1].labels: 'key' is a label keymon sets itself",
    ]
    for wanted in expected:
        assert any(wanted in problem for problem in problems), (wanted, problems)
    assert len(problems) == len(expected), problems
    assert not any("NOT_SET_ANYWHERE" in p or "/nonexistent" in p for p in problems)


def test_no_secrets_never_reads_a_secret_and_marks_references_unresolved(tmp_path: Path) -> None:
    """A readable secret file is not read either: every reference is an unresolved placeholder."""
    secret = tmp_path / "secret"
    secret.write_text(SENTINEL)
    path = write(
        tmp_path,
        f"""\
keys:
  - name: acme-kraken
    client: acme
    exchange: kraken
    api_key: {{env: KMTEST_ACME_KEY}}
    api_secret: {{file: {secret}}}
  - name: acme-coinbase
    client: acme
    exchange: coinbase
    api_key: {{env: KMTEST_ACME_KEY}}
    api_secret: {{env: KMTEST_ACME_SECRET}}
notify:
  urls: [{{env: KMTEST_ACME_SECRET}}]
""",
    )
    settings = load(path, resolve_secrets=False).settings
    secrets = [s for key in settings.keys for s in key_secrets(key)] + list(settings.notify.urls)
    assert len(secrets) == 5
    assert not any(s.resolved for s in secrets)
    assert not any(SENTINEL in s.get() or "acme-api" in s.get() for s in secrets)
    assert settings.secret_values() == set()
    # Resolved, the same file fails on its key material (Kraken's not base64, Coinbase's key
    # name and private key) and its channel URL.
    assert len(problems_of(path)) == 4


# ----------------------------------------------------------------------------- default_policy


def test_default_policy_is_not_needed_when_every_key_names_its_policy(tmp_path: Path) -> None:
    """One custom policy and every key naming it: valid, though default_policy names nothing."""
    path = write(
        tmp_path,
        "policies:\n  desk:\n    require: [read]\n"
        + KEY_BLOCK
        + "    policy: desk\n"
        + KEY_BLOCK.removeprefix("keys:\n").replace("acme-binance-main", "acme-binance-2")
        + "    policy: desk\n",
    )
    settings = load(path).settings
    assert settings.default_policy == "market-maker"
    assert [settings.policy_for(k)[0] for k in settings.keys] == ["desk", "desk"]


def test_missing_default_policy_names_the_keys_that_need_it_and_the_fix(tmp_path: Path) -> None:
    """A key without a policy and no default policy: the error names that key and the fix."""
    path = write(
        tmp_path,
        "policies:\n  desk:\n    require: [read]\n"
        + KEY_BLOCK
        + "    policy: desk\n"
        + KEY_BLOCK.removeprefix("keys:\n").replace("acme-binance-main", "acme-binance-2"),
    )
    (problem,) = problems_of(path)
    assert problem.startswith("default_policy: no policy named 'market-maker' (defined: desk)")
    assert "keys[1] (acme-binance-2)" in problem
    assert "keys[0]" not in problem
    assert "'policy: NAME'" in problem
    assert "set default_policy to a defined policy" in problem


# ----------------------------------------------------------------------------- unknown exchange


def test_unknown_exchange_does_not_hide_the_keys_other_problems(tmp_path: Path) -> None:
    """A misspelt exchange is reported with the known ones, and so is everything else wrong."""
    path = write(
        tmp_path,
        """\
keys:
  - name: acme binance
    client: acme
    exchange: binanse
    policy: nope
    api_key: {env: KMTEST_ACME_KEY}
    labels: {key: x}
    passphrase: {env: KMTEST_ACME_SECRET}
    pasphrase: {env: KMTEST_ACME_SECRET}
""",
    )
    problems = problems_of(path)
    expected = [
        "keys[0].exchange: unknown exchange 'binanse' (did you mean 'binance'? supported: "
        "binance, bybit, okx",
        "keys[0].name: 'acme binance' is not a key name",
        "keys[0].api_secret: required field is missing",
        "keys[0].labels: 'key' is a label keymon sets itself",
        "keys[0].policy: no policy named 'nope'",
        "keys[0].pasphrase: unknown field (did you mean 'passphrase'?)",
    ]
    for wanted in expected:
        assert any(wanted in problem for problem in problems), (wanted, problems)
    assert len(problems) == len(expected), problems


def test_missing_exchange_does_not_hide_the_keys_other_problems(tmp_path: Path) -> None:
    """Without an exchange, the key's unset secret is still reported."""
    path = write(
        tmp_path,
        f"keys:\n  - name: k\n    client: acme\n    api_key: {{env: {UNSET_ENV}}}\n"
        "    api_secret: {env: KMTEST_ACME_SECRET}\n",
    )
    problems = problems_of(path)
    assert any(p.startswith("keys[0].exchange: exchange is missing") for p in problems)
    assert f"keys[0].api_key: environment variable {UNSET_ENV} is not set" in problems
    assert len(problems) == 2, problems


#: Plain YAML the plain reader takes itself, one of each kind of scalar, in block and flow.
_PLAIN_DOCUMENTS = [
    "a: 1\nb: -0x1F\nc: 0o17\nd: 1_000\ne: 1.5e3\nf: .inf\ng: -.Inf\nh: .nan\n",
    "t: [true, false, yes, No, on, OFF]\nn: [~, null, '', ]\nempty:\n",
    "when: 2026-12-03\nat: 2026-12-03T10:20:30.5Z\nlocal: 2026-12-03 10:20:30\n",
    "q: 'single ''quoted'''\nd: \"double \\u00e9\\n\"\n",
    "lit: |\n  two\n  lines\nfold: >-\n  a\n  b\n",
    "n1: '1'\nn2: \"true\"\n'<<': quoted merge is a key\n",
    "nested: {a: [1, {b: [2, [3, {c: d}]]}], e: {}}\nlist:\n- - x\n  - y\n- []\n",
    "- top\n- level\n- sequence\n",
    "just a scalar\n",
    "# only a comment\n",
    "",
    "---\nexplicit: start\n...\n",
]
#: YAML the plain reader leaves to the composer: the same value either way, and the
#: composer's duplicate-key problems.
_COMPOSED_DOCUMENTS = [
    "a: &x 1\nb: *x\n",
    "base: &b {x: 1}\nder: {<<: *b, y: 2}\n",
    "a: !!str 1\nb: !!binary aGk=\n",
    "a: 1\na: 2\n",
    "a: 1\n01: x\n1: y\n",
    "? [complex, key]\n: v\n",
    "one: 1\n---\ntwo: 2\n",
    "a: !!int nope\n",
    "k: 2026-13-45\n",
    "=: a value key\n",
]


@pytest.mark.parametrize("text", _PLAIN_DOCUMENTS + _COMPOSED_DOCUMENTS)
def test_the_plain_reader_gives_what_the_composer_gives(text: str) -> None:
    """_parse_yaml reads plain YAML straight from libyaml's events (the common, fast case)
    and anything else through the limited composer: the same document either way, and the
    composer's problems (duplicates, values a tag cannot read) are never lost."""
    if config_module._FastLoader is None:
        pytest.skip("PyYAML without libyaml: there is no plain reader")
    plain = config_module._FastLoader(text)
    composer = config_module._FastLoader(text)
    try:
        expected: tuple[Any, list[str]] | None = (
            composer.get_single_data(),
            composer.duplicates,
        )
    except yaml.YAMLError as exc:
        expected = None
        with pytest.raises(type(exc)):
            config_module._parse_yaml(text)
    try:
        read_plainly = plain.plain_data()
    except (config_module._NotPlain, yaml.YAMLError):
        assert text in _COMPOSED_DOCUMENTS
    else:
        assert text in _PLAIN_DOCUMENTS
        assert expected is not None
        assert repr(read_plainly) == repr(expected[0])
    if expected is not None:
        assert repr(config_module._parse_yaml(text)) == repr(expected)


def test_the_shipped_configurations_are_read_plainly() -> None:
    """config/example.yaml and config/minimal.yaml take the plain reader (no anchors, tags or
    duplicates), and it reads them as the composer does."""
    for name in ("example.yaml", "minimal.yaml"):
        text = (Path(__file__).resolve().parents[1] / "config" / name).read_text()
        if config_module._FastLoader is None:
            pytest.skip("PyYAML without libyaml: there is no plain reader")
        read_plainly = config_module._FastLoader(text).plain_data()
        assert repr(read_plainly) == repr(config_module._FastLoader(text).get_single_data())


# ----------------------------------------------------------------------------- exchanges in use


def test_a_configuration_imports_only_the_adapters_it_uses(tmp_path: Path) -> None:
    """Loading a Binance-only configuration (in a fresh interpreter, as ``keymon check`` does)
    builds no other exchange's models: none of their modules is imported."""
    path = write(tmp_path, KEY_BLOCK)
    script = (
        "from keymon.config import load\n"
        "settings = load(sys.argv[1]).settings\n"
        "print(' '.join(type(settings.exchanges).model_fields))\n"
    )
    sections, modules = exchange_modules_after(
        script, str(path), env={**os.environ, **TEST_SECRETS}
    )
    assert modules.split() == sorted([*SHARED_EXCHANGE_MODULES, "keymon.exchanges.binance"])
    assert sections == "binance"


def test_an_exchange_the_file_does_not_name_keeps_its_defaults_and_overrides(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An exchange outside the file has its default section; an environment override of it
    still applies, and a wrong one is still refused where it is."""
    settings = load(write(tmp_path, KEY_BLOCK)).settings
    assert settings.exchanges.for_exchange("okx") == OkxSettings()
    monkeypatch.setenv("KEYMON_EXCHANGES__OKX__MAX_WEIGHT_PER_MINUTE", "17")
    settings = load(write(tmp_path, KEY_BLOCK)).settings
    assert settings.exchanges.for_exchange("okx").max_weight_per_minute == 17
    monkeypatch.setenv("KEYMON_EXCHANGES__OKX__MAX_WEIGHT", "17")
    assert problems_of(write(tmp_path, KEY_BLOCK)) == [
        "exchanges.okx.max_weight: unknown field (did you mean 'max_weight_per_minute'?) "
        "(from environment variable KEYMON_EXCHANGES__OKX__MAX_WEIGHT)"
    ]


def test_exchange_settings_are_equal_whichever_exchanges_each_file_names(tmp_path: Path) -> None:
    """A section written out with the defaults equals no section (a reload that only adds or
    drops default sections changes nothing), and a changed value does not."""
    bare = load(write(tmp_path, KEY_BLOCK)).settings
    spelled = load(
        write(tmp_path, KEY_BLOCK + "exchanges:\n  okx: {max_weight_per_minute: 30}\n")
    ).settings
    changed = load(
        write(tmp_path, KEY_BLOCK + "exchanges:\n  okx: {max_weight_per_minute: 29}\n")
    ).settings
    assert set(type(spelled.exchanges).model_fields) == {"binance", "okx"}
    assert bare.exchanges == spelled.exchanges
    assert hash(bare.exchanges) == hash(spelled.exchanges)
    assert bare.exchanges != changed.exchanges


def test_settings_built_directly_know_the_exchanges_of_their_keys() -> None:
    """``Settings(...)`` validates with the exchanges its values name, like :func:`load`."""
    key = {"name": "k", "client": "c", "exchange": "binance", "api_key": "a", "api_secret": "s"}
    settings = Settings(keys=[key])
    assert isinstance(settings, Settings)
    assert type(settings) is not Settings
    assert set(type(settings.exchanges).model_fields) == {"binance"}
    with pytest.raises(ValidationError, match="does not match any of the expected tags"):
        Settings(keys=[{**key, "exchange": "binanse"}])


def test_an_exchange_that_is_no_name_is_reported_not_a_crash(tmp_path: Path) -> None:
    """``exchange:`` given a list or a mapping (unhashable: no set of names can hold it), and a
    section under a number, are reported where they are, as with the full model."""
    text = (
        "keys:\n"
        "  - {name: a, client: c, exchange: [binance], api_key: x, api_secret: y}\n"
        "  - {name: b, client: c, exchange: {x: 1}, api_key: x, api_secret: y}\n"
        "exchanges:\n"
        "  1: {}\n"
    )
    problems = problems_of(write(tmp_path, text))
    assert "exchanges[1]: Keys should be strings" in problems
    assert any(p.startswith("keys[0].exchange: unknown exchange '['binance']'") for p in problems)
    assert any(p.startswith("keys[1].exchange: unknown exchange '{'x': 1}'") for p in problems)
    assert not any("this is a bug" in p for p in problems)
