"""A fake XT.com API, written from XT's own pages (xt-com/xt-api: "Signature Instructions",
"Signature generation", the spot and user-center "response code" tables and "Query user's
apiKey"), not from keymon's adapter.

Serves ``GET /v4/public/time`` (spot: ``result.serverTime``, ms) and the signed user-center
call ``GET /v4/user/account/api-key``, which answers as XT's example does: the envelope
``{"rc": 0, "mc": "SUCCESS", "ma": [{}], "result": [...]}`` listing every key of the caller's
account, each with ``id``, ``userAccountId``, ``userAccountLevel`` (1 master, 2 sub),
``userId``, ``keyName``, ``bindIps`` (comma string, ``""`` when unbound), ``accessKey``,
``secretKey`` (XT's example answer does carry it, so this fake does too: whoever reads the
answer must drop it), ``isLock`` (0/1), ``roleScopes`` (comma string of QUERY, TRADE,
WITHDRAW, LEVER_LOAN, FUTURE, TRANSFER), ``tags``, ``createTime`` and ``updateTime``
(``"YYYY-MM-DD hh:mm:ss"``).

A signed request carries ``validate-appkey``, ``validate-timestamp`` (ms),
``validate-recvwindow`` (ms, at most 60000), ``validate-algorithms`` (HmacMD5, HmacSHA1,
HmacSHA224, HmacSHA256, HmacSHA384 or HmacSHA512) and ``validate-signature``: lowercase hex
HMAC of ``X + Y``, where ``X`` is those four headers sorted by name as ``name=value`` joined
with ``&``, and ``Y`` is ``#METHOD#path``, then ``#query`` (pairs sorted by key) if there is a
query and ``#body`` (raw) if there is a body. A timestamp older than the recvwindow or more
than 1 s ahead of the server is outdated.

Refusals are XT's documented codes with rc 1: ``AUTH_001``..``AUTH_007`` for a missing or bad
header, ``AUTH_101`` unknown key, ``AUTH_102`` key not activated (this fake's answer for a
frozen, expired or disabled key: XT documents nothing finer), ``AUTH_103`` signature,
``AUTH_104`` unbound IP, ``AUTH_105`` outdated. XT's pages give no HTTP status for these; this
fake answers them with HTTP 200 ("The request is successful, please check the rc and mc"), and
a rate limit with HTTP 429 and ``mc`` ``"429"``. A locked key (``isLock`` 1) is still answered:
XT does not say what a lock refuses.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field
from typing import Any, ClassVar, Final

from keymon.simulator.demo_keys import DemoKey, DemoVenue, register_liveness
from keymon.simulator.liveness import (
    Answer,
    LivenessSimulator,
    Refusal,
    Request,
    SimKey,
    json_response,
)
from keymon.simulator.server import SimResponse

__all__ = ["ALGORITHMS", "XtSimulator", "signature_payload"]

TIME_PATH: Final = "/v4/public/time"
API_KEY_PATH: Final = "/v4/user/account/api-key"
#: XT's example account and user ids.
DEFAULT_ACCOUNT: Final = "1352123154435"
DEFAULT_CREATED: Final = "2023-02-17 05:41:43"
#: The client guide's key: read and spot trading.
GUIDE_SCOPES: Final = ("QUERY", "TRADE")
MAX_RECV_WINDOW_MS: Final = 60_000
#: How far ahead of the server a timestamp may be.
AHEAD_MS: Final = 1000
ALGORITHMS: Final = {
    "HmacMD5": hashlib.md5,
    "HmacSHA1": hashlib.sha1,
    "HmacSHA224": hashlib.sha224,
    "HmacSHA256": hashlib.sha256,
    "HmacSHA384": hashlib.sha384,
    "HmacSHA512": hashlib.sha512,
}

_REFUSALS: Final[dict[Refusal, tuple[int, str]]] = {
    Refusal.MISSING_AUTH: (200, "AUTH_001"),
    Refusal.UNKNOWN_KEY: (200, "AUTH_101"),
    Refusal.FROZEN: (200, "AUTH_102"),
    Refusal.EXPIRED: (200, "AUTH_102"),
    Refusal.DISABLED: (200, "AUTH_102"),
    Refusal.BAD_SIGNATURE: (200, "AUTH_103"),
    Refusal.IP_REFUSED: (200, "AUTH_104"),
    Refusal.TIMESTAMP: (200, "AUTH_105"),
    Refusal.RATE_LIMITED: (429, "429"),
}


def signature_payload(
    headers: dict[str, str], method: str, path: str, query: str, body: str
) -> str:
    """``X + Y``: the ``validate-*`` headers (sorted, ``&``-joined) and ``#METHOD#path...``."""
    x = "&".join(f"{name}={headers[name]}" for name in sorted(headers))
    y = f"#{method}#{path}"
    if query:
        pairs = sorted(
            part.split("=", 1) if "=" in part else [part, ""] for part in query.split("&")
        )
        y += "#" + "&".join(f"{k}={v}" for k, v in pairs)
    if body:
        y += "#" + body
    return x + y


def _error(status: int, code: str) -> SimResponse:
    return json_response(status, {"rc": 1, "mc": code, "ma": [], "result": None})


@dataclass
class _Settings:
    """What XT shows of a key besides its secret, IP binding and state."""

    id: int
    role_scopes: list[str] = field(default_factory=lambda: list(GUIDE_SCOPES))
    is_lock: int = 0
    key_name: str = "keymon"
    account_id: str = DEFAULT_ACCOUNT
    account_level: int = 1
    created: str = DEFAULT_CREATED


class XtSimulator(LivenessSimulator):
    """A thread-safe, in-memory XT fake with an injectable clock (seconds)."""

    probe: ClassVar[tuple[str, str]] = ("GET", API_KEY_PATH)
    time_path: ClassVar[str | None] = TIME_PATH
    rate_limit: ClassVar[tuple[int, float]] = (50, 1.0)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._settings: dict[str, _Settings] = {}

    def add_key(
        self,
        api_key: str,
        secret: str,
        *,
        ips: list[str] | None = None,
        role_scopes: list[str] | None = None,
        is_lock: bool = False,
        account_level: int = 1,
        account_id: str = DEFAULT_ACCOUNT,
    ) -> None:
        """Create an active key (the guide's QUERY + TRADE unless ``role_scopes`` says)."""
        super().add_key(api_key, secret, ips=ips)
        with self._lock:
            self._settings[api_key] = _Settings(
                id=len(self._settings) + 1,
                role_scopes=list(role_scopes if role_scopes is not None else GUIDE_SCOPES),
                is_lock=int(is_lock),
                account_level=account_level,
                account_id=account_id,
            )

    def update_key(
        self,
        api_key: str,
        *,
        ips: list[str] | None = None,
        state: str | None = None,
        role_scopes: list[str] | None = None,
        is_lock: bool | None = None,
    ) -> None:
        """Change a key's IP binding, state, permission codes or lock."""
        super().update_key(api_key, ips=ips, state=state)
        with self._lock:
            settings = self._settings[api_key]
            if role_scopes is not None:
                settings.role_scopes = list(role_scopes)
            if is_lock is not None:
                settings.is_lock = int(is_lock)

    def delete_key(self, api_key: str) -> None:
        super().delete_key(api_key)
        with self._lock:
            self._settings.pop(api_key, None)

    def time_body(self, now_ms: int) -> SimResponse:
        return json_response(
            200, {"rc": 0, "mc": "SUCCESS", "ma": [], "result": {"serverTime": now_ms}}
        )

    def authenticate(self, request: Request, now_ms: int) -> str:
        fields = {
            "validate-algorithms": request.header("validate-algorithms"),
            "validate-appkey": request.header("validate-appkey"),
            "validate-recvwindow": request.header("validate-recvwindow"),
            "validate-timestamp": request.header("validate-timestamp"),
        }
        signature = request.header("validate-signature")
        for name, code in (
            ("validate-appkey", "AUTH_001"),
            ("validate-timestamp", "AUTH_002"),
            ("validate-recvwindow", "AUTH_003"),
            ("validate-algorithms", "AUTH_005"),
        ):
            if not fields[name]:
                raise Answer(_error(200, code))
        if not signature:
            raise Answer(_error(200, "AUTH_007"))
        headers = {name: value for name, value in fields.items() if value is not None}
        window = headers["validate-recvwindow"]
        if not window.isdigit() or not 0 < int(window) <= MAX_RECV_WINDOW_MS:
            raise Answer(_error(200, "AUTH_004"))
        digest = ALGORITHMS.get(headers["validate-algorithms"])
        if digest is None:
            raise Answer(_error(200, "AUTH_006"))
        api_key = headers["validate-appkey"]
        key = self.key_for(api_key, request)
        timestamp = headers["validate-timestamp"]
        if not timestamp.isdigit():
            raise self.refuse(Refusal.TIMESTAMP, request)
        if now_ms - int(timestamp) >= int(window) or int(timestamp) > now_ms + AHEAD_MS:
            raise self.refuse(Refusal.TIMESTAMP, request)
        payload = signature_payload(
            headers,
            request.method,
            request.path,
            request.raw_query,
            request.body.decode("utf-8", "replace"),
        )
        expected = hmac.new(key.secret.encode(), payload.encode(), digest).hexdigest()
        if not hmac.compare_digest(expected, signature.lower()):
            raise self.refuse(Refusal.BAD_SIGNATURE, request)
        return api_key

    def refusal(self, why: Refusal, request: Request | None) -> SimResponse:
        status, code = _REFUSALS[why]
        return _error(status, code)

    def success(self, request: Request, api_key: str) -> SimResponse:
        """Every key of the caller's account, as XT's example lists them (called under the
        simulator's lock)."""
        account = self._settings[api_key].account_id
        entries = [
            _entry(name, self._keys[name], settings)
            for name, settings in self._settings.items()
            if settings.account_id == account and name in self._keys
        ]
        return json_response(200, {"rc": 0, "mc": "SUCCESS", "ma": [{}], "result": entries})

    def not_found(self, request: Request) -> SimResponse:
        return json_response(404, {"rc": 1, "mc": "404", "ma": [], "result": None})


def _entry(api_key: str, key: SimKey, settings: _Settings) -> dict[str, Any]:
    return {
        "id": settings.id,
        "userAccountId": settings.account_id,
        "userAccountLevel": settings.account_level,
        "userId": int(DEFAULT_ACCOUNT),
        "keyName": settings.key_name,
        "bindIps": ",".join(key.ips),
        "accessKey": api_key,
        "secretKey": key.secret,
        "isLock": settings.is_lock,
        "roleScopes": ",".join(settings.role_scopes),
        "tags": None,
        "createTime": settings.created,
        "updateTime": settings.created,
    }


#: ``keymon demo``'s keys here, each in a state an operator should recognise.
DEMO = DemoVenue(
    register_liveness,
    lambda now: [
        DemoKey(
            "romeo-xt",
            "romeo",
            "xt",
            "withdrawals switched on (WITHDRAW among its roleScopes)",
            {"role_scopes": ["QUERY", "TRADE", "WITHDRAW"]},
        ),
    ],
)
