"""A fake of HTX's (formerly Huobi's) REST API, limited to what a key monitor needs.

`HtxSimulator` implements the behaviour exchange-apis.md §2.15 documents, written from the doc
and not from keymon's adapter:

- ``GET /v2/user/api-key?uid=<uid>[&accessKey=<key>]``, answering
  ``{"code": 200, "data": [{accessKey, note, permission, ipAddresses, validDays, status,
  createTime, updateTime}], "ok": true}``; ``permission`` and ``ipAddresses`` are comma strings;
- signature version 2: ``AccessKeyId``, ``SignatureMethod=HmacSHA256``, ``SignatureVersion=2``,
  ``Timestamp`` and ``Signature = base64(HMAC-SHA256(secret, "GET\\nhost\\npath\\n" +
  sorted_urlencoded_params))``, recomputed from the decoded parameters;
- a per-second request limit per key (HTTP 429);
- fault injection (:class:`~keymon.simulator.faults.FaultKnobs`): latency (returned as
  `SimResponse.delay`), failed responses, truncated bodies and a server clock skew, which the
  timestamp window uses.

exchange-apis.md does not give HTX's error codes for an unknown key, a wrong signature, a
foreign IP or a stale timestamp. The simulator answers all of them with the one code it names,
the v1-style ``{"status": "error", "err-code": "api-signature-not-valid", "err-msg": ...}``,
with HTTP 200; the message says which check failed. The timestamp window (5 minutes either
side) is an assumption. Like the other simulators it is a pure synchronous state machine behind
one lock, with an injectable clock. Its admin API under ``/_simulator/``: ``GET /keys``,
``GET/PATCH /keys/{api_key}`` (``permission``, ``ips``, ``valid_days``, ``account_state``,
``margin_state``), ``GET/POST /faults`` and ``GET /stats``; secrets are
never returned.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final
from urllib.parse import parse_qsl, quote, unquote

from keymon.simulator.common import (
    Answer,
    SimulatorBase,
    header,
    ip_allowed,
    json_object,
    json_response,
)
from keymon.simulator.demo_keys import DemoKey, DemoVenue
from keymon.simulator.server import ADMIN_PREFIX, SimResponse

__all__ = ["HtxSimulator", "presign", "sign"]

API_KEY_PATH: Final = "/v2/user/api-key"
ACCOUNTS_PATH: Final = "/v1/account/accounts"
#: The documented ``state`` values of an account.
ACCOUNT_STATES: Final = ("working", "lock")
HOST: Final = "api.huobi.pro"
TIMESTAMP_WINDOW_S: Final = 300
SIGNATURE_ERROR: Final = "api-signature-not-valid"
DEFAULT_PERMISSION: Final = ("readOnly", "trade")


def presign(method: str, host: str, path: str, params: Mapping[str, str]) -> str:
    """``METHOD\\nhost\\npath\\nsorted_urlencoded_params``."""
    query = "&".join(
        f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in sorted(params.items())
    )
    return f"{method.upper()}\n{host.lower()}\n{path}\n{query}"


def sign(secret: str, text: str) -> str:
    """Base64 of the HMAC-SHA256 digest of ``text`` under ``secret``."""
    digest = hmac.new(secret.encode(), text.encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


@dataclass
class _Key:
    secret: str
    uid: str
    permission: list[str]
    ips: list[str]
    create_time: int
    valid_days: int
    #: The spot account's ``state``; the isolated margin account's (None: no margin account).
    account_state: str = "working"
    margin_state: str | None = None
    #: The spot account's id (the others follow it, as in the documented example).
    account_id: int = 10000001


def _state(value: object, name: str) -> str:
    if value not in ACCOUNT_STATES:
        raise ValueError(f"{name} must be one of {', '.join(ACCOUNT_STATES)}")
    return str(value)


class HtxSimulator(SimulatorBase):
    """A thread-safe, in-memory HTX fake with an injectable clock (seconds)."""

    has_admin = True
    admin_in_transport = True

    def __init__(
        self, *, clock: Callable[[], float] = time.time, limit_per_second: int = 10
    ) -> None:
        if limit_per_second < 1:
            raise ValueError("the limit must be at least 1")
        super().__init__(clock=clock)
        self._limit = limit_per_second
        self._keys: dict[str, _Key] = {}
        self._windows: dict[str, tuple[int, int]] = {}
        self._per_key: Counter[str] = Counter()
        self._per_path: Counter[str] = Counter()
        self._count_429 = 0

    # ---------------------------------------------------------------- knobs

    def set_limit(self, limit_per_second: int) -> None:
        """Requests allowed per key per second."""
        if limit_per_second < 1:
            raise ValueError("the limit must be at least 1")
        with self._lock:
            self._limit = limit_per_second

    def add_key(
        self,
        api_key: str,
        secret: str,
        uid: str,
        *,
        permission: list[str] | None = None,
        ips: list[str] | None = None,
        valid_days: int = -1,
        account_state: str = "working",
        margin_state: str | None = None,
    ) -> None:
        """Create a key (default: readOnly and trade, no IP binding, a working spot account
        and no margin account)."""
        for entry in ips or []:
            ipaddress.ip_network(entry, strict=False)
        account_state = _state(account_state, "account_state")
        if margin_state is not None:
            margin_state = _state(margin_state, "margin_state")
        with self._lock:
            self._keys[api_key] = _Key(
                secret,
                uid,
                list(permission or DEFAULT_PERMISSION),
                list(ips or []),
                self._now_ms(),
                valid_days,
                account_state,
                margin_state,
                10000001 + 10 * len(self._keys),
            )

    def update_key(
        self,
        api_key: str,
        *,
        permission: list[str] | None = None,
        ips: list[str] | None = None,
        valid_days: int | None = None,
        account_state: str | None = None,
        margin_state: str | None = None,
    ) -> None:
        """Change a key's permissions, IP binding, validDays or account states."""
        with self._lock:
            self._update_locked(
                self._keys[api_key], permission, ips, valid_days, account_state, margin_state
            )

    def _update_locked(
        self,
        key: _Key,
        permission: object = None,
        ips: object = None,
        valid_days: object = None,
        account_state: object = None,
        margin_state: object = None,
    ) -> None:
        if permission is not None and (
            not isinstance(permission, list) or not all(isinstance(p, str) for p in permission)
        ):
            raise ValueError("permission must be a list of strings")
        if ips is not None:
            if not isinstance(ips, list) or not all(isinstance(ip, str) for ip in ips):
                raise ValueError("ips must be a list of addresses or CIDRs")
            for entry in ips:
                ipaddress.ip_network(entry, strict=False)
        if valid_days is not None and (
            not isinstance(valid_days, int) or isinstance(valid_days, bool)
        ):
            raise ValueError("valid_days must be an integer")
        spot = None if account_state is None else _state(account_state, "account_state")
        margin = None if margin_state is None else _state(margin_state, "margin_state")
        if permission is not None:
            key.permission = list(permission)
        if ips is not None:
            key.ips = list(ips)
        if valid_days is not None:
            key.valid_days = valid_days
        if spot is not None:
            key.account_state = spot
        if margin is not None:
            key.margin_state = margin

    def requests_to(self, path: str) -> int:
        """How many exchange requests asked for ``path``."""
        with self._lock:
            return self._per_path[path]

    def delete_key(self, api_key: str) -> None:
        """Delete a key: its requests are then refused."""
        with self._lock:
            del self._keys[api_key]

    @property
    def count_429(self) -> int:
        """How many requests were answered 429."""
        with self._lock:
            return self._count_429

    def requests_for(self, api_key: str) -> int:
        """How many requests named ``api_key``."""
        with self._lock:
            return self._per_key[api_key]

    # ---------------------------------------------------------------- serving

    # ---------------------------------------------------------------- requests

    def _note_request(self, path: str, raw_query: str, headers: Mapping[str, str]) -> None:
        api_key = dict(parse_qsl(raw_query, keep_blank_values=True)).get("AccessKeyId")
        if api_key:
            self._per_key[api_key] += 1
        if path in (API_KEY_PATH, ACCOUNTS_PATH):
            self._per_path[path] += 1

    def _dispatch(
        self,
        method: str,
        path: str,
        raw_query: str,
        body: bytes,
        headers: Mapping[str, str],
        client_ip: str,
    ) -> SimResponse:
        params = dict(parse_qsl(raw_query, keep_blank_values=True))
        if path not in (API_KEY_PATH, ACCOUNTS_PATH):
            return SimResponse(404, {"Content-Type": "text/plain"}, b"404 Not Found")
        if method != "GET":
            return SimResponse(405, {"Allow": "GET"}, b"")
        host = header(headers, "host") or HOST
        key = self._authenticate(method, host.split(":")[0], path, params, client_ip)
        self._admit(params["AccessKeyId"])
        if path == ACCOUNTS_PATH:
            return json_response(200, {"status": "ok", "data": self._accounts(key)})
        uid = params.get("uid")
        if uid != key.uid:
            return json_response(
                200, {"code": 1003, "message": "uid does not match the key", "ok": False}
            )
        wanted = params.get("accessKey")
        entries = [
            self._entry(name, k)
            for name, k in self._keys.items()
            if k.uid == uid and (wanted is None or name == wanted)
        ]
        return json_response(200, {"code": 200, "data": entries, "ok": True})

    def _authenticate(
        self, method: str, host: str, path: str, params: dict[str, str], client_ip: str
    ) -> _Key:
        signature = params.pop("Signature", None)
        api_key = params.get("AccessKeyId")
        if (
            not api_key
            or not signature
            or params.get("SignatureMethod") != "HmacSHA256"
            or params.get("SignatureVersion") != "2"
        ):
            raise _refuse("Signature not valid: missing required parameter")
        try:
            stamp = datetime.strptime(params.get("Timestamp", "") + "+0000", "%Y-%m-%dT%H:%M:%S%z")
        except ValueError:
            raise _refuse("Signature not valid: Timestamp format invalid") from None
        if abs(stamp.timestamp() - self._now_ms() / 1000) > TIMESTAMP_WINDOW_S:
            raise _refuse("Signature not valid: Timestamp expired")
        key = self._keys.get(api_key)
        if key is None:
            raise _refuse("Signature not valid: Incorrect Access key")
        expected = sign(key.secret, presign(method, host, path, params))
        if not hmac.compare_digest(expected, signature):
            raise _refuse("Signature not valid: Verification failure")
        if key.ips and not ip_allowed(client_ip, key.ips):
            raise _refuse(f"Signature not valid: Incorrect IP address ({client_ip})")
        return key

    def _admit(self, api_key: str) -> None:
        second = self._now_ms() // 1000
        start, count = self._windows.get(api_key, (second, 0))
        count = count + 1 if start == second else 1
        self._windows[api_key] = (second, count)
        if count > self._limit:
            self._count_429 += 1
            raise Answer(
                json_response(
                    429, {"status": "error", "err-code": "base-request-exceed-frequency-limit"}
                )
            )

    @staticmethod
    def _accounts(key: _Key) -> list[dict[str, object]]:
        """The documented example's accounts (spot, otc, point) with the key's states."""
        base = key.account_id
        accounts: list[dict[str, object]] = [
            {"id": base, "type": "spot", "subtype": "", "state": key.account_state},
            {"id": base + 1, "type": "otc", "subtype": "", "state": "working"},
            {"id": base + 2, "type": "point", "subtype": "", "state": "working"},
        ]
        if key.margin_state is not None:
            accounts.append(
                {"id": base + 3, "type": "margin", "subtype": "btcusdt", "state": key.margin_state}
            )
        return accounts

    # ---------------------------------------------------------------- admin API

    def handle_admin(
        self,
        method: str,
        path: str,
        raw_query: str,
        body: bytes,
        headers: Mapping[str, str],
        client_ip: str,
    ) -> SimResponse:
        """``GET /_simulator/keys``, ``GET/PATCH /_simulator/keys/{api_key}``,
        ``GET/POST /_simulator/faults``, ``GET /_simulator/stats``. Secrets are never returned.
        """
        method = method.upper()
        parts = [unquote(p) for p in path[len(ADMIN_PREFIX) :].split("/")]
        try:
            data = json_object(body)
            with self._lock:
                if parts == ["keys"] and method == "GET":
                    return json_response(200, [self._view(k, v) for k, v in self._keys.items()])
                if len(parts) == 2 and parts[0] == "keys" and method in ("GET", "PATCH"):
                    found = self._keys.get(parts[1])
                    if found is None:
                        return json_response(404, {"error": "unknown api_key"})
                    if method == "PATCH":
                        unknown = set(data) - set(_PATCHABLE)
                        if unknown:
                            return json_response(
                                400, {"error": f"unknown fields: {', '.join(sorted(unknown))}"}
                            )
                        self._update_locked(found, **{k: data.get(k) for k in _PATCHABLE})
                    return json_response(200, self._view(parts[1], found))
                if parts == ["faults"] and method in ("GET", "POST"):
                    if method == "POST":
                        self._set_faults(data)
                    return json_response(200, self._faults())
                if parts == ["stats"] and method == "GET":
                    return json_response(
                        200,
                        {
                            "count_429": self._count_429,
                            "requests": dict(self._per_key),
                            "paths": dict(self._per_path),
                        },
                    )
        except (ValueError, TypeError) as exc:
            return json_response(400, {"error": str(exc)})
        return json_response(404, {"error": "not found"})

    @staticmethod
    def _view(api_key: str, key: _Key) -> dict[str, object]:
        return {
            "api_key": api_key,
            "uid": key.uid,
            "permission": list(key.permission),
            "ips": list(key.ips),
            "valid_days": key.valid_days,
            "account_state": key.account_state,
            "margin_state": key.margin_state,
        }

    @staticmethod
    def _entry(api_key: str, key: _Key) -> dict[str, object]:
        return {
            "accessKey": api_key,
            "note": "keymon",
            "permission": ",".join(key.permission),
            "ipAddresses": ",".join(key.ips),
            "validDays": key.valid_days,
            "status": "normal",
            "createTime": key.create_time,
            "updateTime": key.create_time,
        }


#: The key fields the admin API's PATCH changes (:meth:`HtxSimulator.update_key`'s).
_PATCHABLE: Final = ("permission", "ips", "valid_days", "account_state", "margin_state")


def _refuse(message: str) -> Answer:
    return Answer(
        json_response(200, {"status": "error", "err-code": SIGNATURE_ERROR, "err-msg": message})
    )


#: The account id an HTX demo key configuration names (HTX reads keys per account).
DEMO_UID = "40000001"


def _register_demo_key(simulator: Any, key: DemoKey) -> None:
    simulator.add_key(key.api_key, key.secret, DEMO_UID, **key.state)


#: ``keymon demo``'s keys here, each in a state an operator should recognise.
DEMO = DemoVenue(
    _register_demo_key,
    lambda now: [DemoKey("juliet-htx", "juliet", "htx", "not bound to any IP")],
    fields={"uid": DEMO_UID},
)
