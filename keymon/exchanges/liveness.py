"""Liveness audits: the exchanges that show a key nothing about itself (exchange-apis.md §3).

MEXC, BitMart, Bitrue, LBank, Coinstore and Biconomy give a key no way to read its own
permissions, IP list or expiry (XT, once among them, does: see :mod:`keymon.exchanges.xt`).
What keymon *can* vouch for there is that the key is still accepted, from this egress IP, with
this secret: one signed, read-only, low-weight call, whose answer is classified into
PRODUCT.md's reasons (deleted key, wrong secret, refused IP, expired or frozen key, clock skew,
rate limit, exchange down) so that an operator can tell them apart.

A successful call proves exactly that and nothing more: the facts are :attr:`Coverage.LIVENESS`
with every permission, the IP restriction, the IP list, the creation time and any deadline
"not visible", so the policy evaluates none of their rules (no series, never a passing 0).

:class:`LivenessAdapter` is the shared machinery: on top of
:class:`~keymon.exchanges.common.AdapterBase` (the weight budget, the request observer, the
optional server-time sync) it adds one re-sync and retry on a timestamp error, and the mapping
of HTTP statuses and exchange codes onto :mod:`keymon.errors`. An exchange's module adds only what
is its own: how to sign (an :class:`httpx.Auth` that signs when the request is sent), which call
to make, how to read its server time, and its error codes (:attr:`LivenessAdapter.codes`) and
HTTP statuses (:attr:`LivenessAdapter.statuses`), each from the exchange's own tables.
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Mapping
from typing import Any, ClassVar

import httpx

from keymon.config_base import KeyBase
from keymon.errors import (
    ExchangeAuthError,
    ExchangeBadResponse,
    ExchangeClockError,
    ExchangeError,
    ExchangeRateLimited,
    ExchangeUnavailable,
)
from keymon.exchanges.base import parse_retry_after
from keymon.exchanges.common import SYNC_RETRY_SECONDS as SYNC_RETRY_SECONDS
from keymon.exchanges.common import AdapterBase
from keymon.model import Coverage, KeyFacts, Reason

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
    #: The key *or* the timestamp was refused, and the exchange does not say which (Bitrue
    #: -1022): keymon re-syncs and retries once, then decides from how well it knows the
    #: server's time (:attr:`LivenessAdapter.stamp_tolerance_ms`).
    KEY_OR_CLOCK = "key_or_clock"
    RATE_LIMITED = "rate_limited"
    BANNED = "banned"
    UNAVAILABLE = "unavailable"
    #: The exchange says keymon's own request was malformed (a header or parameter missing or
    #: out of range): nothing about the key, a bad_response that names the cause.
    MALFORMED = "malformed"


class LivenessAdapter(AdapterBase):
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
    #: HTTP status -> (what it means, the cause), from the exchange's own table of statuses:
    #: how an error answer is read when it carries no code, or a code keymon does not know.
    #: 418, 429 and 5xx need no entry (a ban, a rate limit, the exchange's own failure); an
    #: HTTP 401 is a refusal of the key's credentials everywhere unless an exchange says more.
    statuses: ClassVar[Mapping[int, tuple[Kind, str]]] = {
        401: (Kind.REJECTED, "HTTP 401 Unauthorized: the exchange refused the key's credentials"),
    }
    #: How far off keymon's stamp may be before the exchange refuses it, in ms (for
    #: :attr:`Kind.KEY_OR_CLOCK`): a persisting refusal reads as the key's only if the last
    #: sync's round trip bounds keymon's error within this.
    stamp_tolerance_ms: ClassVar[float] = 1000.0

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

    def probe_body(self, key: Any) -> bytes | None:
        """A JSON body for the probe (sent as ``application/json``), or None to send
        :meth:`probe_params` instead (query for GET, form for POST)."""
        return None

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
        except _KeyOrClock as first:
            if self.time_path is None:
                raise first.rejected from None
            await self._ensure_synced(force=True)
            try:
                await self._call(key)
            except _KeyOrClock as again:
                raise self._resolve_key_or_clock(again) from None
        return KeyFacts(coverage=Coverage.LIVENESS)

    async def _call(self, key: KeyBase) -> Any:
        method, path = self.probe
        return await self._request(
            method,
            path,
            auth=self.auth(key),
            params=self.probe_params(key),
            json_body=self.probe_body(key),
        )

    def _weight(self, path: str) -> int:
        return self.weights.get(path, 1)

    async def _get(self, path: str, *, auth: httpx.Auth) -> Any:
        return await self._request("GET", path, auth=auth)

    async def _request(
        self,
        method: str,
        path: str,
        *,
        auth: httpx.Auth,
        params: Mapping[str, str] | None = None,
        json_body: bytes | None = None,
    ) -> Any:
        if method == "GET":
            response = await self._send(method, path, params=params or None, auth=auth)
        elif json_body is not None:
            response = await self._send(
                method,
                path,
                content=json_body,
                headers={"Content-Type": "application/json"},
                auth=auth,
            )
        else:
            response = await self._send(method, path, data=params, auth=auth)
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
            raise self._unreadable(path, response)
        return body

    def _retry_after(self, response: httpx.Response) -> float | None:
        return parse_retry_after(response.headers.get("Retry-After"), now=self._clock())

    def _http_error(self, response: httpx.Response) -> ExchangeError:
        """An error answer without an exchange code keymon knows how to read."""
        status = response.status_code
        retry_after = self._retry_after(response)
        detail = f"{self.name}: HTTP {status}"
        documented = self.statuses.get(status)
        if documented is not None and status not in (418, 429) and status < 500:
            return self._known_error(None, "", response, documented, detail=detail)
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
            documented = self.statuses.get(response.status_code)
            if documented is not None:
                # A code the exchange's table does not list, under a status whose meaning
                # the exchange does document: the status decides (MEXC 401 "No authority").
                kind, cause = documented
                return self._known_error(
                    code,
                    message,
                    response,
                    (kind, f"{cause} (code {code} is not in its error table)"),
                )
            return ExchangeBadResponse(
                f"{detail} (HTTP {response.status_code}; a code keymon does not know)",
                exchange=self.name,
                code=code,
            )
        return self._known_error(code, message, response, known)

    def _known_error(
        self,
        code: int | str | None,
        message: str,
        response: httpx.Response,
        known: tuple[Kind, str],
        *,
        detail: str | None = None,
    ) -> ExchangeError:
        """The error for an answer whose meaning the exchange documents (by its code, or by
        its HTTP status when ``code`` is None)."""
        if detail is None:
            detail = f"{self.name} {code}: {message or 'no message'}"
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
        if kind is Kind.KEY_OR_CLOCK:
            return _KeyOrClock(
                ExchangeAuthError(
                    f"{self.name} rejects the key ({detail}): {cause}",
                    exchange=self.name,
                    code=code,
                ),
                exchange=self.name,
            )
        if kind is Kind.CLOCK:
            return self._clock_error(detail, code, cause)
        if kind is Kind.MALFORMED:
            return ExchangeBadResponse(
                f"{detail} ({cause}; the exchange refused keymon's request as malformed, "
                "which says nothing about the key)",
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

    def _resolve_key_or_clock(self, error: _KeyOrClock) -> ExchangeError:
        """A refusal that names neither the key nor the clock, persisting after a re-sync.

        If the re-sync succeeded with a round trip that bounds keymon's stamp within
        :attr:`stamp_tolerance_ms` of the server's clock, the stamp was good and the refusal
        is the key's (wrong secret, deleted or unusable key). Otherwise keymon cannot vouch
        for its own stamp, and says clock skew: the one cause it could not rule out.
        """
        rejected = error.rejected
        rtt = self._sync_rtt_ms
        if rtt is not None and rtt / 2 < self.stamp_tolerance_ms:
            return ExchangeAuthError(
                f"{rejected.message}; refused again after keymon re-synced with the server's "
                f"clock (round trip {rtt:.0f} ms), so the stamp was in time and the key itself "
                "is refused",
                exchange=self.name,
                code=rejected.code,
            )
        measured = f"round trip {rtt:.0f} ms" if rtt is not None else "the time endpoint failed"
        return ExchangeClockError(
            f"{self.name} {rejected.code}: the signature or the timestamp was refused, and "
            f"keymon cannot vouch for its stamp ({measured}; {self.name} allows about "
            f"{self.stamp_tolerance_ms:.0f} ms): check this host's clock before the key",
            exchange=self.name,
            code=rejected.code,
        )


class _KeyOrClock(ExchangeError):
    """Internal: a refusal that may be the key's or the clock's, resolved in ``audit``."""

    def __init__(self, rejected: ExchangeAuthError, *, exchange: str) -> None:
        super().__init__(rejected.message, exchange=exchange, code=rejected.code)
        self.rejected = rejected
