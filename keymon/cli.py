"""The command line: ``keymon run | check | validate-config | demo | history | healthcheck``.

Exit statuses (documented in the README):

* ``check`` follows the monitoring-plugin convention: 0 OK, 1 WARNING, 2 CRITICAL,
  3 UNKNOWN (an audit could not complete, the configuration is invalid, or the command line
  is wrong).
* ``validate-config``: 0 valid, 2 invalid (every problem listed on stderr); the same with
  ``--no-secrets``, which checks secret references for their shape without reading them.
* ``run``: 0 after a clean stop (SIGTERM, SIGINT), 2 for an invalid configuration or command
  line, 1 when it cannot start (the listen address is taken, the data_dir unusable or held by
  another running ``keymon run``).
* ``demo``: as ``run``; 0 after Ctrl-C. Its default port, when taken, falls back to a free
  one (said on stderr; the printed URLs name it); a ``--listen`` that is taken exits 1.
* ``healthcheck``: 0 when the daemon of the configuration answers ``/healthz`` with 200, 1
  otherwise (also for a wrong command line: Docker reserves 2); see :mod:`keymon.healthcheck`.
* ``history``: 0 (also when nothing was recorded yet), 2 for an invalid configuration, command
  line or ``--since``, 1 when the state database cannot be read.

No command prints a traceback for bad input, and none prints a secret.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn, TextIO

import structlog

from keymon import __version__
from keymon import log as logging_setup
from keymon.audit import (
    CHECK_PER_EXCHANGE_CONCURRENCY,
    Auditor,
    TransportFactory,
    facts_mapping,
    mask_key_id,
)
from keymon.budget import BAN_FILE_NAME, MAX_BUDGET_WAIT, BanFile, WeightBudget, limits_for
from keymon.config import DEFAULT_CONFIG_PATH, LoadedConfig, Settings, key_secrets, load
from keymon.errors import ConfigError
from keymon.healthcheck import default_config_path, healthcheck
from keymon.model import AuditResult, Coverage, Severity, worst

EXIT_OK, EXIT_WARNING, EXIT_CRITICAL, EXIT_UNKNOWN = 0, 1, 2, 3
EXIT_CONFIG = 2
EXIT_RUNTIME = 1
EXIT_INTERRUPTED = 130

#: What ``check`` says for an accepted key on an exchange that shows a key nothing else.
LIVENESS_DETAIL = (
    "liveness only: {exchange} accepts the key from this IP; its permissions, IP whitelist "
    "and expiry are not visible to keymon: check them by hand"
)
STATUS_NAMES = {
    EXIT_OK: "ok",
    EXIT_WARNING: "warning",
    EXIT_CRITICAL: "critical",
    EXIT_UNKNOWN: "unknown",
}


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error exits with the status the command documents."""

    usage_status = EXIT_CONFIG

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(self.usage_status, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="keymon", description="Continuous health monitoring of exchange API keys."
    )
    parser.add_argument("--version", action="version", version=f"keymon {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    # The image sets KEYMON_CONFIG, so every command finds its configuration without --config.
    default_config = default_config_path()

    def config_option(sub: argparse.ArgumentParser) -> None:
        sub.add_argument(
            "--config",
            type=Path,
            default=default_config,
            metavar="PATH",
            help=f"configuration file (default $KEYMON_CONFIG, else {DEFAULT_CONFIG_PATH})",
        )

    check = commands.add_parser("check", help="audit once, print the findings, exit 0/1/2/3")
    # A monitoring plugin that cannot even parse its command line is UNKNOWN, not CRITICAL.
    check.usage_status = EXIT_UNKNOWN
    config_option(check)
    check.add_argument(
        "--key",
        action="append",
        default=[],
        metavar="NAME",
        help="audit only this key (repeatable)",
    )
    check.add_argument("--format", choices=("table", "json"), default="table")

    run = commands.add_parser("run", help="the daemon: audit on schedule, serve /metrics")
    config_option(run)

    validate = commands.add_parser("validate-config", help="check the configuration, exit 0 or 2")
    config_option(validate)
    validate.add_argument(
        "--no-secrets",
        action="store_true",
        help="check everything but do not read the secrets ({env: ...}, {file: ...}): for CI "
        "on a repository that holds configurations but no secrets",
    )

    health = commands.add_parser(
        "healthcheck",
        help="GET /healthz of the daemon of this configuration, exit 0 (healthy) or 1",
    )
    health.usage_status = EXIT_RUNTIME  # Docker reserves 2
    config_option(health)

    history = commands.add_parser("history", help="the change journal: what changed, when")
    config_option(history)
    history.add_argument(
        "--key", action="append", default=[], metavar="NAME", help="only this key (repeatable)"
    )
    history.add_argument(
        "--since", default="7d", metavar="DURATION", help="how far back (default 7d)"
    )
    history.add_argument("--format", choices=("table", "json"), default="table")

    demo = commands.add_parser(
        "demo", help="run keymon against a local simulated exchange with demo keys"
    )
    demo.add_argument(
        "--listen",
        default=None,
        metavar="HOST:PORT",
        help="where the demo daemon serves /metrics (default 127.0.0.1:9877, or a free port "
        "when that one is taken; a --listen given here that is taken is an error)",
    )
    demo.add_argument(
        "--once", action="store_true", help="audit the demo keys once, print the findings and exit"
    )
    demo.add_argument(
        "--format", choices=("table", "json"), default="table", help="output of --once"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``keymon`` console script."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        # The top-level parser reports unknown arguments; a health check's usage error is
        # still "unhealthy" (1), never Docker's reserved 2.
        if args.command == "healthcheck":
            parser.print_usage(sys.stderr)
            print(f"keymon: error: unrecognized arguments: {' '.join(extra)}", file=sys.stderr)
            return EXIT_RUNTIME
        parser.parse_args(argv)  # exits with the usage error and its status
    try:
        if args.command == "validate-config":
            return validate_config(args.config, resolve_secrets=not args.no_secrets)
        if args.command == "check":
            return check(args.config, keys=args.key, fmt=args.format)
        if args.command == "run":
            return run(args.config)
        if args.command == "healthcheck":
            status, line = healthcheck(args.config)
            print(line, file=sys.stdout if status == EXIT_OK else sys.stderr)
            return status
        if args.command == "history":
            return history(args.config, keys=args.key, since=args.since, fmt=args.format)
        if args.command == "demo":
            from keymon.demo import run_demo

            return run_demo(fmt=args.format, once=args.once, listen=args.listen)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    raise AssertionError(f"unhandled command {args.command}")  # argparse guards this


def load_or_report(path: Path, *, out: TextIO, resolve_secrets: bool = True) -> LoadedConfig | None:
    """Load the configuration, or print every problem to ``out`` and return None."""
    try:
        loaded = load(path, resolve_secrets=resolve_secrets)
    except ConfigError as exc:
        if len(exc.problems) == 1 and exc.problems[0].startswith(f"{path}:"):
            print(f"keymon: {exc.problems[0]}", file=out)
            return None
        print(f"keymon: invalid configuration {path}:", file=out)
        for problem in exc.problems:
            print(f"  {problem}", file=out)
        return None
    logging_setup.redactor.update(loaded.settings.secret_values())
    return loaded


def run(path: Path) -> int:
    """``keymon run``: the daemon, until SIGTERM or SIGINT."""
    loaded = load_or_report(path, out=sys.stderr)
    if loaded is None:
        return EXIT_CONFIG
    return serve(loaded)


def serve(loaded: LoadedConfig, **kwargs: Any) -> int:
    """Run the daemon for a loaded configuration; a start-up failure is a message, not a trace."""
    from keymon.app import run_daemon
    from keymon.state import StateError

    settings = loaded.settings
    logging_setup.configure(fmt=settings.log.format, level=settings.log.level)
    log = structlog.get_logger("keymon")
    for warning in loaded.warnings:
        log.warning("config_warning", detail=warning)

    try:
        return asyncio.run(run_daemon(loaded, **kwargs))
    except StateError as exc:
        print(f"keymon: cannot start: data_dir: {exc}", file=sys.stderr)
        return EXIT_RUNTIME
    except OSError as exc:
        print(
            f"keymon: cannot start: listen {settings.listen}: {exc.strerror or exc}",
            file=sys.stderr,
        )
        return EXIT_RUNTIME


def history(
    path: Path,
    *,
    keys: Sequence[str] = (),
    since: str = "7d",
    fmt: str = "table",
    out: TextIO | None = None,
) -> int:
    """``keymon history``: the change journal, newest first."""
    from keymon.config import parse_duration
    from keymon.state import DB_NAME, StateDB, StateError

    out = out or sys.stdout
    try:
        window = parse_duration(since)
    except ValueError as exc:  # PydanticCustomError is a ValueError
        print(f"keymon: --since {since}: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    loaded = load_or_report(path, out=sys.stderr)
    if loaded is None:
        return EXIT_CONFIG
    data_dir = loaded.settings.data_dir
    state_path = (data_dir / DB_NAME).absolute()
    start = datetime.now(UTC) - window
    configured = {key.name for key in loaded.settings.keys}
    no_state = False
    try:
        db = StateDB(data_dir, read_only=True)
    except StateError as exc:
        if not state_path.exists():
            rows, journaled, no_state = [], set(), True
        else:
            print(f"keymon: {exc}", file=sys.stderr)
            return EXIT_RUNTIME
    else:
        try:
            rows = db.history(keys=keys, since=start)
            journaled = db.journaled_keys() if keys else set()
        finally:
            db.close()
    # A key no longer configured still has its journal: only a name known to neither is wrong.
    unknown = [name for name in keys if name not in configured and name not in journaled]
    if unknown:
        print(
            f"keymon: --key {unknown[0]}: no key of that name in {path}, nor in the journal "
            f"at {state_path}",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    if fmt == "json":
        json.dump(
            [
                {
                    "key": r.key,
                    "client": r.client,
                    "exchange": r.exchange,
                    "field": r.field,
                    "before": r.before,
                    "after": r.after,
                    "seen_at": r.seen_at.isoformat(timespec="seconds").replace("+00:00", "Z"),
                }
                for r in rows
            ],
            out,
            indent=2,
        )
        out.write("\n")
        return EXIT_OK
    if not rows:
        if no_state:
            print(
                f"no changes recorded: no state at {state_path} yet (has keymon run with this "
                "data_dir? a relative data_dir is read from the current directory)",
                file=out,
            )
        else:
            print(f"no changes recorded since {start:%Y-%m-%d %H:%M} UTC", file=out)
        return EXIT_OK
    table = [("SEEN (UTC)", "KEY", "CLIENT", "EXCHANGE", "CHANGE")]
    table += [
        (
            f"{r.seen_at:%Y-%m-%d %H:%M:%S}",
            r.key,
            r.client,
            r.exchange,
            f"{r.field}: {r.before} -> {r.after}",
        )
        for r in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(4)]
    for row in table:
        print(
            "  ".join(c.ljust(widths[i]) for i, c in enumerate(row[:4])) + "  " + row[4], file=out
        )
    return EXIT_OK


def validate_config(path: Path, *, resolve_secrets: bool = True) -> int:
    """``keymon validate-config``: 0 and a summary, or 2 and every problem on stderr.

    ``resolve_secrets=False`` (``--no-secrets``) checks the secret references' shape only.
    """
    loaded = load_or_report(path, out=sys.stderr, resolve_secrets=resolve_secrets)
    if loaded is None:
        return EXIT_CONFIG
    for warning in loaded.warnings:
        print(f"keymon: warning: {warning}", file=sys.stderr)
    settings = loaded.settings
    summary = f"{len(settings.keys)} key(s), {len(settings.policies)} policy(ies)"
    if not resolve_secrets:
        refs = sum(
            1 for key in settings.keys for secret in key_secrets(key) if not secret.resolved
        ) + sum(1 for url in settings.notify.urls if not url.resolved)
        summary += f"; {refs} secret reference(s) not read (--no-secrets)"
    print(f"{path}: valid ({summary})")
    return EXIT_OK


def check(
    path: Path,
    *,
    keys: Sequence[str] = (),
    fmt: str = "table",
    transport_factory: TransportFactory | None = None,
    out: TextIO | None = None,
) -> int:
    """``keymon check``: audit the keys once, print the findings, return the exit status."""
    out = out or sys.stdout
    loaded = load_or_report(path, out=sys.stderr)
    if loaded is None:
        return EXIT_UNKNOWN
    settings = loaded.settings
    # The findings go to stdout; stderr carries only what went wrong (warnings and errors),
    # unless the configuration asks for debug (or only errors). A terminal gets readable lines.
    logging_setup.configure(
        fmt="console" if sys.stderr.isatty() else settings.log.format,
        level=settings.log.level if settings.log.level in ("debug", "error") else "warning",
    )
    log = structlog.get_logger("keymon.cli")
    for warning in loaded.warnings:
        log.warning("config_warning", detail=warning)
    unknown = [name for name in keys if name not in {k.name for k in settings.keys}]
    if unknown:
        print(f"keymon: --key {unknown[0]}: no key of that name in {path}", file=sys.stderr)
        return EXIT_UNKNOWN
    selected = [k for k in settings.keys if not keys or k.name in keys]
    results = asyncio.run(_audit(settings, selected, transport_factory))
    status = exit_status(results)
    if fmt == "json":
        # One write: json.dump(indent=2) makes one write per token (130,000 at 1,000 keys).
        out.write(json.dumps(check_report(settings, selected, results, status), indent=2) + "\n")
    else:
        out.write(render_table(settings, selected, results, status))
    return status


async def _audit(
    settings: Settings, keys: Sequence[Any], transport_factory: TransportFactory | None
) -> list[AuditResult]:
    """One pass over ``keys``, through the daemon's weight budget and the shared ban file.

    A 429 whose Retry-After is at most :data:`~keymon.budget.MAX_BUDGET_WAIT` is waited out;
    a longer one, a 418 ban, and a 429 window another keymon process recorded fail the
    exchange's remaining keys at once (``rate_limited`` / ``banned``), without sending.
    No lock is taken on ``data_dir``: a check runs beside the daemon.
    """
    gate = WeightBudget(
        limits_for(settings),
        max_wait=MAX_BUDGET_WAIT,
        ban_file=BanFile(settings.data_dir / BAN_FILE_NAME),
        wait_for_recorded=False,
    )
    async with Auditor(settings, transport_factory=transport_factory, gate=gate) as auditor:
        return await auditor.audit_all(keys, per_exchange=CHECK_PER_EXCHANGE_CONCURRENCY)


def key_status(result: AuditResult) -> int:
    """One key's plugin status: its worst finding, or UNKNOWN when the audit failed."""
    severity = worst(result.findings)
    if severity is Severity.CRITICAL:
        return EXIT_CRITICAL
    if result.error is not None:
        return EXIT_UNKNOWN
    return EXIT_WARNING if severity is Severity.WARNING else EXIT_OK


def exit_status(results: Sequence[AuditResult]) -> int:
    """The whole run's status: CRITICAL over UNKNOWN over WARNING over OK.

    CRITICAL wins over UNKNOWN: one key that cannot be audited must not hide another that
    can withdraw.
    """
    statuses = {key_status(r) for r in results}
    for status in (EXIT_CRITICAL, EXIT_UNKNOWN, EXIT_WARNING):
        if status in statuses:
            return status
    return EXIT_OK


def check_report(
    settings: Settings, keys: Sequence[Any], results: Sequence[AuditResult], status: int
) -> dict[str, Any]:
    """The ``--format json`` object of PRODUCT.md."""
    entries = []
    for key, result in zip(keys, results, strict=True):
        policy_name, _ = settings.policy_for(key)
        error = None
        if result.error is not None:
            error = {
                "reason": str(result.error.reason),
                "message": result.error.message,
                "code": result.error.code,
                "refused_ip": result.error.refused_ip,
            }
        entries.append(
            {
                "key": key.name,
                "client": key.client,
                "exchange": key.exchange,
                "key_id": mask_key_id(key.api_key.get()),
                "policy": policy_name,
                "coverage": str(result.facts.coverage) if result.facts else None,
                "status": STATUS_NAMES[key_status(result)],
                "audit_ok": result.ok,
                "error": error,
                "facts": facts_mapping(result.facts),
                "findings": [
                    {
                        "rule": str(f.rule),
                        "severity": str(f.severity),
                        "message": f.message,
                        **({"permission": f.permission} if f.permission else {}),
                    }
                    for f in result.findings
                ],
            }
        )
    checked_at = max((r.checked_at for r in results), default=datetime.now(UTC))
    return {
        "status": STATUS_NAMES[status],
        "checked_at": checked_at.isoformat(timespec="seconds").replace("+00:00", "Z"),
        "keys": entries,
    }


def render_table(
    settings: Settings, keys: Sequence[Any], results: Sequence[AuditResult], status: int
) -> str:
    """A table a person reads at a glance: one row per key, one line per finding."""
    rows: list[tuple[str, str, str, str, str]] = []
    for key, result in zip(keys, results, strict=True):
        label = STATUS_NAMES[key_status(result)].upper()
        liveness = result.facts is not None and result.facts.coverage is Coverage.LIVENESS
        if liveness and label == "OK":
            # Not "OK": the exchange showed only that the key is accepted, nothing else.
            label = "ACCEPTED"
        details = [
            f"{f.rule}"
            + (f"[{f.permission}]" if f.permission else "")
            + f" ({f.severity}): {f.message}"
            for f in result.findings
        ]
        if result.error is not None and not result.findings:
            details.append(f"audit failed ({result.error.reason}): {result.error.message}")
        trading_error = result.facts.trading_status_error if result.facts else None
        if trading_error is not None:
            details.append(
                f"trading status not read ({trading_error.reason}): {trading_error.message}"
            )
        if not details and liveness:
            details = [LIVENESS_DETAIL.format(exchange=key.exchange)]
        if not details:
            details = ["all rules pass"]
        rows.append((key.name, key.client, key.exchange, label, details[0]))
        rows.extend(("", "", "", "", more) for more in details[1:])
    header = ("KEY", "CLIENT", "EXCHANGE", "STATUS", "DETAIL")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]
    lines = [
        "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:4])) + "  " + row[4]
        for row in [header, *rows]
    ]
    counts = dict.fromkeys(STATUS_NAMES.values(), 0)
    for result in results:
        counts[STATUS_NAMES[key_status(result)]] += 1
    accepted = sum(
        1
        for result in results
        if key_status(result) == EXIT_OK
        and result.facts is not None
        and result.facts.coverage is Coverage.LIVENESS
    )
    if accepted:
        # An accepted liveness-only key is not "ok": keymon saw nothing but its acceptance.
        counts = {"ok": counts["ok"] - accepted, "accepted (liveness only)": accepted} | {
            name: n for name, n in counts.items() if name != "ok"
        }
    summary = ", ".join(f"{n} {name}" for name, n in counts.items() if n)
    lines.append("")
    lines.append(f"{STATUS_NAMES[status].upper()}: {len(results)} key(s): {summary}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
