"""Liveness audits: the exchanges that show a key nothing about itself (exchange-apis.md §3).

MEXC, BitMart, Bitrue, XT, LBank, Coinstore and Biconomy give a key no way to read its own
permissions, IP list or expiry. What keymon *can* vouch for there is that the key is still
accepted, from this egress IP, with this secret: one signed, read-only, low-weight call, whose
answer is classified into PRODUCT.md's reasons (deleted key, wrong secret, refused IP, expired
or frozen key, clock skew, rate limit, exchange down) so that an operator can tell them apart.

A successful call proves exactly that and nothing more: the facts are :attr:`Coverage.LIVENESS`
with every permission, the IP restriction, the IP list, the creation time and any deadline
"not visible", so the policy evaluates none of their rules (no series, never a passing 0).

:class:`LivenessAdapter` is the shared machinery: the weight budget, the request observer,
optional server-time sync with one re-sync and retry on a timestamp error, and the mapping of
HTTP statuses and exchange codes onto :mod:`keymon.errors`. An exchange's module adds only what
is its own: how to sign (an :class:`httpx.Auth` that signs when the request is sent), which call
to make, how to read its server time, and its error codes (:attr:`LivenessAdapter.codes`).
"""

from __future__ import annotations

import asyncio
import enum
import json
import re
import time
from collections.abc import Generator, Mapping
from typing import Any, ClassVar, Final

import httpx
import structlog

from keymon.config import ExchangeSettingsBase, KeyBase
from keymon.errors import (
    ExchangeAuthError,
    ExchangeBadResponse,
    ExchangeClockError,
    ExchangeError,
    ExchangeRateLimited,
    ExchangeUnavailable,
)
from keymon.exchanges.base import (
    Clock,
    RequestGate,
    RequestObserver,
    parse_retry_after,
    translate_transport_error,
)
from keymon.model import Coverage, KeyFacts, Reason

log = structlog.get_logger(__name__)

#: How long to wait before trying a failed time sync again (not before every audit).
SYNC_RETRY_SECONDS: Final = 30.0
#: An IPv4 or IPv6 address inside an exchange's error message ("IP [1.2.3.4] not in ...").
_IP = re.compile(
    r"(?<![\w.:])(\d{1,3}(?:\.\d{1,3}){3}|[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7})(?![\w.:])"
)


class Kind(enum.Enum):
    """What an exchange error code says about the key (or the call)."""

    #: The key is not accepted: deleted, wrong secret, refused IP, expired, frozen, disabled.
    REJECTED = "rejected"
    #: The key is not accepted from *this egress IP* (a rejection that names the IP if it can).
    IP_REFUSED = "ip_refused"
    #: The request's timestamp fell outside the exchange's window.
    CLOCK = "clock"
    RATE_LIMITED = "rate_limited"
    BANNED = "banned"
    UNAVAILABLE = "unavailable"


class LivenessAdapter:
    """One signed, read-only call per audit; an accepted call is the whole finding.

    Subclasses set the class attributes and implement :meth:`auth`, and where the exchange
    needs them :meth:`probe_params`, :meth:`parse_server_time` and :meth:`error_code`.
    """

    name: ClassVar[str]
    coverage: ClassVar[Coverage] = Coverage.LIVENESS
    #: The liveness call: (METHOD, path).
    probe: ClassVar[tuple[str, str]]
    #: The server-time endpoint (GET, unsigned), or None where the exchange needs no sync.
    time_path: ClassVar[str | None] = None
    #: Weight of each call in the exchange's own unit (keymon's budget counts it).
    weights: ClassVar[Mapping[str, int]] = {}
    ip_limit_headers: ClassVar[Mapping[str, int]] = {}
    #: Exchange error code -> (what it means, the cause an operator reads).
    codes: ClassVar[Mapping[int | str, tuple[Kind, str]]] = {}
    #: How a POST probe carries :meth:`probe_params`: a form ("form") or a JSON object ("json").
    body_format: ClassVar[str] = "form"

    def __init__(
        self,
        client: httpx.AsyncClient,
        settings: ExchangeSettingsBase,
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
        self._next_sync: float | None = None
        self._sync_lock = asyncio.Lock()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "probe" in cls.__dict__:
            endpoints = {cls.probe}
            if cls.time_path is not None:
                endpoints.add(("GET", cls.time_path))
            cls.read_only_endpoints = frozenset(endpoints)

    #: (METHOD, path) pairs this adapter may call: the probe and the time endpoint.
    read_only_endpoints: ClassVar[frozenset[tuple[str, str]]] = frozenset()

    # ------------------------------------------------------------------ exchange specifics

    def auth(self, key: Any) -> httpx.Auth:
        """The exchange's signing, applied when the request is sent (never when queued)."""
        raise NotImplementedError

    def probe_params(self, key: Any) -> Mapping[str, str]:
        """Query (GET) or form (POST) parameters of the probe, before signing."""
        return {}

    def parse_server_time(self, body: Any) -> float | None:
        """The server time in ms from the time endpoint's answer, or None if absent."""
        return None

    def error_code(self, response: httpx.Response, body: Any) -> tuple[int | str, str] | None:
        """(code, message) when the answer is an exchange error; None when it is a success."""
        return None

    # ------------------------------------------------------------------ shared machinery

    @property
    def weight_used(self) -> int | None:
        """Always None: these exchanges report no per-IP used weight keymon relies on."""
        return None

    @property
    def clock_offset_ms(self) -> float:
        """Server time minus local time, as last measured (0 without a time endpoint)."""
        return self._offset_ms

    def now_ms(self) -> int:
        """The exchange's idea of now, in ms: the local clock corrected by the last sync."""
        return int(self._clock() * 1000 + self._offset_ms)

    async def audit(self, key: KeyBase) -> KeyFacts:
        """Make the liveness call; the key was accepted if this returns."""
        await self._ensure_synced()
        try:
            await self._call(key)
        except ExchangeClockError:
            if self.time_path is None:
                raise
            await self._ensure_synced(force=True)
            await self._call(key)
        method, path = self.probe
        return KeyFacts(
            coverage=Coverage.LIVENESS,
            raw={"liveness": {"endpoint": f"{method} {path}", "accepted": True}},
        )

    async def sync_time(self) -> None:
        """Measure the offset between the local clock and the exchange's server time."""
        assert self.time_path is not None
        stamp = _SendTime(self._clock)
        body = await self._send("GET", self.time_path, auth=stamp)
        received = self._clock()
        sent = stamp.sent if stamp.sent is not None else received
        server = self.parse_server_time(body)
        if server is None:
            raise ExchangeBadResponse(
                f"{self.name}: {self.time_path} answered without a server time", exchange=self.name
            )
        # Assume the server read its clock halfway through the round trip.
        self._offset_ms = server - (sent + received) / 2 * 1000
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
                # Keep the last offset: the signed call will say whether it matters.
                log.warning("clock_sync_failed", exchange=self.name, reason=str(exc.reason))
                interval = self._settings.time_sync_interval.total_seconds()
                self._next_sync = self._monotonic() + min(interval, SYNC_RETRY_SECONDS)

    async def _call(self, key: KeyBase) -> None:
        method, path = self.probe
        await self._send(method, path, auth=self.auth(key), params=self.probe_params(key))

    async def _send(
        self,
        method: str,
        path: str,
        *,
        auth: httpx.Auth,
        params: Mapping[str, str] | None = None,
    ) -> Any:
        await self._gate.acquire(self.name, self.weights.get(path, 1))
        started = self._monotonic()
        try:
            if method == "GET":
                response = await self._client.get(path, params=params or None, auth=auth)
            elif self.body_format == "json":
                # The exact bytes are what the exchange signs over: built here, not by httpx.
                response = await self._client.request(
                    method,
                    path,
                    content=json.dumps(dict(params or {})).encode(),
                    headers={"Content-Type": "application/json"},
                    auth=auth,
                )
            else:
                response = await self._client.request(method, path, data=params, auth=auth)
        except httpx.HTTPError as exc:
            error = translate_transport_error(exc, self.name, path)
            self._observe(path, str(error.reason), started)
            raise error from exc
        self._observe(path, str(response.status_code), started)
        self._gate.observe(self.name, response)
        try:
            body: Any = json.loads(response.content)
        except (ValueError, UnicodeDecodeError):
            body = None
        failure = self.error_code(response, body) if body is not None else None
        if failure is not None:
            raise self._code_error(*failure, response)
        if response.status_code != httpx.codes.OK:
            raise self._http_error(response)
        if body is None:
            raise ExchangeBadResponse(
                f"{self.name}: {path} answered HTTP 200 with a body that is not JSON "
                f"({len(response.content)} bytes; truncated?)",
                exchange=self.name,
            )
        return body

    def _observe(self, path: str, status: str, started: float) -> None:
        if self._observer is not None:
            self._observer(self.name, path, status, self._monotonic() - started)

    def _retry_after(self, response: httpx.Response) -> float | None:
        return parse_retry_after(response.headers.get("Retry-After"), now=self._clock())

    def _http_error(self, response: httpx.Response) -> ExchangeError:
        """An error answer without an exchange code keymon knows how to read."""
        status = response.status_code
        retry_after = self._retry_after(response)
        detail = f"{self.name}: HTTP {status}"
        if status == 418:
            return ExchangeRateLimited(
                f"{detail} (IP banned; retry after {retry_after or 'unknown'} s)",
                exchange=self.name,
                reason=Reason.BANNED,
                retry_after=retry_after,
            )
        if status == 429:
            return ExchangeRateLimited(
                f"{detail} (rate limited; retry after {retry_after or 'unknown'} s)",
                exchange=self.name,
                retry_after=retry_after,
            )
        if status == 401:
            return ExchangeAuthError(
                f"{self.name} rejects the key ({detail}): the exchange refused its credentials",
                exchange=self.name,
            )
        if status >= 500:
            return ExchangeUnavailable(detail, exchange=self.name)
        if status == 403:
            return ExchangeUnavailable(
                f"{detail} without an error code (a web application firewall?)",
                exchange=self.name,
            )
        return ExchangeBadResponse(f"{detail} with a body keymon cannot read", exchange=self.name)

    def _code_error(self, code: int | str, message: str, response: httpx.Response) -> ExchangeError:
        message = message[:300]
        detail = f"{self.name} {code}: {message or 'no message'}"
        known = self.codes.get(code)
        if known is None:
            if response.status_code >= 500:
                return ExchangeUnavailable(detail, exchange=self.name, code=code)
            if response.status_code in (418, 429):
                return self._http_error(response)
            return ExchangeBadResponse(
                f"{detail} (HTTP {response.status_code}; a code keymon does not know)",
                exchange=self.name,
                code=code,
            )
        kind, cause = known
        retry_after = self._retry_after(response)
        if kind is Kind.REJECTED or kind is Kind.IP_REFUSED:
            refused_ip = None
            if kind is Kind.IP_REFUSED:
                match = _IP.search(message)
                refused_ip = match.group(1) if match else None
            text = f"{self.name} rejects the key ({detail}): {cause}"
            if refused_ip:
                text += f"; {self.name} refused egress IP {refused_ip}"
            return ExchangeAuthError(text, exchange=self.name, code=code, refused_ip=refused_ip)
        if kind is Kind.CLOCK:
            return ExchangeClockError(
                f"{detail} ({cause}; local clock offset {self._offset_ms:+.0f} ms after sync)",
                exchange=self.name,
                code=code,
            )
        if kind is Kind.RATE_LIMITED:
            return ExchangeRateLimited(
                f"{detail} ({cause})", exchange=self.name, code=code, retry_after=retry_after
            )
        if kind is Kind.BANNED:
            return ExchangeRateLimited(
                f"{detail} ({cause})",
                exchange=self.name,
                reason=Reason.BANNED,
                code=code,
                retry_after=retry_after,
            )
        return ExchangeUnavailable(f"{detail} ({cause})", exchange=self.name, code=code)


class _SendTime(httpx.Auth):
    """Notes the local time when the request is actually sent (after any queueing)."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self.sent: float | None = None

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        self.sent = self._clock()
        yield request
