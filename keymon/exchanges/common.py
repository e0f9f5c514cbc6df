"""The plumbing every adapter shares: construction, clock sync and sending one request.

:class:`AdapterBase` holds what the seventeen adapters used to repeat: the constructor the
Auditor calls, the offset to the exchange's clock (measured on an unsigned time endpoint,
assuming the server read its clock halfway through the round trip), the sync schedule (a
failed sync is retried after :data:`SYNC_RETRY_SECONDS`, not before every audit), and
:meth:`AdapterBase._send`, which spends the request's weight at the gate, translates transport
errors, and reports the answer to the observer and the gate.

What stays in each exchange's module is its own: signing, endpoints, response models, the
mapping of fields and of error codes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Generator, Mapping
from dataclasses import replace
from typing import Any, ClassVar, Final

import httpx
import structlog

from keymon.config_base import ExchangeSettingsBase, KeyBase
from keymon.errors import ExchangeBadResponse, ExchangeClockError, ExchangeError
from keymon.exchanges.base import (
    Clock,
    ExchangeClient,
    RequestGate,
    RequestObserver,
    origin_of,
    translate_transport_error,
)
from keymon.model import AuditError, Coverage, KeyFacts

log = structlog.get_logger(__name__)

#: How long to wait before trying a failed time sync again (not before every audit).
SYNC_RETRY_SECONDS: Final = 30.0
#: At most this many paths' merged URLs are kept per adapter (:meth:`AdapterBase._url`).
_URL_CACHE_SIZE: Final = 64


class AdapterBase:
    """Construction, clock sync and request sending, shared by every adapter.

    Subclasses set the class attributes; those that sync their clock set :attr:`time_path`
    and implement :meth:`parse_server_time` and :meth:`_get` (or :meth:`_time_answer`).
    """

    name: ClassVar[str]
    coverage: ClassVar[Coverage]
    #: The exchange's ``exchanges.<name>:`` section and key model, given as class arguments:
    #: ``class BinanceAdapter(AdapterBase, settings_model=..., key_model=...)``.
    settings_model: ClassVar[type[ExchangeSettingsBase]]
    key_model: ClassVar[type[KeyBase]]
    #: (METHOD, path) pairs this adapter may call; everything else is refused unsent.
    read_only_endpoints: ClassVar[frozenset[tuple[str, str]]] = frozenset()
    ip_limit_headers: ClassVar[Mapping[str, int]] = {}
    #: Weight of each call in the exchange's own unit (keymon's budget counts it).
    weights: ClassVar[Mapping[str, int]] = {}
    #: The weight of one audit's requests; above 1 the budget grants it all at once, so an
    #: audit never gets its first request and starves on its second (Gate: 2). Set from
    #: :meth:`audit_weight_for` when the adapter is built.
    audit_weight: int = 1
    #: The weight of one audit's optional reads (*extras*, Binance's trading status), set from
    #: :meth:`extras_weight_for`: the daemon sends them only from spare budget
    #: (:meth:`~keymon.exchanges.base.RequestGate.extras`). 0: the audit has none.
    extras_weight: int = 0
    #: The paths of those optional reads (not part of the mandatory weight).
    extras_paths: ClassVar[frozenset[str]] = frozenset()
    #: The server-time endpoint (GET, unsigned), or None where the exchange needs no sync.
    time_path: ClassVar[str | None] = None
    #: What the time endpoint's answer lacked, in the error that says so.
    server_time_field: ClassVar[str] = "a server time"

    def __init_subclass__(
        cls,
        *,
        settings_model: type[ExchangeSettingsBase] | None = None,
        key_model: type[KeyBase] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init_subclass__(**kwargs)
        if settings_model is not None:
            cls.settings_model = settings_model
        if key_model is not None:
            cls.key_model = key_model

    def __init__(
        self,
        client: httpx.AsyncClient,
        settings: Any,
        *,
        clock: Clock = time.time,
        monotonic: Clock = time.monotonic,
        gate: RequestGate | None = None,
        observer: RequestObserver | None = None,
    ) -> None:
        self._client = client
        self._settings = settings
        self._clock = clock
        self._monotonic = monotonic
        self._gate = gate or RequestGate()
        self._observer = observer
        self._offset_ms = 0.0
        #: The last sync's round trip in ms; None before one or after a failed one.
        self._sync_rtt_ms: float | None = None
        self._next_sync: float | None = None  # monotonic; None: never tried
        self._sync_lock = asyncio.Lock()
        #: Each path's absolute URL, merged with the client's ``base_url`` once (:meth:`_url`).
        self._urls: dict[str, httpx.URL] = {}
        self.audit_weight = self.audit_weight_for(settings)
        self.extras_weight = self.extras_weight_for(settings)

    @classmethod
    def audit_weight_for(cls, settings: Any) -> int:
        """The mandatory weight of one audit under the exchange's ``settings`` (the class's
        own by default)."""
        return cls.audit_weight

    @classmethod
    def extras_weight_for(cls, settings: Any) -> int:
        """The weight of one audit's optional reads under ``settings``: its
        :attr:`extras_paths` at their :attr:`weights` while the exchange's ``trading_status``
        is on (Binance's trading and account status, HTX's accounts), else none."""
        if not cls.extras_paths or not settings.trading_status:
            return 0
        return sum(cls.weights[path] for path in cls.extras_paths)

    # ------------------------------------------------------------------ extras

    async def _with_extras(
        self, key_name: str, facts: KeyFacts, read: Callable[[KeyFacts], Awaitable[KeyFacts]]
    ) -> KeyFacts:
        """``facts`` completed by ``read`` (the audit's optional reads: the trading status)
        when the gate grants their weight; else ``facts`` marked as having skipped them."""
        async with self._gate.extras(self.name, self.extras_weight, key_name) as granted:
            if granted:
                return await read(facts)
        # No spare budget now: the restrictions are what this audit is for; the last known
        # trading facts stay (the store keeps them, as after a failed read).
        log.debug("trading_status_skipped", exchange=self.name, reason="budget")
        return replace(facts, trading_status_skipped=True)

    def _trading_status_failed(self, facts: KeyFacts, error: AuditError) -> KeyFacts:
        """``facts`` with a failed trading-status read kept beside them (never raised)."""
        log.warning(
            "trading_status_failed",
            exchange=self.name,
            reason=str(error.reason),
            error=error.message,
            code=error.code,
        )
        return replace(facts, trading_status_error=error)

    # ------------------------------------------------------------------ hooks

    async def _get(self, path: str, *, auth: httpx.Auth) -> Any:
        """A GET's decoded answer, or the exchange's error (adapters that sync implement it)."""
        raise NotImplementedError

    async def _time_answer(self, stamp: httpx.Auth) -> Any:
        """The time endpoint's answer, for :meth:`parse_server_time`."""
        assert self.time_path is not None
        return await self._get(self.time_path, auth=stamp)

    def parse_server_time(self, body: Any) -> float | None:
        """The server time in ms from the time endpoint's answer, or None if absent."""
        return None

    def _weight(self, path: str) -> int:
        """The weight the gate charges for a call to ``path``."""
        return self.weights[path]

    def _note_response(self, response: httpx.Response) -> None:
        """Learn from a response before the gate does (used-weight headers); nothing here."""

    # ------------------------------------------------------------------ clock

    @property
    def weight_used(self) -> int | None:
        """The last per-IP used weight the exchange reported; None where it reports none."""
        return None

    @property
    def clock_offset_ms(self) -> float:
        """Server time minus local time, as last measured (0 without a time endpoint)."""
        return self._offset_ms

    def now_ms(self) -> int:
        """The exchange's idea of now, in ms: the local clock corrected by the last sync."""
        return int(self._clock() * 1000 + self._offset_ms)

    def now_s(self) -> int:
        """The exchange's idea of now, in Unix seconds: the local clock corrected likewise."""
        return int(self._clock() + self._offset_ms / 1000)

    async def sync_time(self) -> None:
        """Measure the offset between the local clock and the exchange's server time."""
        stamp = _SendTime(self._clock)
        body = await self._time_answer(stamp)
        received = self._clock()
        sent = stamp.sent if stamp.sent is not None else received
        server = self.parse_server_time(body)
        if server is None:
            raise ExchangeBadResponse(
                f"{self.name}: {self.time_path} answered without {self.server_time_field}",
                exchange=self.name,
            )
        # Assume the server read its clock halfway through the round trip.
        self._offset_ms = server - (sent + received) / 2 * 1000
        self._sync_rtt_ms = (received - sent) * 1000
        self._next_sync = self._monotonic() + self._settings.time_sync_interval.total_seconds()
        log.debug("clock_synced", exchange=self.name, offset_ms=round(self._offset_ms, 1))

    async def _ensure_synced(self, *, force: bool = False) -> None:
        if self.time_path is None:
            return
        async with self._sync_lock:
            if not force and self._next_sync is not None and self._monotonic() < self._next_sync:
                return
            try:
                await self.sync_time()
            except ExchangeError as exc:
                # Keep the last offset (or none): the signed call will say whether it matters.
                # Try again soon, not before every audit: that would double the weight spent.
                self._sync_rtt_ms = None
                log.warning(
                    "clock_sync_failed",
                    exchange=self.name,
                    reason=str(exc.reason),
                    error=exc.message,
                )
                interval = self._settings.time_sync_interval.total_seconds()
                self._next_sync = self._monotonic() + min(interval, SYNC_RETRY_SECONDS)

    # ------------------------------------------------------------------ requests

    async def _get_synced(self, path: str, *, auth: httpx.Auth) -> Any:
        """:meth:`_get` with the clock synced; a clock refusal re-syncs once and retries."""
        await self._ensure_synced()
        try:
            return await self._get(path, auth=auth)
        except ExchangeClockError:
            # Our clock drifted since the last sync: measure again and retry once.
            await self._ensure_synced(force=True)
            return await self._get(path, auth=auth)

    async def _send(
        self,
        method: str,
        path: str,
        *,
        auth: httpx.Auth | None = None,
        params: Mapping[str, str] | None = None,
        content: bytes | None = None,
        data: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """Send one request through the gate; errors without a response are translated."""
        await self._gate.acquire(self.name, self._weight(path))
        started = self._monotonic()
        try:
            client = self._client
            if isinstance(client, ExchangeClient):
                response = await client.fetch(
                    method,
                    self._url(path),
                    auth=auth,
                    params=params,
                    content=content,
                    data=data,
                    headers=headers,
                )
            else:  # any other httpx client (a test may hand one in) sends as httpx does
                response = await client.request(
                    method,
                    self._url(path),
                    params=params,
                    content=content,
                    data=data,
                    headers=headers,
                    auth=auth if auth is not None else httpx.USE_CLIENT_DEFAULT,
                )
        except httpx.HTTPError as exc:
            error = translate_transport_error(
                exc,
                self.name,
                path,
                origin=origin_of(self._client.base_url),
                timeout=self._client.timeout,
            )
            self._observe(path, str(error.reason), started)
            raise error from exc
        self._observe(path, str(response.status_code), started)
        self._note_response(response)
        self._gate.observe(self.name, response)
        return response

    def _url(self, path: str) -> httpx.URL:
        """``path`` merged with the client's ``base_url``, as httpx merges it, parsed once.

        httpx parses a relative URL and then the merged one on every request (its URL parser
        checks each character in Python); an absolute :class:`httpx.URL` is used as it is.
        Adapters call a handful of fixed paths, so the cache stays small; past
        :data:`_URL_CACHE_SIZE` paths (a path built per call) nothing more is kept.
        """
        url = self._urls.get(path)
        if url is None:
            url = self._client.build_request("GET", path).url
            if len(self._urls) < _URL_CACHE_SIZE:
                self._urls[path] = url
        return url

    def _observe(self, path: str, status: str, started: float) -> None:
        if self._observer is not None:
            self._observer(self.name, path, status, self._monotonic() - started)

    def _clock_error(
        self, detail: str, code: int | str | None, cause: str | None = None
    ) -> ExchangeClockError:
        """The exchange refused the request's timestamp (after the last sync's offset)."""
        because = "" if cause is None else f"{cause}; "
        return ExchangeClockError(
            f"{detail} ({because}local clock offset {self._offset_ms:+.0f} ms after sync)",
            exchange=self.name,
            code=code,
        )

    def _unreadable(
        self, path: str, response: httpx.Response, what: str = "JSON"
    ) -> ExchangeBadResponse:
        """An answer whose body is not ``what`` (not JSON, not the exchange's envelope)."""
        return ExchangeBadResponse(
            f"{self.name}: {path} answered HTTP {response.status_code} with a body that is not "
            f"{what} ({len(response.content)} bytes; truncated?)",
            exchange=self.name,
        )


class _SendTime(httpx.Auth):
    """Notes the local time when the request is actually sent (after any queueing)."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self.sent: float | None = None

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        self.sent = self._clock()
        yield request
