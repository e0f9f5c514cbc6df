"""A fake of Kraken's spot REST API, limited to what a key monitor needs.

`KrakenSimulator` implements the behaviour exchange-apis.md §2.16 documents (from Kraken's
"Get API Key Info" reference and its spot REST authentication guide), written from the doc and
not from keymon's adapter:

- ``POST /0/private/GetApiKeyInfo``, answering HTTP 200 with Kraken's envelope
  ``{"error": [], "result": {apiKeyName, apiKey, nonce, nonceWindow, permissions, iban,
  validUntil, queryFrom, queryTo, createdTime, modifiedTime, ipAllowlist, lastUsed}}``; every
  failure is also HTTP 200, with ``{"error": ["EAPI:..."]}`` and no ``result``;
- authentication: the ``API-Key`` header names the key (``EAPI:Invalid key`` when unknown),
  the body is form-encoded (or JSON) and carries a ``nonce``, and ``API-Sign`` must be
  ``base64(HMAC-SHA512(base64decode(secret), uri_path + SHA256(nonce + postdata)))`` over the
  exact body bytes (``EAPI:Invalid signature``);
- the nonce: it must be larger than every nonce the key has used (``EAPI:Invalid nonce``). A
  key's ``nonceWindow`` lets a nonce up to that much *below* the largest one through, once,
  so that requests of several clients may arrive out of order. How Kraken counts the window
  is not documented in exchange-apis.md; this is the simulator's model of it;
- the key's IP allowlist (addresses or CIDR ranges; empty means any IP). The error Kraken
  gives for a refused IP is unconfirmed; the simulator answers ``EGeneral:Permission denied``,
  the documented "not allowed" error;
- Kraken's per-key call counter: every call adds 1, the counter decays by ``decay_per_s``
  every second, and a call that would take it past ``counter_max`` is refused with
  ``EAPI:Rate limit exceeded``. The defaults (15, 0.33/s) are Kraken's published figures for
  its entry tier, not exchange-apis.md's (which gives none);
- a key whose ``validUntil`` has passed is answered ``EAPI:Invalid key`` (an assumption: the
  docs do not say what an expired key gets);
- fault injection (latency, failed responses, truncated bodies) through `FaultKnobs`.

Field types are not given by exchange-apis.md either. The simulator sends the times
(``createdTime``, ``modifiedTime``, ``lastUsed``, ``validUntil``) as strings of Unix seconds,
like the documented ``"0"`` of ``validUntil``, and ``nonce`` as a string, ``nonceWindow`` as a
number. Like the other simulators it is a pure synchronous state machine behind one lock, with
an injectable clock; injected latency is returned as `SimResponse.delay`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import json
import re
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import parse_qs, parse_qsl

from keymon.simulator.common import (
    SimulatorBase,
    header,
    ip_allowed,
)
from keymon.simulator.demo_keys import DAY, DemoKey, DemoVenue
from keymon.simulator.server import SimResponse

__all__ = ["KrakenSimulator", "sign"]

KEY_INFO_PATH: Final = "/0/private/GetApiKeyInfo"
#: Kraken's entry-tier counter (published limits; not in exchange-apis.md).
DEFAULT_COUNTER_MAX: Final = 15.0
DEFAULT_DECAY_PER_S: Final = 0.33
#: The guide-like market-making key: funds and orders, no withdrawal.
DEFAULT_PERMISSIONS: Final = (
    "query-funds",
    "query-open-trades",
    "query-closed-trades",
    "modify-trades",
)
INVALID_KEY: Final = "EAPI:Invalid key"
INVALID_SIGNATURE: Final = "EAPI:Invalid signature"
INVALID_NONCE: Final = "EAPI:Invalid nonce"
PERMISSION_DENIED: Final = "EGeneral:Permission denied"
RATE_LIMIT: Final = "EAPI:Rate limit exceeded"
_JSON: Final = {"Content-Type": "application/json"}
#: A nonce is an unsigned 64-bit integer, in ASCII digits.
_NONCE: Final = re.compile(r"[0-9]{1,20}")


def sign(secret: str, path: str, nonce: str, postdata: str) -> str:
    """``base64(HMAC-SHA512(base64decode(secret), path + SHA256(nonce + postdata)))``."""
    digest = hashlib.sha256((nonce + postdata).encode()).digest()
    mac = hmac.new(base64.b64decode(secret), path.encode() + digest, hashlib.sha512)
    return base64.b64encode(mac.digest()).decode("ascii")


@dataclass
class _Key:
    secret: str
    name: str
    permissions: list[str]
    ips: list[str]
    created: int
    modified: int
    valid_until: int = 0
    nonce_window: int = 0
    last_nonce: int = 0
    #: Nonces accepted inside the window below ``last_nonce`` (each may be used once).
    window_used: set[int] = field(default_factory=set)
    last_used: int = 0
    #: A one-time password the key requires (API-key 2FA); None: no 2FA.
    otp: str | None = None
    counter: float = 0.0
    counter_at: float = 0.0


class _Error(Exception):
    def __init__(self, error: str) -> None:
        super().__init__(error)
        self.error = error


class KrakenSimulator(SimulatorBase):
    """A thread-safe, in-memory Kraken spot REST fake with an injectable clock (seconds)."""

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.time,
        counter_max: float = DEFAULT_COUNTER_MAX,
        decay_per_s: float = DEFAULT_DECAY_PER_S,
    ) -> None:
        _check_limits(counter_max, decay_per_s)
        super().__init__(clock=clock)
        self._counter_max = counter_max
        self._decay = decay_per_s
        self._keys: dict[str, _Key] = {}
        self._per_key: Counter[str] = Counter()
        self._errors: Counter[str] = Counter()

    # ---------------------------------------------------------------- knobs

    def set_limit(self, counter_max: float, decay_per_s: float | None = None) -> None:
        """The call counter's ceiling (and its decay per second)."""
        decay = self._decay if decay_per_s is None else decay_per_s
        _check_limits(counter_max, decay)
        with self._lock:
            self._counter_max, self._decay = counter_max, decay

    def errors(self, error: str) -> int:
        """How many answers carried ``error`` (e.g. ``EAPI:Invalid nonce``)."""
        with self._lock:
            return self._errors[error]

    def request_count(self, api_key: str) -> int:
        """How many exchange requests named ``api_key``."""
        with self._lock:
            return self._per_key[api_key]

    def last_nonce(self, api_key: str) -> int:
        """The largest nonce the key has used."""
        with self._lock:
            return self._keys[api_key].last_nonce

    def use_nonce(self, api_key: str, nonce: int) -> None:
        """Another client of the key (a bot) signed a request with ``nonce``."""
        with self._lock:
            key = self._keys[api_key]
            key.last_nonce = max(key.last_nonce, nonce)

    # ---------------------------------------------------------------- keys

    def add_key(
        self,
        api_key: str,
        secret: str,
        *,
        name: str = "keymon",
        permissions: list[str] | None = None,
        ips: list[str] | None = None,
        valid_until: int = 0,
        nonce_window: int = 0,
        otp: str | None = None,
    ) -> None:
        """Register a key (default: the market-making permissions, allowlisted to 127.0.0.1).

        ``secret`` must be base64, as Kraken's private keys are. ``otp``: the key has 2FA and
        every call must carry this password, else ``EAPI:Invalid signature`` (Kraken's support
        article on API-key 2FA).
        """
        allowlist = list(ips) if ips is not None else ["127.0.0.1"]
        _check_key(secret, allowlist, nonce_window)
        now = int(self._clock())
        with self._lock:
            if api_key in self._keys:
                raise ValueError(f"key {api_key} already exists")
            self._keys[api_key] = _Key(
                secret,
                name,
                list(DEFAULT_PERMISSIONS if permissions is None else permissions),
                allowlist,
                now,
                now,
                valid_until,
                nonce_window,
                otp=otp,
            )

    def update_key(
        self,
        api_key: str,
        *,
        permissions: list[str] | None = None,
        ips: list[str] | None = None,
        valid_until: int | None = None,
        nonce_window: int | None = None,
    ) -> None:
        """Change a key's permissions, IP allowlist (``[]``: any IP), expiry or nonce window."""
        with self._lock:
            key = self._keys[api_key]
            _check_key(
                key.secret,
                key.ips if ips is None else ips,
                key.nonce_window if nonce_window is None else nonce_window,
            )
            if permissions is not None:
                key.permissions = list(permissions)
            if ips is not None:
                key.ips = list(ips)
            if valid_until is not None:
                key.valid_until = valid_until
            if nonce_window is not None:
                key.nonce_window = nonce_window
            key.modified = int(self._clock())

    def delete_key(self, api_key: str) -> None:
        """Delete a key: its requests get ``EAPI:Invalid key`` from now on."""
        with self._lock:
            del self._keys[api_key]

    # ---------------------------------------------------------------- serving

    # ---------------------------------------------------------------- requests

    def _note_request(self, path: str, raw_query: str, headers: Mapping[str, str]) -> None:
        api_key = header(headers, "API-Key")
        if api_key:
            self._per_key[api_key] += 1

    def _dispatch(
        self,
        method: str,
        path: str,
        raw_query: str,
        body: bytes,
        headers: Mapping[str, str],
        client_ip: str,
    ) -> SimResponse:
        try:
            return self._route(method, path, body, headers, client_ip)
        except _Error as answer:
            self._errors[answer.error] += 1
            return _envelope([answer.error])

    def _route(
        self,
        method: str,
        path: str,
        body: bytes,
        headers: Mapping[str, str],
        client_ip: str,
    ) -> SimResponse:
        if path != KEY_INFO_PATH:
            return SimResponse(404, dict(_JSON), b'{"error":["EGeneral:Unknown method"]}')
        if method != "POST":
            return SimResponse(405, {"Allow": "POST"}, b"")
        now = self._clock()
        api_key, key = self._authenticate(path, body, headers, client_ip, now)
        self._count_call(key, now)
        key.last_used = int(now)
        return _envelope([], self._info(api_key, key))

    def _authenticate(
        self,
        path: str,
        body: bytes,
        headers: Mapping[str, str],
        client_ip: str,
        now: float,
    ) -> tuple[str, _Key]:
        api_key = header(headers, "API-Key") or ""
        key = self._keys.get(api_key)
        if key is None or (key.valid_until and now >= key.valid_until):
            raise _Error(INVALID_KEY)
        postdata = body.decode("utf-8", "surrogateescape")
        nonce_text = _nonce_field(postdata, header(headers, "Content-Type") or "")
        if nonce_text is None or not _NONCE.fullmatch(nonce_text):
            raise _Error(INVALID_NONCE)
        expected = sign(key.secret, path, nonce_text, postdata)
        given = header(headers, "API-Sign") or ""
        if not hmac.compare_digest(_b64(given), base64.b64decode(expected)):
            raise _Error(INVALID_SIGNATURE)
        if key.otp is not None and _form_field(postdata, "otp") != key.otp:
            raise _Error(INVALID_SIGNATURE)  # a missing or wrong 2FA password
        self._take_nonce(key, int(nonce_text))
        if key.ips and not ip_allowed(client_ip, key.ips):
            raise _Error(PERMISSION_DENIED)
        return api_key, key

    @staticmethod
    def _take_nonce(key: _Key, nonce: int) -> None:
        if nonce > key.last_nonce:
            key.last_nonce = nonce
            key.window_used = {n for n in key.window_used if n > nonce - key.nonce_window}
            return
        if key.last_nonce - nonce < key.nonce_window and nonce not in key.window_used:
            key.window_used.add(nonce)
            return
        raise _Error(INVALID_NONCE)

    def _count_call(self, key: _Key, now: float) -> None:
        elapsed = max(0.0, now - key.counter_at)
        key.counter = max(0.0, key.counter - elapsed * self._decay)
        key.counter_at = now
        if key.counter + 1 > self._counter_max:
            raise _Error(RATE_LIMIT)
        key.counter += 1

    @staticmethod
    def _info(api_key: str, key: _Key) -> dict[str, object]:
        return {
            "apiKeyName": key.name,
            "apiKey": api_key,
            "nonce": str(key.last_nonce),
            "nonceWindow": key.nonce_window,
            "permissions": list(key.permissions),
            "iban": "AA12 N84G WQHK AA7X",
            "validUntil": str(key.valid_until),
            "queryFrom": "0",
            "queryTo": "0",
            "createdTime": str(key.created),
            "modifiedTime": str(key.modified),
            "ipAllowlist": list(key.ips),
            "lastUsed": str(key.last_used),
        }


def _check_limits(counter_max: float, decay_per_s: float) -> None:
    if counter_max < 1 or decay_per_s < 0:
        raise ValueError("the counter needs a maximum of at least 1 and a decay >= 0")


def _check_key(secret: str, ips: list[str], nonce_window: int) -> None:
    try:
        base64.b64decode(secret, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("a Kraken secret is base64") from None
    if nonce_window < 0:
        raise ValueError("nonce_window must be >= 0")
    for entry in ips:
        ipaddress.ip_network(entry, strict=False)  # ValueError on garbage


def _nonce_field(postdata: str, content_type: str) -> str | None:
    """The ``nonce`` of a form-encoded or JSON body."""
    if content_type.split(";", 1)[0].strip().lower() == "application/json":
        try:
            data = json.loads(postdata)
        except ValueError:
            return None
        nonce = data.get("nonce") if isinstance(data, dict) else None
        return str(nonce) if isinstance(nonce, int | str) and not isinstance(nonce, bool) else None
    return dict(parse_qsl(postdata, keep_blank_values=True)).get("nonce")


def _b64(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return b""


def _envelope(error: list[str], result: object | None = None) -> SimResponse:
    body: dict[str, object] = {"error": error}
    if result is not None:
        body["result"] = result
    return SimResponse(200, dict(_JSON), json.dumps(body).encode())


def _form_field(postdata: str, name: str) -> str | None:
    """One field of a form-encoded body (None if absent or not form-encoded)."""
    values = parse_qs(postdata).get(name)
    return values[0] if values else None


def _base64_secret(key: DemoKey) -> str:
    return base64.b64encode(bytes.fromhex(key.secret) * 2).decode()


def _register_demo_key(simulator: Any, key: DemoKey) -> None:
    simulator.add_key(key.api_key, _base64_secret(key), **key.state)


#: ``keymon demo``'s keys here, each in a state an operator should recognise.
DEMO = DemoVenue(
    _register_demo_key,
    lambda now: [
        DemoKey(
            "lima-kraken",
            "lima",
            "kraken",
            "the key expires in 5 days (validUntil)",
            {"valid_until": int(now + 5 * DAY)},
        ),
    ],
    secret_of=_base64_secret,
)
