"""Auditing: one key in, one :class:`~keymon.model.AuditResult` out, never an exception.

:class:`Auditor` owns one guarded HTTP client and one adapter per exchange, looks up each
key's policy, calls the adapter and judges what comes back. Failures become data
(``AuditResult.error`` with a :class:`~keymon.model.Reason`); anything unexpected becomes
``Reason.INTERNAL`` and a logged exception, so one broken key never stops the others.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import httpx
import structlog

from keymon.config import KeyBase, Settings
from keymon.errors import ExchangeError, KeymonError
from keymon.exchanges import EXCHANGES, build_client
from keymon.exchanges.base import Clock, ExchangeAdapter, RequestGate, RequestObserver
from keymon.model import AuditError, AuditResult, KeyFacts, Reason
from keymon.policy import evaluate, evaluate_error

log = structlog.get_logger(__name__)

TransportFactory = Callable[[str], httpx.AsyncBaseTransport | None]
#: How many audits ``audit_all`` runs at once.
DEFAULT_CONCURRENCY = 32
#: How many audits ``keymon check`` runs at once on one exchange. Each audit has one request
#: on the wire at a time, so when the exchange starts answering 429 (its limit, shared with
#: the bots, is unknown to keymon) at most this many requests are already under way; the
#: budget then holds back the rest. A burst of 32 into a spent limit is how an IP gets banned.
CHECK_PER_EXCHANGE_CONCURRENCY = 4


class Auditor:
    """Audits configured keys against their exchanges. Use as an async context manager."""

    def __init__(
        self,
        settings: Settings,
        *,
        transport_factory: TransportFactory | None = None,
        clock: Clock = time.time,
        monotonic: Clock = time.monotonic,
        gate: RequestGate | None = None,
        observer: RequestObserver | None = None,
    ) -> None:
        self.settings = settings
        self._clock = clock
        self._monotonic = monotonic
        self._clients: list[httpx.AsyncClient] = []
        self._gate = gate or RequestGate()
        self._transport_factory = transport_factory
        self._observer = observer
        self._adapter_gate = gate
        #: One adapter (and guarded client) per exchange, built when first needed (most
        #: configurations use a few of the exchanges; their TLS context is shared).
        self.adapters: dict[str, ExchangeAdapter] = {}
        for name in dict.fromkeys(key.exchange for key in settings.keys):
            self.adapter(name)

    def adapter(self, name: str) -> ExchangeAdapter:
        """The adapter of exchange ``name``, built on first use."""
        found = self.adapters.get(name)
        if found is not None:
            return found
        adapter_cls = EXCHANGES[name]
        exchange_settings = self.settings.exchanges.for_exchange(name)
        transport = self._transport_factory(name) if self._transport_factory else None
        client = build_client(
            exchange=name,
            base_url=exchange_settings.base_url,
            allowlist=adapter_cls.read_only_endpoints,
            timeout=self.settings.audit.timeout.total_seconds(),
            transport=transport,
        )
        self._clients.append(client)
        adapter = adapter_cls(
            client,
            exchange_settings,
            clock=self._clock,
            monotonic=self._monotonic,
            gate=self._adapter_gate,
            observer=self._observer,
        )
        self.adapters[name] = adapter
        return adapter

    async def __aenter__(self) -> Auditor:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close every client; in-flight requests are cancelled."""
        await asyncio.gather(*(client.aclose() for client in self._clients))

    def now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), tz=UTC)

    async def audit(self, key: KeyBase, settings: Settings | None = None) -> AuditResult:
        """Audit one key and judge it. Never raises (cancellation aside)."""
        settings = settings or self.settings
        started = self._monotonic()
        facts: KeyFacts | None = None
        error: AuditError | None = None
        with structlog.contextvars.bound_contextvars(
            key=key.name, client=key.client, exchange=key.exchange
        ):
            adapter = self.adapter(key.exchange)
            try:
                # An audit of several requests is granted its whole weight at once: in the
                # daemon its mandatory part (the optional reads ask the gate for spare weight
                # themselves), under `keymon check` all of it.
                weight = adapter.audit_weight
                if not self._gate.spare_extras:
                    weight += adapter.extras_weight
                if weight > 1:
                    async with self._gate.audit_scope(key.exchange, weight):
                        facts = await adapter.audit(key)
                else:
                    facts = await adapter.audit(key)
            except ExchangeError as exc:
                error = exc.to_audit_error()
            except KeymonError as exc:
                error = AuditError(Reason.INTERNAL, str(exc))
                log.error("audit_internal_error", error=str(exc))  # noqa: TRY400 - expected, no traceback
            except Exception as exc:
                error = AuditError(Reason.INTERNAL, f"internal error: {type(exc).__name__}")
                log.exception("audit_crashed")
            checked_at = self.now()
            if facts is not None:
                policy_name, policy = settings.policy_for(key)
                evaluation = evaluate(
                    facts,
                    policy,
                    policy_name=policy_name,
                    trusted_ips=settings.trusted_ips,
                    now=checked_at,
                )
            else:
                assert error is not None
                evaluation = evaluate_error(error)
            duration = self._monotonic() - started
            result = AuditResult(key.name, checked_at, duration, facts, error, evaluation)
            _log_result(result)
        return result

    async def audit_all(
        self,
        keys: Iterable[KeyBase],
        *,
        concurrency: int = DEFAULT_CONCURRENCY,
        per_exchange: int | None = None,
    ) -> list[AuditResult]:
        """Audit every key, at most ``concurrency`` at once and at most ``per_exchange`` on
        one exchange (None: no such limit), results in the keys' order."""
        slots = asyncio.Semaphore(concurrency)
        keys = list(keys)
        exchange_slots = {
            name: asyncio.Semaphore(per_exchange or len(keys) or 1)
            for name in {key.exchange for key in keys}
        }

        async def one(key: KeyBase) -> AuditResult:
            async with exchange_slots[key.exchange], slots:
                return await self.audit(key)

        return list(await asyncio.gather(*(one(key) for key in keys)))


def _log_result(result: AuditResult) -> None:
    fields: dict[str, Any] = {"duration_ms": round(result.duration * 1000, 1)}
    if result.error is None:
        fields["findings"] = [f"{f.rule}:{f.severity}" for f in result.findings]
        log.info("audit_completed", outcome="ok", **fields)
    else:
        log.warning(
            "audit_failed",
            outcome="error",
            reason=str(result.error.reason),
            error=result.error.message,
            code=result.error.code,
            **fields,
        )


def mask_key_id(api_key: str) -> str:
    """The first 4 and last 4 characters; fully masked when too short to show those safely."""
    if len(api_key) < 16:
        return "****"
    return f"{api_key[:4]}...{api_key[-4:]}"


def facts_mapping(facts: KeyFacts | None) -> Mapping[str, Any]:
    """The facts as JSON-ready data (three-state: ``null`` means not visible)."""
    if facts is None:
        return {
            "permissions": {},
            "ip_restricted": None,
            "ip_list": None,
            "created_at": None,
            "deadlines": [],
            "key_locked": None,
            "account_kind": None,
            "third_party_app": None,
            "last_used_at": None,
            **_trading_mapping(None),
        }
    return {
        "permissions": dict(facts.permissions),
        "ip_restricted": facts.ip_restricted,
        "ip_list": list(facts.ip_list) if facts.ip_list is not None else None,
        "created_at": _rfc3339(facts.created_at),
        "deadlines": [{"kind": d.kind, "at": _rfc3339(d.at)} for d in facts.deadlines],
        "key_locked": facts.key_locked,
        "account_kind": facts.account_kind,
        "third_party_app": facts.third_party_app,
        "last_used_at": _rfc3339(facts.last_used_at),
        **_trading_mapping(facts),
    }


def _trading_mapping(facts: KeyFacts | None) -> Mapping[str, Any]:
    """The trading-readiness facts (``null``: not shown, or not read: see
    ``trading_status_error``)."""
    if facts is None:
        return {
            "trading_locked": None,
            "trading_recover_at": None,
            "trading_trigger": None,
            "trading_indicators": None,
            "account_status": None,
            "account_restricted": None,
            "trading_status_error": None,
        }
    error = facts.trading_status_error
    return {
        "trading_locked": facts.trading_locked,
        "trading_recover_at": _rfc3339(facts.trading_recover_at),
        "trading_trigger": dict(facts.trading_trigger)
        if facts.trading_trigger is not None
        else None,
        "trading_indicators": [
            {
                "indicator": i.kind,
                "symbol": i.symbol,
                "value": i.value,
                "trigger": i.trigger,
                "ratio": i.ratio,
            }
            for i in facts.trading_indicators
        ]
        if facts.trading_indicators is not None
        else None,
        "account_status": facts.account_status,
        "account_restricted": facts.account_restricted,
        "trading_status_error": {"reason": str(error.reason), "message": error.message}
        if error is not None
        else None,
    }


def _rfc3339(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
