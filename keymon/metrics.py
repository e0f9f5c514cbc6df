"""Prometheus metrics: per-key series from the store, self-metrics on an app-owned registry.

:class:`AuditCollector` turns :meth:`Store.snapshot` into the per-key families of PRODUCT.md;
it never calls an exchange. Each key's samples are computed once per change of that key
(``KeyState.version``) and cached as exposition text (for :func:`render`), so a scrape of
10,000 keys is a join of cached strings rather than hundreds of thousands of freshly formatted
lines. ``collect()`` computes the same samples afresh (:func:`key_samples`), so the two cannot
disagree, and the cache holds each key's series once, as text.

Sample output::

    # HELP keymon_key_permission_enabled 1 if the exchange reports the permission enabled.
    # TYPE keymon_key_permission_enabled gauge
    keymon_key_permission_enabled{key="acme-main",client="acme",exchange="<name>",\
        permission="withdraw"} 0.0
    # HELP keymon_key_finding 1 while the rule fires at that severity.
    # TYPE keymon_key_finding gauge
    keymon_key_finding{key="acme-main",client="acme",exchange="<name>",\
        rule="withdraw_enabled",severity="critical",permission=""} 0.0

(lines folded here; each sample is one line).

Cardinality per key: 1 info, 1 per permission the exchange reports (11 in keymon's vocabulary), the
audit interval, ip_restricted, created, review windows (2), audit_ok, last success, one
``keymon_key_finding`` per evaluated rule and severity (12 for a key showing every
fact under the default policy, 14 with a deadline), one
``keymon_key_deadline_timestamp_seconds`` per deadline, one
error series while failing, one changes counter per field that ever changed: 31 to 37 series
per key (docs/metrics.md, cardinality budget), plus at most 5 where the exchange shows the key's
own lock, account kind, third-party binding and last use (lock, sub-account, third-party app,
last used, and the ``key_locked`` finding). Where the exchange shows the account's trading
readiness (Binance): the trading lock, its recovery time while locked, one indicator ratio per
kind (UFR, IFER, GCR), the account restriction and the three findings
(``trading_locked``, ``trading_lock_risk``, ``account_restricted``): at most 9 more, plus one
``keymon_key_trading_status_error`` series while that read fails.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from keymon import __version__
from keymon.audit import mask_key_id
from keymon.model import KeyFacts, Reason
from keymon.policy import untrusted_ip_count
from keymon.store import KeyState, Store

_go_float: Callable[[float], str] = floatToGoString  # the client's own number format

KEY_LABELS = ("key", "client", "exchange")
NOTIFY_OUTCOMES = ("sent", "failed", "retried", "dropped")
#: Latency buckets for exchange calls and audits: loopback to a slow exchange.
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


@dataclass(frozen=True, slots=True)
class Family:
    """One per-key metric family."""

    name: str
    kind: str  # "gauge" | "counter"
    help: str
    labels: tuple[str, ...] = ()  # beyond KEY_LABELS

    @property
    def sample_name(self) -> str:
        return f"{self.name}_total" if self.kind == "counter" else self.name


INFO = Family(
    "keymon_key_info",
    "gauge",
    "One series per configured key; coverage tells how much the exchange shows.",
    ("policy", "key_id", "coverage"),
)
PERMISSION = Family(
    "keymon_key_permission_enabled",
    "gauge",
    "1 if the exchange reports the permission enabled.",
    ("permission",),
)
IP_RESTRICTED = Family(
    "keymon_key_ip_restricted", "gauge", "1 if the key only accepts calls from its IP whitelist."
)
UNTRUSTED_IPS = Family(
    "keymon_key_untrusted_ips",
    "gauge",
    "Whitelisted addresses outside trusted_ips, where the exchange shows them.",
)
CREATED = Family("keymon_key_created_timestamp_seconds", "gauge", "When the key was created.")
DEADLINE = Family(
    "keymon_key_deadline_timestamp_seconds",
    "gauge",
    "Review or expiry deadline of the key.",
    ("kind",),
)
FINDING = Family(
    "keymon_key_finding",
    "gauge",
    "1 while the rule fires at that severity; one series per evaluated rule.",
    ("rule", "severity", "permission"),
)
REVIEW_WARNING = Family(
    "keymon_key_review_warning_seconds", "gauge", "The key policy's review_warning window."
)
REVIEW_CRITICAL = Family(
    "keymon_key_review_critical_seconds", "gauge", "The key policy's review_critical window."
)
CHANGES = Family(
    "keymon_key_changes", "counter", "Observed changes of a fact between two audits.", ("field",)
)
KEY_LOCKED = Family(
    "keymon_key_locked",
    "gauge",
    "1 if the exchange has locked (frozen) the key itself, where it shows the key's state.",
)
SUB_ACCOUNT = Family(
    "keymon_key_sub_account",
    "gauge",
    "1 if the key belongs to a sub-account, 0 to a master account, where the exchange shows it.",
)
THIRD_PARTY_APP = Family(
    "keymon_key_third_party_app",
    "gauge",
    "1 if the key is bound to a third-party application, where the exchange shows it.",
)
LAST_USED = Family(
    "keymon_key_last_used_timestamp_seconds",
    "gauge",
    "When the key was last used, where the exchange shows it.",
)
TRADING_LOCKED = Family(
    "keymon_key_trading_locked",
    "gauge",
    "1 if the exchange has locked API trading for the key's account, where it shows it.",
)
TRADING_RECOVER = Family(
    "keymon_key_trading_recover_timestamp_seconds",
    "gauge",
    "Planned end of the account's API trading lock, while locked.",
)
TRADING_INDICATOR = Family(
    "keymon_key_trading_indicator_ratio",
    "gauge",
    "Worst symbol's value / trigger of a trading-rule indicator (1: the lock trips).",
    ("indicator",),
)
ACCOUNT_RESTRICTED = Family(
    "keymon_key_account_restricted",
    "gauge",
    "1 if the account's status is not normal, where the exchange shows it.",
)
TRADING_STATUS_ERROR = Family(
    "keymon_key_trading_status_error",
    "gauge",
    "Present while the key's trading-status read failed (the rest of its audit worked).",
    ("reason",),
)
AUDIT_INTERVAL = Family(
    "keymon_key_audit_interval_seconds",
    "gauge",
    "How often the key is audited: its own interval, its policy's, or audit.interval.",
)
AUDIT_OK = Family("keymon_key_audit_ok", "gauge", "1 if the key's last audit succeeded.")
LAST_SUCCESS = Family(
    "keymon_key_last_audit_success_timestamp_seconds",
    "gauge",
    "When the key was last audited successfully.",
)
AUDIT_ERROR = Family(
    "keymon_key_audit_error",
    "gauge",
    "Present while the key's last audit failed, with its reason.",
    ("reason",),
)

KEY_FAMILIES: tuple[Family, ...] = (
    INFO,
    PERMISSION,
    IP_RESTRICTED,
    UNTRUSTED_IPS,
    CREATED,
    DEADLINE,
    KEY_LOCKED,
    SUB_ACCOUNT,
    THIRD_PARTY_APP,
    LAST_USED,
    TRADING_LOCKED,
    TRADING_RECOVER,
    TRADING_INDICATOR,
    ACCOUNT_RESTRICTED,
    TRADING_STATUS_ERROR,
    FINDING,
    REVIEW_WARNING,
    REVIEW_CRITICAL,
    AUDIT_INTERVAL,
    CHANGES,
    AUDIT_OK,
    LAST_SUCCESS,
    AUDIT_ERROR,
)

Labels = tuple[tuple[str, str], ...]
Sample = tuple[Family, Labels, float]


def _sample(family: Family, values: tuple[str, ...], value: float, extra: Labels = ()) -> Sample:
    return family, (*zip(KEY_LABELS + family.labels, values, strict=True), *extra), value


def key_samples(state: KeyState, trusted_ips: Sequence[object]) -> list[Sample]:
    """Every per-key sample for one key's current state."""
    key = state.key
    base = (key.name, key.client, key.exchange)
    facts = state.last_facts
    # What the last audit showed wins over the adapter's kind (a key whose exchange showed it
    # nothing but acceptance is liveness only), as in `keymon check`; before any facts, the
    # adapter's kind.
    coverage = facts.coverage if facts is not None else state.coverage
    info = (*base, state.policy_name, mask_key_id(key.api_key.get()), str(coverage))
    out: list[Sample] = [
        # The key's own labels (``labels:`` in the configuration) go on the info series only:
        # join them onto any other series with `* on(key) group_left(...) keymon_key_info`.
        _sample(INFO, info, 1.0, tuple(sorted(key.labels.items()))),
        _sample(REVIEW_WARNING, base, state.policy.review_warning.total_seconds()),
        _sample(REVIEW_CRITICAL, base, state.policy.review_critical.total_seconds()),
        _sample(AUDIT_INTERVAL, base, state.interval.total_seconds()),
    ]
    if facts is not None:
        for permission, enabled in facts.permissions.items():
            out.append(_sample(PERMISSION, (*base, permission), float(enabled)))
        if facts.ip_restricted is not None:
            out.append(_sample(IP_RESTRICTED, base, float(facts.ip_restricted)))
        untrusted = untrusted_ip_count(facts, trusted_ips)  # type: ignore[arg-type]
        if untrusted is not None:
            out.append(_sample(UNTRUSTED_IPS, base, float(untrusted)))
        if facts.created_at is not None:
            out.append(_sample(CREATED, base, facts.created_at.timestamp()))
        for deadline in facts.deadlines:
            out.append(_sample(DEADLINE, (*base, deadline.kind), deadline.at.timestamp()))
        if facts.key_locked is not None:
            out.append(_sample(KEY_LOCKED, base, float(facts.key_locked)))
        if facts.account_kind is not None:
            out.append(_sample(SUB_ACCOUNT, base, float(facts.account_kind == "sub")))
        if facts.third_party_app is not None:
            out.append(_sample(THIRD_PARTY_APP, base, float(facts.third_party_app)))
        if facts.last_used_at is not None:
            out.append(_sample(LAST_USED, base, facts.last_used_at.timestamp()))
        out.extend(_trading_samples(facts, base))
    firing = {(f.rule, f.severity, f.permission or "") for f in state.findings()}
    for check in state.checks():
        for severity in check.severities:
            labels = (str(check.rule), str(severity), check.permission or "")
            firing_now = (check.rule, severity, check.permission or "") in firing
            out.append(_sample(FINDING, (*base, *labels), float(firing_now)))
    for field_name, count in sorted(state.changes.items()):
        out.append(_sample(CHANGES, (*base, field_name), float(count)))
    result = state.last_result
    if result is not None:
        out.append(_sample(AUDIT_OK, base, float(result.ok)))
        if result.error is not None:
            out.append(_sample(AUDIT_ERROR, (*base, str(result.error.reason)), 1.0))
    if state.last_success is not None:
        out.append(_sample(LAST_SUCCESS, base, state.last_success.timestamp()))
    return out


def _trading_samples(facts: KeyFacts, base: tuple[str, ...]) -> list[Sample]:
    """The trading-readiness series (absent where not shown or not read)."""
    out: list[Sample] = []
    if facts.trading_locked is not None:
        out.append(_sample(TRADING_LOCKED, base, float(facts.trading_locked)))
        if facts.trading_locked and facts.trading_recover_at is not None:
            out.append(_sample(TRADING_RECOVER, base, facts.trading_recover_at.timestamp()))
    for indicator in facts.trading_indicators or ():
        if indicator.ratio is not None:
            out.append(_sample(TRADING_INDICATOR, (*base, indicator.kind), indicator.ratio))
    if facts.account_restricted is not None:
        out.append(_sample(ACCOUNT_RESTRICTED, base, float(facts.account_restricted)))
    if facts.trading_status_error is not None:
        reason = str(facts.trading_status_error.reason)
        out.append(_sample(TRADING_STATUS_ERROR, (*base, reason), 1.0))
    return out


def _escape(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _pairs(labels: Iterable[tuple[str, str]]) -> str:
    return ",".join(f'{n}="{_escape(v)}"' for n, v in labels)


def _line(family: Family, labels: Labels, value: float) -> str:
    return f"{family.sample_name}{{{_pairs(labels)}}} {_go_float(value)}\n"


#: Keys per chunk of a streamed ``/metrics`` body: one family's lines of this many keys (at most
#: about 2 MB, the ``keymon_key_finding`` lines of 1,000 keys).
CHUNK_KEYS = 1000
#: Where each family sits in :data:`KEY_FAMILIES` (the order of a key's rendered text).
_FAMILY_INDEX = {family.name: i for i, family in enumerate(KEY_FAMILIES)}


#: What every line of a family starts with, up to the key's own labels: ``name{``.
_HEADS = tuple(f"{family.sample_name}{{".encode() for family in KEY_FAMILIES)
#: Stands for ``name{key="...",client="...",exchange="..."`` at the start of each cached line.
_MARK = "\0"
_MARK_BYTES = _MARK.encode()


@dataclass(slots=True)
class _Rendered:
    """One key's series as exposition text, compacted: one bytes object per family, in
    :data:`KEY_FAMILIES` order (``b""`` where the key has none), each line starting with
    :data:`_MARK` instead of the metric name and the key's three labels, which are kept once,
    in ``base``. A scrape puts them back with one ``replace`` per key and family. At 10,000
    keys this holds 17 MB instead of 44 MB (the labels repeated on every line were most of
    the text) and the scrape takes no more CPU. ``base`` is None where a label value holds
    the mark character itself: then ``text`` holds the lines as they are."""

    version: int
    base: bytes | None
    text: tuple[bytes, ...]


def _render(state: KeyState, trusted_ips: Sequence[object], version: int) -> _Rendered:
    lines: list[list[str]] = [[] for _ in KEY_FAMILIES]
    for family, labels, value in key_samples(state, trusted_ips):
        lines[_FAMILY_INDEX[family.name]].append(_line(family, labels, value))
    key = state.key
    base = _pairs(zip(KEY_LABELS, (key.name, key.client, key.exchange), strict=True))
    compact: list[bytes] = []
    for family, group in zip(KEY_FAMILIES, lines, strict=True):
        prefix = f"{family.sample_name}{{{base}"
        cut = len(prefix)
        if any(_MARK in line or not line.startswith(prefix) for line in group):
            return _Rendered(version, None, tuple("".join(g).encode() for g in lines))
        compact.append("".join([_MARK + line[cut:] for line in group]).encode())
    return _Rendered(version, base.encode(), tuple(compact))


class AuditCollector(Collector):
    """Per-key families from the store's latest snapshot (see the module docstring)."""

    def __init__(self, store: Store, trusted_ips: Sequence[object] = ()) -> None:
        self._store = store
        self.trusted_ips = trusted_ips
        self._cache: dict[str, _Rendered] = {}
        self._lock = threading.Lock()
        #: Keys per chunk of a streamed scrape (:func:`iter_body`).
        self.chunk_keys = CHUNK_KEYS

    def _rendered(self) -> list[_Rendered]:
        states = self._store.snapshot()
        with self._lock:
            fresh: dict[str, _Rendered] = {}
            for state in states:
                cached = self._cache.get(state.name)
                if cached is None or cached.version != state.version:
                    cached = _render(state, self.trusted_ips, state.version)
                fresh[state.name] = cached
            self._cache = fresh  # forget removed keys
            return list(fresh.values())

    def invalidate(self) -> None:
        """Drop every cached rendering (trusted_ips changed on reload)."""
        with self._lock:
            self._cache.clear()

    def describe(self) -> Iterable[Metric]:
        for family in KEY_FAMILIES:
            yield _metric_family(family)

    def collect(self) -> Iterator[Metric]:
        families: dict[str, GaugeMetricFamily | CounterMetricFamily] = {
            family.name: _metric_family(family) for family in KEY_FAMILIES
        }
        # The slow path (tests, other registries): samples computed afresh, nothing cached.
        for state in self._store.snapshot():
            for family, labels, value in key_samples(state, self.trusted_ips):
                families[family.name].add_sample(family.sample_name, dict(labels), value)
        yield from families.values()

    def render_key(self, state: KeyState) -> None:
        """Render one key's series now (after its audit), so that scrapes only join text."""
        rendered = _render(state, self.trusted_ips, state.version)
        with self._lock:
            self._cache[state.name] = rendered

    def snapshot(self) -> list[_Rendered]:
        """Every key's current rendering (stale ones rendered now); cheap when all are fresh."""
        return self._rendered()

    @staticmethod
    def iter_chunks(rendered: list[_Rendered], batch: int = CHUNK_KEYS) -> Iterator[bytes]:
        """The per-key families, in exposition format, a batch of keys per chunk.

        A generator: each chunk is built when asked for, so a caller that writes a chunk before
        asking for the next one holds one chunk at a time (about 2 MB at most at 1,000 keys a
        chunk), never the whole body (37 MB at 10,000 keys).
        """
        for index, family in enumerate(KEY_FAMILIES):
            yield (
                f"# HELP {family.sample_name} {family.help}\n"
                f"# TYPE {family.sample_name} {family.kind}\n"
            ).encode()
            head = _HEADS[index]
            for start in range(0, len(rendered), batch):
                parts = []
                for r in rendered[start : start + batch]:
                    text = r.text[index]
                    if text:
                        parts.append(
                            text if r.base is None else text.replace(_MARK_BYTES, head + r.base)
                        )
                if parts:
                    yield b"".join(parts)

    def render_text(self) -> str:
        """The per-key families in the text exposition format, from the cached renderings."""
        return b"".join(self.iter_chunks(self._rendered())).decode()


def _metric_family(family: Family) -> GaugeMetricFamily | CounterMetricFamily:
    labels = [*KEY_LABELS, *family.labels]
    if family.kind == "counter":
        return CounterMetricFamily(family.name, family.help, labels=labels)
    return GaugeMetricFamily(family.name, family.help, labels=labels)


class SelfMetrics:
    """keymon's own metrics, on the app-owned registry."""

    def __init__(self, registry: CollectorRegistry, exchanges: Iterable[str]) -> None:
        exchanges = list(exchanges)
        self.audit_errors = Counter(
            "keymon_audit_errors",
            "Failed audits by exchange and reason.",
            ["exchange", "reason"],
            registry=registry,
        )
        for exchange in exchanges:
            for reason in Reason:
                # Every pair exists from the start at zero, so rate() alerts work at once.
                self.audit_errors.labels(exchange, str(reason))
        self.audit_duration = Histogram(
            "keymon_audit_duration_seconds",
            "Duration of one key's audit.",
            ["exchange"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.requests = Counter(
            "keymon_exchange_requests",
            "Requests sent to exchanges, by endpoint and status.",
            ["exchange", "endpoint", "status"],
            registry=registry,
        )
        self.request_duration = Histogram(
            "keymon_exchange_request_duration_seconds",
            "Duration of one exchange request.",
            ["exchange", "endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.weight_used = Gauge(
            "keymon_exchange_weight_used",
            "Last request weight the exchange reported as used by this IP.",
            ["exchange"],
            registry=registry,
        )
        self.notifications = Counter(
            "keymon_notifications",
            "Notifications sent, failed, retried and dropped (never to be delivered).",
            ["outcome"],
            registry=registry,
        )
        for outcome in NOTIFY_OUTCOMES:
            self.notifications.labels(outcome)
        self.state_reset = Counter(
            "keymon_state_reset",
            "The state file was unreadable (or had vanished) and a fresh one was started.",
            registry=registry,
        )
        self.reload_success = Gauge(
            "keymon_config_last_reload_success",
            "1 if the last configuration (re)load worked.",
            registry=registry,
        )
        self.reload_success.set(1)
        build = Gauge("keymon_build_info", "keymon's version.", ["version"], registry=registry)
        build.labels(__version__).set(1)

    def observe_request(self, exchange: str, endpoint: str, status: str, seconds: float) -> None:
        """The adapters' request observer."""
        self.requests.labels(exchange, endpoint, status).inc()
        self.request_duration.labels(exchange, endpoint).observe(seconds)


def render(registry: CollectorRegistry, collector: AuditCollector) -> bytes:
    """The full ``/metrics`` body at once: self-metrics, then the per-key families (for tests
    and ``--once``; the HTTP handler streams the same bytes chunk by chunk, :func:`iter_body`)."""
    return b"".join(iter_body(registry, collector.snapshot()))


def iter_body(
    registry: CollectorRegistry, rendered: list[_Rendered], batch: int = CHUNK_KEYS
) -> Iterator[bytes]:
    """The ``/metrics`` body chunk by chunk: self-metrics, then the per-key families."""
    yield generate_latest(registry)
    yield from AuditCollector.iter_chunks(rendered, batch)
