"""A faithful fake of Coinbase's Advanced Trade REST API, limited to what a key monitor needs.

`CoinbaseSimulator` implements Coinbase's *documented* behaviour (exchange-apis.md §2.10, from
coinbase-advanced-py's ``jwt_generator.py`` and the CDP docs "API Key Authentication", "Get API
Key Permissions", "Get Server Time" and "REST API Rate Limits"), written from the docs and not
from keymon's adapter. It verifies JWTs with `cryptography` directly, not with the JWT library
keymon signs with, so that a token the library would build wrongly is still caught:

- ``GET /api/v3/brokerage/time`` (public): ``{"iso", "epochSeconds", "epochMillis"}``, the
  latter two as decimal strings;
- ``GET /api/v3/brokerage/key_permissions``: ``{"can_view", "can_trade", "can_transfer",
  "portfolio_uuid", "portfolio_type"}`` for the key that signs the call;
- JWT checks, each answered with the same bare ``401 Unauthorized`` (Coinbase does not say
  why): ``Authorization: Bearer`` present; three base64url parts; header ``kid`` naming a known
  key and ``alg`` matching it (``ES256`` for EC P-256, ``EdDSA`` for Ed25519); a valid signature
  under the key's *public* key; a ``nonce``; claims ``sub`` = ``kid``, ``iss`` = ``"cdp"``,
  ``uri`` = ``"<METHOD> <Host header><path>"`` exactly; ``nbf`` <= server time < ``exp``
  (Coinbase documents no leeway, so none is allowed); then the key's IP allowlist against the
  client IP (also a bare 401: exchange-apis.md §2.10(c));
- the documented rate limits: 30 requests/s per user on private endpoints, 10 requests/s per IP
  on public ones, answered with HTTP 429;
- fault injection (latency, failed responses, truncated bodies, server clock skew) through
  `FaultKnobs`.

Why the simulator refused the last request is kept in `last_rejection` for tests: it is never
sent. Like the other simulators it is a synchronous state machine behind one lock, with an
injectable clock; injected latency is returned as `SimResponse.delay`.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import re
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Literal, TypeGuard

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from keymon.simulator.common import (
    Answer,
    SimulatorBase,
    header,
    ip_allowed,
    json_response,
)
from keymon.simulator.demo_keys import DemoKey, DemoVenue
from keymon.simulator.server import SimResponse

__all__ = ["CoinbaseSimulator", "new_key_pair"]

TIME_PATH: Final = "/api/v3/brokerage/time"
PERMISSIONS_PATH: Final = "/api/v3/brokerage/key_permissions"
ISSUER: Final = "cdp"
#: "REST API Rate Limits": private endpoints per user, public endpoints per IP, per second.
PRIVATE_LIMIT_PER_S: Final = 30
PUBLIC_LIMIT_PER_S: Final = 10
_B64URL: Final = re.compile(r"[A-Za-z0-9_-]+")
_UNAUTHORIZED: Final = SimResponse(401, {"Content-Type": "text/plain"}, b"Unauthorized\n")

Algorithm = Literal["ES256", "EdDSA"]
PublicKey = ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey


def new_key_pair(algorithm: Algorithm = "ES256") -> tuple[str, str]:
    """A fresh (private PEM, public PEM) pair as the CDP portal would make: EC P-256 (SEC1
    ``EC PRIVATE KEY``) for ES256, Ed25519 (PKCS#8) for EdDSA."""
    private: ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
    if algorithm == "ES256":
        private = ec.generate_private_key(ec.SECP256R1())
        private_format = serialization.PrivateFormat.TraditionalOpenSSL
    else:
        private = ed25519.Ed25519PrivateKey.generate()
        private_format = serialization.PrivateFormat.PKCS8
    private_pem = private.private_bytes(
        serialization.Encoding.PEM, private_format, serialization.NoEncryption()
    ).decode()
    public_pem = (
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private_pem, public_pem


@dataclass
class _Key:
    public_key: PublicKey
    algorithm: Algorithm
    can_view: bool
    can_trade: bool
    can_transfer: bool
    allowed_ips: list[str]
    user: str
    portfolio_type: str
    portfolio_uuid: str = field(default_factory=lambda: str(uuid.uuid4()))


@dataclass
class _Window:
    second: int = 0
    count: int = 0


class _Refused(Exception):
    """A request Coinbase answers with a bare 401; ``why`` is for tests only."""

    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


class CoinbaseSimulator(SimulatorBase):
    """A thread-safe, in-memory Coinbase Advanced Trade fake with an injectable clock (s)."""

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.time,
        private_limit_per_s: int = PRIVATE_LIMIT_PER_S,
        public_limit_per_s: int = PUBLIC_LIMIT_PER_S,
    ) -> None:
        if private_limit_per_s < 1 or public_limit_per_s < 1:
            raise ValueError("limits must be at least 1")
        super().__init__(clock=clock)
        self._private_limit = private_limit_per_s
        self._public_limit = public_limit_per_s
        self._keys: dict[str, _Key] = {}
        self._user_windows: dict[str, _Window] = {}
        self._ip_windows: dict[str, _Window] = {}
        self._per_key: Counter[str] = Counter()
        self._statuses: Counter[int] = Counter()
        self._last_rejection: str | None = None

    # ---------------------------------------------------------------- keys

    def add_key(
        self,
        api_key: str,
        secret: str,
        *,
        can_view: bool = True,
        can_trade: bool = True,
        can_transfer: bool = False,
        ips: list[str] | None = None,
        user: str = "user-1",
        portfolio_type: str = "DEFAULT",
    ) -> None:
        """Register a key by its name (``api_key``) and its key PEM (``secret``): the public
        key, or the private key the CDP portal hands out, of which only the public half is kept
        (Coinbase never holds the private key). Defaults: the guide's key (View + Trade, no
        Transfer), allowed from 127.0.0.1 only; ``ips=[]`` allows any IP."""
        public, algorithm = _public_key(secret)
        allowed = list(["127.0.0.1"] if ips is None else ips)
        _check_ips(allowed)
        with self._lock:
            if api_key in self._keys:
                raise ValueError(f"key {api_key} already exists")
            self._keys[api_key] = _Key(
                public, algorithm, can_view, can_trade, can_transfer, allowed, user, portfolio_type
            )

    def update_key(
        self,
        name: str,
        *,
        can_view: bool | None = None,
        can_trade: bool | None = None,
        can_transfer: bool | None = None,
        ips: list[str] | None = None,
    ) -> None:
        """Change a key's permissions or IP allowlist (``[]`` allows any IP)."""
        if ips is not None:
            _check_ips(ips)
        with self._lock:
            key = self._keys[name]
            if can_view is not None:
                key.can_view = can_view
            if can_trade is not None:
                key.can_trade = can_trade
            if can_transfer is not None:
                key.can_transfer = can_transfer
            if ips is not None:
                key.allowed_ips = list(ips)

    def delete_key(self, name: str) -> None:
        """Forget a key: its JWTs draw 401 from now on."""
        with self._lock:
            del self._keys[name]

    def set_limit(self, per_s: int) -> None:
        """Private requests per second each user may make (30, as documented)."""
        if per_s < 1:
            raise ValueError("the limit must be at least 1")
        with self._lock:
            self._private_limit = per_s

    # ---------------------------------------------------------------- observations

    @property
    def last_rejection(self) -> str | None:
        """Why the last 401 was answered (never sent to the client)."""
        with self._lock:
            return self._last_rejection

    def request_count(self, name: str) -> int:
        """How many signed requests named key ``name`` in their JWT's ``kid``."""
        with self._lock:
            return self._per_key[name]

    def status_count(self, status: int) -> int:
        """How many exchange answers had HTTP ``status``."""
        with self._lock:
            return self._statuses[status]

    # ---------------------------------------------------------------- serving

    def _note_response(self, response: SimResponse) -> None:
        self._statuses[response.status] += 1

    def _dispatch(
        self,
        method: str,
        path: str,
        raw_query: str,
        body: bytes,
        headers: Mapping[str, str],
        client_ip: str,
    ) -> SimResponse:
        now_ms = self._now_ms()
        if path == TIME_PATH:
            if method != "GET":
                return SimResponse(405, {"Allow": "GET"}, b"")
            self._admit(self._ip_windows, client_ip, self._public_limit, now_ms)
            iso = datetime.fromtimestamp(now_ms / 1000, UTC).isoformat(timespec="milliseconds")
            return json_response(
                200,
                {
                    "iso": iso.replace("+00:00", "Z"),
                    "epochSeconds": str(now_ms // 1000),
                    "epochMillis": str(now_ms),
                },
            )
        if path != PERMISSIONS_PATH:
            return json_response(404, {"error": "NOT_FOUND", "message": "Not Found"})
        if method != "GET":
            return SimResponse(405, {"Allow": "GET"}, b"")
        try:
            key = self._authenticate(method, path, headers, client_ip, now_ms / 1000)
        except _Refused as refused:
            self._last_rejection = refused.why
            return _UNAUTHORIZED
        self._admit(self._user_windows, key.user, self._private_limit, now_ms)
        return json_response(
            200,
            {
                "can_view": key.can_view,
                "can_trade": key.can_trade,
                "can_transfer": key.can_transfer,
                "portfolio_uuid": key.portfolio_uuid,
                "portfolio_type": key.portfolio_type,
            },
        )

    def _authenticate(
        self, method: str, path: str, headers: Mapping[str, str], client_ip: str, now: float
    ) -> _Key:
        authorization = header(headers, "Authorization") or ""
        scheme, _, token = authorization.partition(" ")
        if scheme != "Bearer" or not token:
            raise _Refused("no bearer token")
        parts = token.split(".")
        if len(parts) != 3:
            raise _Refused("not a JWS compact token")
        try:
            jwt_header = json.loads(_b64url(parts[0]))
            claims = json.loads(_b64url(parts[1]))
            signature = _b64url(parts[2])
        except (ValueError, binascii.Error):
            raise _Refused("undecodable token") from None
        if not isinstance(jwt_header, dict) or not isinstance(claims, dict):
            raise _Refused("header or claims not an object")
        kid = jwt_header.get("kid")
        key = self._keys.get(kid) if isinstance(kid, str) else None
        if key is None:
            raise _Refused("unknown key")
        assert isinstance(kid, str)
        self._per_key[kid] += 1
        if jwt_header.get("alg") != key.algorithm:
            raise _Refused(f"alg is not {key.algorithm}")
        if not _verify(key, f"{parts[0]}.{parts[1]}".encode("ascii"), signature):
            raise _Refused("bad signature")
        if not isinstance(jwt_header.get("nonce"), str) or not jwt_header["nonce"]:
            raise _Refused("no nonce")
        if claims.get("sub") != kid:
            raise _Refused("sub is not the key name")
        if claims.get("iss") != ISSUER:
            raise _Refused("iss is not cdp")
        expected_uri = f"{method} {header(headers, 'Host') or ''}{path}"
        if claims.get("uri") != expected_uri:
            raise _Refused("uri does not match the request")
        nbf, exp = claims.get("nbf"), claims.get("exp")
        if not _numeric_date(nbf) or not _numeric_date(exp):
            raise _Refused("nbf or exp missing")
        if now < nbf:
            raise _Refused("not yet valid")
        if now >= exp:
            raise _Refused("expired")
        if key.allowed_ips and not ip_allowed(client_ip, key.allowed_ips):
            raise _Refused("IP not allowed")
        return key

    def _admit(self, windows: dict[str, _Window], who: str, limit: int, now_ms: int) -> None:
        window = windows.setdefault(who, _Window())
        second = now_ms // 1000
        if window.second != second:
            window.second, window.count = second, 0
        window.count += 1
        if window.count > limit:
            raise Answer(
                json_response(429, {"error": "RATE_LIMIT_EXCEEDED", "message": "Too many requests"})
            )


def _public_key(pem: str) -> tuple[PublicKey, Algorithm]:
    """The public key in a public or private key PEM, and the JWT algorithm it verifies."""
    data = pem.encode()
    loaded: object
    if b"PRIVATE KEY" in data:
        loaded = serialization.load_pem_private_key(data, password=None).public_key()
    else:
        loaded = serialization.load_pem_public_key(data)
    if isinstance(loaded, ec.EllipticCurvePublicKey) and isinstance(loaded.curve, ec.SECP256R1):
        return loaded, "ES256"
    if isinstance(loaded, ed25519.Ed25519PublicKey):
        return loaded, "EdDSA"
    raise TypeError("a CDP key is EC P-256 or Ed25519")


def _verify(key: _Key, signing_input: bytes, signature: bytes) -> bool:
    try:
        if isinstance(key.public_key, ec.EllipticCurvePublicKey):
            if len(signature) != 64:  # JWS ES256: r || s, 32 bytes each (RFC 7518 §3.4)
                return False
            der = encode_dss_signature(
                int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
            )
            key.public_key.verify(der, signing_input, ec.ECDSA(hashes.SHA256()))
        else:
            key.public_key.verify(signature, signing_input)
    except InvalidSignature:
        return False
    return True


def _b64url(part: str) -> bytes:
    """Strict unpadded base64url (RFC 7515 §2)."""
    if not _B64URL.fullmatch(part):
        raise ValueError("not unpadded base64url")
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def _numeric_date(value: object) -> TypeGuard[int | float]:
    """An RFC 7519 NumericDate: a JSON number of seconds (not a boolean)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_ips(ips: list[str]) -> None:
    for entry in ips:
        ipaddress.ip_network(entry, strict=False)  # ValueError on garbage


def _cdp_key_name(key: DemoKey) -> str:
    """A CDP key name, ``organizations/<org_id>/apiKeys/<key_id>``, derived from the key."""
    digest = key.api_key
    org, key_id = digest[:32], digest[32:]
    return f"organizations/{_uuid(org)}/apiKeys/{_uuid(key_id)}"


def _uuid(hex32: str) -> str:
    return f"{hex32[:8]}-{hex32[8:12]}-{hex32[12:16]}-{hex32[16:20]}-{hex32[20:32]}"


def _ec_private_pem(key: DemoKey) -> str:
    """The key's EC P-256 private key (SEC1 PEM, as the CDP portal gives it), derived from its
    demo secret so that the simulator and the configuration agree."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    order = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
    private = ec.derive_private_key(int(key.secret, 16) % (order - 1) + 1, ec.SECP256R1())
    return private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ).decode()


def _register_demo_key(simulator: Any, key: DemoKey) -> None:
    # The simulator keeps only the public half, as Coinbase does.
    simulator.add_key(_cdp_key_name(key), _ec_private_pem(key), **key.state)


#: ``keymon demo``'s keys here, each in a state an operator should recognise.
DEMO = DemoVenue(
    _register_demo_key,
    lambda now: [
        DemoKey(
            "november-coinbase",
            "november",
            "coinbase",
            "transfers switched on (can_transfer); IP allowlist and expiry not shown",
            {"can_transfer": True},
        ),
    ],
    secret_of=_ec_private_pem,
    key_of=_cdp_key_name,
)
