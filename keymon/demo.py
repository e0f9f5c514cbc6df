"""``keymon demo``: keymon against local simulated exchanges, with keys in telling states.

The demo starts the bundled simulators on 127.0.0.1 (one server per exchange), registers keys
in states an operator should recognise (healthy, withdrawals on, no IP restriction with a
deadline close, deleted at the exchange, futures on, an IP outside the trusted list, ...),
writes a configuration that reads their secrets from files, and runs the daemon against it,
printing where to look. With ``--once`` it audits the keys once, exactly as ``keymon check``
would, and exits.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from keymon.simulator import SIMULATORS

if TYPE_CHECKING:
    from keymon.app import App

DAY = 86_400
#: Outside the demo's trusted_ips (TEST-NET-3): what a key bound to a stranger's IP shows.
STRANGER_IP = "203.0.113.7"
#: The account id an HTX key configuration names (HTX reads keys per account).
DEMO_UID = "40000001"


@dataclass(frozen=True)
class DemoKey:
    """One demo key: its configured name, what the exchange holds, and what it shows.

    ``state`` holds the keyword arguments of the exchange simulator's ``add_key`` that put the
    key into its state (for Binance: ``restrictions`` and ``ip_whitelist``).
    """

    name: str
    client: str
    exchange: str
    story: str
    state: dict[str, Any] = field(default_factory=dict)
    deleted: bool = False

    def _derive(self, what: str) -> str:
        return hashlib.sha256(f"demo-{what}-{self.name}".encode()).hexdigest()

    @property
    def api_key(self) -> str:
        return self._derive("key")

    @property
    def secret(self) -> str:
        return self._derive("secret")

    @property
    def passphrase(self) -> str:
        return self._derive("passphrase")[:16]

    @property
    def memo(self) -> str:
        return self._derive("memo")[:12]


@dataclass(frozen=True)
class _Venue:
    """How the demo registers a key at one exchange's simulator and configures it in keymon."""

    register: Callable[[Any, DemoKey], None]
    #: Key configuration fields beyond api_key/api_secret: "passphrase" or "memo" (secret
    #: files) or "uid".
    extra: tuple[str, ...] = ()
    #: The secret in the form the exchange issues it (Kraken's is base64).
    secret_of: Callable[[DemoKey], str] = lambda key: key.secret
    #: The API key in the form the exchange issues it (Coinbase's is a CDP key name).
    key_of: Callable[[DemoKey], str] = lambda key: key.api_key


def _binance(simulator: Any, key: DemoKey) -> None:
    simulator.add_key(key.api_key, hmac_secret=key.secret, **key.state)


def _plain(simulator: Any, key: DemoKey) -> None:
    simulator.add_key(key.api_key, key.secret, **key.state)


def _liveness(simulator: Any, key: DemoKey) -> None:
    """A key on a simulator built on LivenessSimulator (the liveness-only exchanges, and XT);
    ``key_state`` (frozen, expired, ...) is set after."""
    state = dict(key.state)
    key_state = state.pop("key_state", None)
    credentials = (key.memo,) if key.exchange == "bitmart" else ()
    simulator.add_key(key.api_key, key.secret, *credentials, **state)
    if key_state is not None:
        simulator.update_key(key.api_key, state=key_state)


def _with_passphrase(simulator: Any, key: DemoKey) -> None:
    simulator.add_key(key.api_key, key.secret, key.passphrase, **key.state)


def _with_uid(simulator: Any, key: DemoKey) -> None:
    simulator.add_key(key.api_key, key.secret, DEMO_UID, **key.state)


def _base64_secret(key: DemoKey) -> str:
    return base64.b64encode(bytes.fromhex(key.secret) * 2).decode()


def _kraken(simulator: Any, key: DemoKey) -> None:
    simulator.add_key(key.api_key, _base64_secret(key), **key.state)


def _cdp_key_name(key: DemoKey) -> str:
    """A CDP key name, ``organizations/<org_id>/apiKeys/<key_id>``, derived from the key."""
    digest = key.api_key
    org, key_id = digest[:32], digest[32:]
    return f"organizations/{_uuid(org)}/apiKeys/{_uuid(key_id)}"


def _uuid(hex32: str) -> str:
    return f"{hex32[:8]}-{hex32[8:12]}-{hex32[12:16]}-{hex32[16:20]}-{hex32[20:32]}"


def _ec_private_pem(key: DemoKey) -> str:
    """The key's EC P-256 private key (SEC1 PEM, as the CDP portal gives it), derived from its
    demo secret so that the simulator and the configuration agree."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    order = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
    private = ec.derive_private_key(int(key.secret, 16) % (order - 1) + 1, ec.SECP256R1())
    return private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ).decode()


def _coinbase(simulator: Any, key: DemoKey) -> None:
    # The simulator keeps only the public half, as Coinbase does.
    simulator.add_key(_cdp_key_name(key), _ec_private_pem(key), **key.state)


_VENUES: dict[str, _Venue] = {
    "binance": _Venue(_binance),
    "bybit": _Venue(_plain),
    "okx": _Venue(_with_passphrase, ("passphrase",)),
    "kucoin": _Venue(_with_passphrase, ("passphrase",)),
    "bitget": _Venue(_with_passphrase, ("passphrase",)),
    "htx": _Venue(_with_uid, ("uid",)),
    "gate": _Venue(_plain),
    "kraken": _Venue(_kraken, secret_of=_base64_secret),
    "bingx": _Venue(_plain),
    "coinbase": _Venue(_coinbase, secret_of=_ec_private_pem, key_of=_cdp_key_name),
    "mexc": _Venue(_liveness),
    "bitmart": _Venue(_liveness, ("memo",)),
    "bitrue": _Venue(_liveness),
    "xt": _Venue(_liveness),  # same registration; XT shows the key its settings
    "lbank": _Venue(_liveness),
    "coinstore": _Venue(_liveness),
    "biconomy": _Venue(_liveness),
}


def demo_keys(now: float) -> list[DemoKey]:
    """The demo's keys, each in a state an operator should recognise."""
    return [
        DemoKey("acme-binance-main", "acme", "binance", "healthy: read + spot trading, IP-bound"),
        DemoKey(
            "bravo-binance",
            "bravo",
            "binance",
            "withdrawals switched on",
            {"restrictions": {"enableWithdrawals": True}},
        ),
        DemoKey(
            "charlie-binance",
            "charlie",
            "binance",
            "no IP restriction; trading authority expires in 2 days",
            {
                "restrictions": {
                    "ipRestrict": False,
                    "tradingAuthorityExpirationTime": int((now + 2 * DAY) * 1000),
                },
                "ip_whitelist": ["0.0.0.0/0", "::/0"],
            },
        ),
        DemoKey("delta-binance", "delta", "binance", "deleted at the exchange", deleted=True),
        DemoKey(
            "echo-binance",
            "echo",
            "binance",
            "futures trading switched on",
            {"restrictions": {"enableFutures": True}},
        ),
        DemoKey(
            "foxtrot-bybit",
            "foxtrot",
            "bybit",
            "unified account: derivatives trading, as Bybit grants it",
            {"uta": True},
        ),
        DemoKey("golf-okx", "golf", "okx", "healthy: read + trade, IP-bound"),
        DemoKey(
            "hotel-kucoin",
            "hotel",
            "kucoin",
            f"IP list also holds {STRANGER_IP}, outside trusted_ips (KuCoin masks it)",
            {"ips": ["127.0.0.1", STRANGER_IP]},
        ),
        DemoKey(
            "india-bitget",
            "india",
            "bitget",
            "withdrawals switched on",
            {"authorities": ["stor", "stow", "wwow"]},
        ),
        DemoKey("juliet-htx", "juliet", "htx", "not bound to any IP"),
        DemoKey("kilo-gate", "kilo", "gate", "healthy: spot trading, IP-bound"),
        DemoKey(
            "lima-kraken",
            "lima",
            "kraken",
            "the key expires in 5 days (validUntil)",
            {"valid_until": int(now + 5 * DAY)},
        ),
        DemoKey(
            "mike-bingx",
            "mike",
            "bingx",
            "trading key bound to no IP (BingX deletes it after 14 idle days)",
            {"ips": []},
        ),
        DemoKey(
            "november-coinbase",
            "november",
            "coinbase",
            "transfers switched on (can_transfer); IP allowlist and expiry not shown",
            {"can_transfer": True},
        ),
        # Liveness only: these exchanges show a key nothing but whether it is accepted.
        DemoKey("oscar-mexc", "oscar", "mexc", "liveness only: accepted from this IP"),
        DemoKey(
            "papa-bitmart",
            "papa",
            "bitmart",
            "liveness only: past its expiry at BitMart (code 30011)",
            {"key_state": "expired"},
        ),
        DemoKey("quebec-bitrue", "quebec", "bitrue", "liveness only: accepted from this IP"),
        DemoKey(
            "romeo-xt",
            "romeo",
            "xt",
            "withdrawals switched on (WITHDRAW among its roleScopes)",
            {"role_scopes": ["QUERY", "TRADE", "WITHDRAW"]},
        ),
        DemoKey("sierra-lbank", "sierra", "lbank", "liveness only: accepted from this IP"),
        DemoKey(
            "tango-coinstore",
            "tango",
            "coinstore",
            "liveness only: bound to another IP than keymon's",
            {"ips": ["10.9.9.9"]},
        ),
        DemoKey("uniform-biconomy", "uniform", "biconomy", "liveness only: accepted"),
    ]


def build_simulators(keys: list[DemoKey]) -> dict[str, Any]:
    """One simulator per exchange of ``keys``, holding every key that still exists there."""
    simulators: dict[str, Any] = {}
    for key in keys:
        simulator = simulators.setdefault(key.exchange, SIMULATORS[key.exchange]())
        if not key.deleted:
            _VENUES[key.exchange].register(simulator, key)
    return simulators


def write_config(
    directory: Path, base_urls: dict[str, str], keys: list[DemoKey], **extra: Any
) -> Path:
    """A configuration for the demo keys; secrets live in files, as in production."""
    secrets = directory / "secrets"
    secrets.mkdir(parents=True, exist_ok=True)
    entries = []
    for key in keys:
        secret = _VENUES[key.exchange].secret_of(key)
        api_key = _VENUES[key.exchange].key_of(key)
        entry: dict[str, Any] = {
            "name": key.name,
            "client": key.client,
            "exchange": key.exchange,
            "api_key": {"file": str(_secret_file(secrets, key.name, "key", api_key))},
            "api_secret": {"file": str(_secret_file(secrets, key.name, "secret", secret))},
        }
        for name in _VENUES[key.exchange].extra:
            if name == "passphrase":
                path = _secret_file(secrets, key.name, "passphrase", key.passphrase)
                entry["passphrase"] = {"file": str(path)}
            elif name == "memo":
                entry["memo"] = {"file": str(_secret_file(secrets, key.name, "memo", key.memo))}
            elif name == "uid":
                entry["uid"] = DEMO_UID
        entries.append(entry)
    config: dict[str, Any] = {
        "data_dir": str(directory / "data"),
        "log": {"format": "console", "level": "info"},
        "exchanges": {name: {"base_url": url} for name, url in base_urls.items()},
        "trusted_ips": ["127.0.0.1/32"],
        "keys": entries,
        **extra,
    }
    path = directory / "keymon.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _secret_file(directory: Path, name: str, kind: str, value: str) -> Path:
    path = directory / f"{name}.{kind}"
    path.write_text(value + "\n")
    path.chmod(0o600)
    return path


def run_demo(*, fmt: str = "table", once: bool = False, listen: str = "127.0.0.1:9877") -> int:
    """Serve the simulator and run keymon against it (see the module docstring)."""
    from keymon.cli import check, load_or_report, serve

    keys = demo_keys(time.time())
    simulators = build_simulators(keys)
    with tempfile.TemporaryDirectory(prefix="keymon-demo-") as tmp, contextlib.ExitStack() as stack:
        urls = {
            name: stack.enter_context(sim.serve_in_thread()) for name, sim in simulators.items()
        }
        if once:
            config = write_config(Path(tmp), urls, keys)
            _describe(urls, keys)
            check(config, fmt=fmt)
            return 0
        config = write_config(
            Path(tmp), urls, keys, listen=listen, audit={"interval": "15s", "jitter": "2s"}
        )
        loaded = load_or_report(config, out=sys.stderr)
        if loaded is None:  # pragma: no cover - the demo writes a valid file
            return 2

        def started(app: App) -> None:
            _describe(urls, keys)
            base = f"http://{listen.rsplit(':', 1)[0]}:{app.port}"
            print(
                f"""keymon is auditing every 15 s. Look at:
  {base}/metrics        Prometheus metrics (try: curl -s {base}/metrics | grep finding)
  {base}/readyz         ready once every key was audited
  {_keymon_command()} check --config {config}
                        the same findings as a table (exit status 2: critical)
Change a key at the exchange and watch the metrics follow, e.g.:
  curl -X PATCH {urls["binance"]}/_simulator/keys/{keys[0].api_key} \\
       -d '{{"enableWithdrawals": true}}'
Ctrl-C stops the demo.""",
                flush=True,
            )

        return serve(loaded, on_started=started)


def _keymon_command() -> str:
    """How to call keymon from another shell: the venv's script if it is not on PATH."""
    script = Path(sys.executable).parent / "keymon"
    if script.exists() and shutil.which("keymon") != str(script):
        return (
            os.path.relpath(script) if not os.path.relpath(script).startswith("..") else str(script)
        )
    return "keymon"


def _describe(urls: dict[str, str], keys: list[DemoKey]) -> None:
    names = ", ".join(f"{name} at {url}" for name, url in urls.items())
    print(f"keymon demo: simulated {names}", file=sys.stderr)
    for key in keys:
        print(f"  {key.name:<18} {key.exchange:<8} {key.story}", file=sys.stderr)
    print(file=sys.stderr, flush=True)
