"""Standalone runner for the fake exchanges, for demos and end-to-end tests.

Usage::

    python -m keymon.simulator EXCHANGE --port 8900 --keys keys.yaml [--latency 0.02]

The keys file is a YAML list of key mappings. For ``binance`` each entry has ``api_key``,
exactly one of ``hmac_secret``, ``public_key_pem_file`` (relative paths are resolved against the
keys file) or ``public_key_pem``, and optionally ``restrictions`` (apiRestrictions fields),
``ip_whitelist`` (addresses or CIDRs; omitted means loopback only), ``trading_status``
(apiTradingStatus ``data`` fields: ``isLocked``, ``plannedRecoverTime``, ``indicators``, ...)
and ``account_status`` (account/status ``data``, ``Normal`` by default). For every other exchange an
entry's fields are the arguments of that simulator's ``add_key``: the credentials (``api_key``,
``secret``, and ``passphrase`` or ``uid`` where the exchange has one) and the optional state
(permissions, IP list, ...); ``python -m keymon.simulator EXCHANGE --help`` lists them.

The server binds 127.0.0.1 unless ``--host`` says otherwise, prints its URL on one line, and
exits 0 on SIGINT or SIGTERM. Bad input gives a one-line message on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import ipaddress
import math
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn, Protocol

import yaml

from keymon.simulator import SIMULATORS
from keymon.simulator.binance import BinanceSimulator
from keymon.simulator.server import SimulatorServer

PROG = "python -m keymon.simulator"
EXIT_USAGE = 2
_KEY_FIELDS = frozenset(
    {
        "api_key",
        "hmac_secret",
        "public_key_pem_file",
        "public_key_pem",
        "restrictions",
        "ip_whitelist",
        "trading_status",
        "account_status",
    }
)


class _Simulator(Protocol):
    latency: float

    def add_key(self, api_key: str, *args: Any, **kwargs: Any) -> None: ...

    def server(self, host: str = ..., port: int = ...) -> SimulatorServer: ...


class InputError(Exception):
    """Bad command-line or keys-file input; reported on one line, exit status 2."""


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid port {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port {value} is out of range 0-65535")
    return value


def _latency(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid latency {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError("latency must be a number of seconds >= 0")
    return value


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors become InputError, reported on one line by main()."""

    def error(self, message: str) -> NoReturn:
        raise InputError(f"{message} (see --help)")


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser (one sub-command per simulated exchange)."""
    parser = _Parser(prog=PROG, description="Serve a fake exchange API on a local port.")
    exchanges = parser.add_subparsers(dest="exchange", required=True, metavar="EXCHANGE")
    for name, cls in SIMULATORS.items():
        sub = exchanges.add_parser(
            name,
            help=f"the simulated {name} API ({cls.__module__})",
            description=f"Serve the simulated {name} API. Keys file entries: {_fields_help(name)}.",
        )
        sub.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
        sub.add_argument(
            "--port",
            type=_port,
            default=8900,
            help="port to bind, 0 for any free port (default 8900)",
        )
        sub.add_argument("--keys", type=Path, help="YAML file listing the keys to serve")
        sub.add_argument(
            "--latency",
            type=_latency,
            default=0.0,
            help="seconds added to every answer (default 0)",
        )
    return parser


def _fields_help(exchange: str) -> str:
    if exchange == "binance":
        return (
            "api_key, hmac_secret | public_key_pem_file | public_key_pem, "
            "optional restrictions, ip_whitelist, trading_status, account_status"
        )
    required, optional = _add_key_fields(exchange)
    return f"{', '.join(required)}, optional {', '.join(optional)}"


def _add_key_fields(exchange: str) -> tuple[list[str], list[str]]:
    """The required and optional fields of a key entry: the simulator's add_key arguments."""
    parameters = inspect.signature(SIMULATORS[exchange].add_key).parameters.values()
    fields = [p for p in parameters if p.name != "self"]
    required = [p.name for p in fields if p.default is inspect.Parameter.empty]
    optional = [p.name for p in fields if p.default is not inspect.Parameter.empty]
    return required, optional


def _load_entries(path: Path) -> list[dict[str, object]]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(f"cannot read keys file {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise InputError(f"keys file {path} is not UTF-8 text") from None
    try:
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        where = f" at line {exc.problem_mark.line + 1}" if exc.problem_mark else ""
        raise InputError(f"keys file {path} is not valid YAML: {exc.problem}{where}") from None
    except yaml.YAMLError as exc:
        raise InputError(f"keys file {path} is not valid YAML: {_one_line(str(exc))}") from None
    if data is None:
        return []
    if not isinstance(data, list) or not all(isinstance(entry, dict) for entry in data):
        raise InputError(f"keys file {path} must be a YAML list of key mappings")
    return data


def _add_entry(simulator: BinanceSimulator, entry: dict[str, object], base: Path) -> None:
    unknown = set(entry) - _KEY_FIELDS
    if unknown:
        raise InputError(f"unknown fields {', '.join(sorted(map(str, unknown)))}")
    api_key = entry.get("api_key")
    if not isinstance(api_key, str):
        raise InputError("api_key must be a string")
    secret = entry.get("hmac_secret")
    if secret is not None and not isinstance(secret, str):
        # YAML turns unquoted digits into numbers; a secret must be quoted to stay exact.
        raise InputError("hmac_secret must be a string (quote it in YAML)")
    pem: str | None = None
    pem_file = entry.get("public_key_pem_file")
    inline_pem = entry.get("public_key_pem")
    if pem_file is not None and inline_pem is not None:
        raise InputError("give public_key_pem_file or public_key_pem, not both")
    if pem_file is not None:
        if not isinstance(pem_file, str):
            raise InputError("public_key_pem_file must be a path")
        pem_path = base / pem_file
        try:
            pem = pem_path.read_text(encoding="ascii")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not a PEM text file"
            raise InputError(f"cannot read public key {pem_path}: {reason}") from None
    elif inline_pem is not None:
        if not isinstance(inline_pem, str):
            raise InputError("public_key_pem must be a string")
        pem = inline_pem
    restrictions = entry.get("restrictions")
    if restrictions is not None and (
        not isinstance(restrictions, dict) or not all(isinstance(k, str) for k in restrictions)
    ):
        raise InputError("restrictions must be a mapping of field names to values")
    whitelist = entry.get("ip_whitelist")
    if whitelist is not None and (
        not isinstance(whitelist, list) or not all(isinstance(ip, str) for ip in whitelist)
    ):
        raise InputError("ip_whitelist must be a list of addresses or CIDRs")
    trading = entry.get("trading_status")
    if trading is not None and (
        not isinstance(trading, dict) or not all(isinstance(k, str) for k in trading)
    ):
        raise InputError("trading_status must be a mapping of apiTradingStatus data fields")
    account = entry.get("account_status")
    if account is not None and not isinstance(account, str):
        raise InputError("account_status must be a string (Normal when all is well)")
    try:
        simulator.add_key(
            api_key,
            hmac_secret=secret,
            public_key_pem=pem,
            restrictions=restrictions,
            ip_whitelist=whitelist,
            trading_status=trading,
            account_status=account,
        )
    except ValueError as exc:
        raise InputError(str(exc)) from None


def build_binance(keys_file: Path | None, latency: float) -> BinanceSimulator:
    """A Binance simulator loaded from a keys file; raises InputError on bad input."""
    simulator = BinanceSimulator()
    simulator.latency = latency
    if keys_file is None:
        return simulator
    for index, entry in enumerate(_load_entries(keys_file), start=1):
        try:
            _add_entry(simulator, entry, keys_file.parent)
        except InputError as exc:
            raise InputError(f"{keys_file}: key entry {index}: {exc}") from None
    return simulator


def _add_generic(simulator: _Simulator, exchange: str, entry: dict[str, object]) -> None:
    required, optional = _add_key_fields(exchange)
    unknown = set(entry) - set(required) - set(optional)
    if unknown:
        raise InputError(
            f"unknown fields {', '.join(sorted(map(str, unknown)))} "
            f"(known: {', '.join(required + optional)})"
        )
    missing = [name for name in required if name not in entry]
    if missing:
        raise InputError(f"missing {', '.join(missing)}")
    credentials: list[str] = []
    for name in required:
        value = entry[name]
        if not isinstance(value, str):
            # YAML turns unquoted digits into numbers; credentials must stay exact strings.
            raise InputError(f"{name} must be a string (quote it in YAML)")
        credentials.append(value)
    state: dict[str, Any] = {name: entry[name] for name in optional if name in entry}
    try:
        simulator.add_key(*credentials, **state)
    except (TypeError, ValueError, KeyError) as exc:
        raise InputError(_one_line(str(exc))) from None


def build_simulator(exchange: str, keys_file: Path | None, latency: float) -> _Simulator:
    """The named exchange's simulator loaded from a keys file; raises InputError on bad input."""
    if exchange == "binance":
        return build_binance(keys_file, latency)
    simulator: _Simulator = SIMULATORS[exchange]()
    simulator.latency = latency
    if keys_file is None:
        return simulator
    for index, entry in enumerate(_load_entries(keys_file), start=1):
        try:
            _add_generic(simulator, exchange, entry)
        except InputError as exc:
            raise InputError(f"{keys_file}: key entry {index}: {exc}") from None
    return simulator


async def _serve(server: SimulatorServer, exchange: str) -> None:
    await server.start()
    try:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        print(f"keymon simulator ({exchange}) listening on {server.url}", flush=True)
        await stop.wait()
    finally:
        await server.stop()


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the runner; returns the process exit status."""
    try:
        args = build_parser().parse_args(argv)
        simulator = build_simulator(args.exchange, args.keys, args.latency)
    except InputError as exc:
        print(f"{PROG}: error: {_one_line(str(exc))}", file=sys.stderr)
        return EXIT_USAGE
    if not _is_loopback(args.host):
        print(
            f"{PROG}: warning: the admin API under /_simulator/ is unauthenticated and is now "
            f"reachable on {args.host}",
            file=sys.stderr,
        )
    try:
        asyncio.run(_serve(simulator.server(args.host, args.port), args.exchange))
    except OSError as exc:
        reason = _one_line(exc.strerror or str(exc))
        print(f"{PROG}: error: cannot listen on {args.host}:{args.port}: {reason}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        # Only reachable if SIGINT lands before the signal handlers are installed.
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
