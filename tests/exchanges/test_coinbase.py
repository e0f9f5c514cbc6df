"""The Coinbase adapter: the JWT it signs (verified by the simulator with the public key only),
the field mapping, the configuration of CDP keys, and error classification.

ECDSA signatures are randomised, so there is no fixed vector: every test signs with the
adapter and has the simulator verify with the key's public half.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from keymon.audit import Auditor
from keymon.config import Settings, load
from keymon.errors import ConfigError
from keymon.exchanges.coinbase import (
    PERMISSIONS_PATH,
    TIME_PATH,
    CoinbaseAdapter,
    CoinbaseAuth,
    CoinbaseKey,
    jwt_uri,
)
from keymon.model import AuditResult, Reason, Rule, Severity
from keymon.simulator.coinbase import CoinbaseSimulator, new_key_pair
from tests.conftest import FakeClock

NAME = (
    "organizations/6f1c2d3e-0000-4000-8000-000000000001/"
    "apiKeys/0b5e7a11-0000-4000-8000-0000000000aa"
)
OTHER = (
    "organizations/6f1c2d3e-0000-4000-8000-000000000001/"
    "apiKeys/0b5e7a11-0000-4000-8000-0000000000bb"
)
PROD_URL = "https://api.coinbase.com" + PERMISSIONS_PATH
START = 1_795_000_000


def key_config(secret: str, api_key: str = NAME, name: str = "cb") -> dict[str, Any]:
    return {
        "name": name,
        "client": "acme",
        "exchange": "coinbase",
        "api_key": api_key,
        "api_secret": secret,
    }


def coinbase_key(secret: str, api_key: str = NAME) -> CoinbaseKey:
    settings = Settings(keys=[key_config(secret, api_key)], trusted_ips=["127.0.0.1/32"])
    key = settings.keys[0]
    assert isinstance(key, CoinbaseKey)
    return key


def sign(key: CoinbaseKey, url: str = PROD_URL, now: int = START) -> httpx.Request:
    """A request signed by the adapter's auth, as httpx would send it."""
    request = httpx.Request("GET", url)
    return next(CoinbaseAuth(key, lambda: now).auth_flow(request))


def token_of(request: httpx.Request) -> str:
    scheme, _, token = request.headers["Authorization"].partition(" ")
    assert scheme == "Bearer"
    return token


def decoded(part: str) -> dict[str, Any]:
    data = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    assert isinstance(data, dict)
    return data


def served_by(sim: CoinbaseSimulator, request: httpx.Request, client_ip: str = "127.0.0.1") -> int:
    """The status the simulator answers ``request`` with."""
    path, _, query = request.url.raw_path.decode().partition("?")
    response = sim.handle(request.method, path, query, request.content, request.headers, client_ip)
    return response.status


def simulator(clock: Callable[[], float] = lambda: float(START)) -> CoinbaseSimulator:
    return CoinbaseSimulator(clock=clock)


# ----------------------------------------------------------------------------- the JWT


@pytest.mark.parametrize("algorithm", ["ES256", "EdDSA"])
def test_jwt_has_the_documented_header_and_claims(algorithm: str) -> None:
    """alg/kid/nonce; sub/iss/nbf/exp/uri, as exchange-apis.md §2.10 lists them."""
    private, public = new_key_pair(algorithm)  # type: ignore[arg-type]
    request = sign(coinbase_key(private))
    header_b64, claims_b64, _ = token_of(request).split(".")
    header, claims = decoded(header_b64), decoded(claims_b64)
    assert header["alg"] == algorithm
    assert header["kid"] == NAME
    assert len(header["nonce"]) >= 32
    int(header["nonce"], 16)  # random hex
    assert claims == {
        "sub": NAME,
        "iss": "cdp",
        "nbf": START,
        "exp": START + 120,
        "uri": "GET api.coinbase.com/api/v3/brokerage/key_permissions",
    }
    # And a standard JWT library agrees, with the public key alone.
    verified = jwt.decode(
        token_of(request),
        serialization.load_pem_public_key(public.encode()),  # type: ignore[arg-type]
        algorithms=[algorithm],
        options={"verify_nbf": False, "verify_exp": False},
    )
    assert verified["sub"] == NAME


@pytest.mark.parametrize("algorithm", ["ES256", "EdDSA"])
def test_simulator_verifies_the_adapters_jwt_with_the_public_key(algorithm: str) -> None:
    """Sign with the adapter, verify with the public key in the simulator: 200."""
    private, public = new_key_pair(algorithm)  # type: ignore[arg-type]
    sim = simulator()
    sim.add_key(NAME, public)
    request = sign(coinbase_key(private), url="http://api.coinbase.com" + PERMISSIONS_PATH)
    assert served_by(sim, request) == 200, sim.last_rejection


def test_two_jwts_differ_but_both_verify() -> None:
    """Random nonce, randomised ECDSA: no two tokens alike, every one valid."""
    private, public = new_key_pair("ES256")
    sim = simulator()
    sim.add_key(NAME, public)
    key = coinbase_key(private)
    first, second = (sign(key, "http://api.coinbase.com" + PERMISSIONS_PATH) for _ in range(2))
    assert token_of(first) != token_of(second)
    assert served_by(sim, first) == served_by(sim, second) == 200


def test_uri_is_method_host_and_path_without_scheme_or_query() -> None:
    assert jwt_uri("get", httpx.URL("https://api.coinbase.com/api/v3/brokerage/x?a=1")) == (
        "GET api.coinbase.com/api/v3/brokerage/x"
    )
    assert jwt_uri("GET", httpx.URL("http://127.0.0.1:8901/p")) == "GET 127.0.0.1:8901/p"


def _tamper(token: str, part: int) -> str:
    """``token`` with the last byte of one part flipped."""
    pieces = token.split(".")
    raw = bytearray(base64.urlsafe_b64decode(pieces[part] + "=" * (-len(pieces[part]) % 4)))
    raw[-1] ^= 0x01
    pieces[part] = base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()
    return ".".join(pieces)


def _reauthorize(request: httpx.Request, token: str) -> httpx.Request:
    request.headers["Authorization"] = f"Bearer {token}"
    return request


@pytest.mark.parametrize(
    ("case", "why"),
    [
        ("tampered signature", "bad signature"),
        ("tampered claims", "bad signature"),
        ("wrong private key", "bad signature"),
        ("another key's name", "bad signature"),
        ("unknown key", "unknown key"),
        ("wrong uri", "uri does not match the request"),
        ("expired", "expired"),
        ("not yet valid", "not yet valid"),
        ("wrong issuer", "iss is not cdp"),
        ("sub is not kid", "sub is not the key name"),
        ("EdDSA token for an EC key", "alg is not ES256"),
        ("no bearer", "no bearer token"),
        ("refused IP", "IP not allowed"),
    ],
)
def test_simulator_refuses_bad_jwts_with_a_bare_401(case: str, why: str) -> None:
    """Every refusal is the same bare 401; the simulator notes why, for the test only."""
    private, public = new_key_pair("ES256")
    other_private, other_public = new_key_pair("ES256")
    sim = simulator()
    sim.add_key(NAME, public, ips=["203.0.113.10"] if case == "refused IP" else [])
    sim.add_key(OTHER, other_public, ips=[])
    url = "http://api.coinbase.com" + PERMISSIONS_PATH
    key = coinbase_key(private)
    request = sign(key, url)
    token = token_of(request)
    if case == "tampered signature":
        _reauthorize(request, _tamper(token, 2))
    elif case == "tampered claims":  # a longer life, under the original signature
        header_b64, claims_b64, signature_b64 = token.split(".")
        claims = decoded(claims_b64)
        claims["exp"] += 3600
        forged_claims = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=")
        _reauthorize(request, f"{header_b64}.{forged_claims.decode()}.{signature_b64}")
    elif case == "wrong private key":
        request = sign(coinbase_key(other_private), url)
    elif case == "another key's name":
        request = sign(coinbase_key(private, api_key=OTHER), url)
    elif case == "unknown key":
        sim.delete_key(NAME)
    elif case == "wrong uri":
        request = sign(key, "http://api.coinbase.com/api/v3/brokerage/accounts")
        request = httpx.Request("GET", url, headers=request.headers)
    elif case == "expired":
        request = sign(key, url, now=START - 120)
    elif case == "not yet valid":
        request = sign(key, url, now=START + 1)
    elif case in ("wrong issuer", "sub is not kid", "EdDSA token for an EC key"):
        claims = decoded(token.split(".")[1])
        signer: Any = serialization.load_pem_private_key(private.encode(), None)
        algorithm = "ES256"
        if case == "wrong issuer":
            claims["iss"] = "coinbase-cloud"
        elif case == "sub is not kid":
            claims["sub"] = OTHER
        else:
            signer, algorithm = ed25519.Ed25519PrivateKey.generate(), "EdDSA"
        forged = jwt.encode(
            claims, signer, algorithm=algorithm, headers={"kid": NAME, "nonce": "ab" * 16}
        )
        _reauthorize(request, forged)
    elif case == "no bearer":
        del request.headers["Authorization"]
    assert served_by(sim, request) == 401
    assert sim.last_rejection == why


def test_simulator_answers_the_documented_body() -> None:
    private, public = new_key_pair("EdDSA")
    sim = simulator()
    sim.add_key(NAME, public, can_transfer=True, portfolio_type="CONSUMER")
    request = sign(coinbase_key(private), "http://api.coinbase.com" + PERMISSIONS_PATH)
    path = request.url.path
    response = sim.handle("GET", path, "", b"", request.headers, "127.0.0.1")
    body = json.loads(response.body)
    assert set(body) == {
        "can_view",
        "can_trade",
        "can_transfer",
        "portfolio_uuid",
        "portfolio_type",
    }
    assert (body["can_view"], body["can_trade"], body["can_transfer"]) == (True, True, True)
    assert body["portfolio_type"] == "CONSUMER"


# ----------------------------------------------------------------------------- configuration


def _problems(tmp_path: Path, api_key: str, secret: str) -> list[str]:
    path = tmp_path / "keymon.yaml"
    path.write_text(
        "keys:\n"
        "  - name: acme-cb\n"
        "    client: acme\n"
        "    exchange: coinbase\n"
        "    api_key: {env: KMTEST_CB_KEY}\n"
        "    api_secret: {env: KMTEST_CB_SECRET}\n",
        encoding="utf-8",
    )
    with pytest.MonkeyPatch.context() as env:
        env.setenv("KMTEST_CB_KEY", api_key)
        env.setenv("KMTEST_CB_SECRET", secret)
        try:
            load(path)
        except ConfigError as exc:
            return exc.problems
    return []


def test_pem_from_a_file_and_from_json_escapes_loads(tmp_path: Path) -> None:
    """PEM in a file (the common case), and PEM with literal \\n escapes as in the key JSON."""
    private, _ = new_key_pair("ES256")
    (tmp_path / "cb.pem").write_text(private, encoding="utf-8")
    escaped = json.dumps(private)[1:-1]  # the "privateKey" value of the downloaded key file
    assert "\\n" in escaped
    assert "\n" not in escaped
    settings = Settings(
        keys=[
            key_config({"file": str(tmp_path / "cb.pem")}, name="from-file"),  # type: ignore[arg-type]
            key_config(escaped, name="escaped"),
            key_config(f'"{escaped}"', name="quoted"),
        ],
    )
    secrets = {key.api_secret.get() for key in settings.keys}
    assert secrets == {private}  # every form normalised to the same PEM


@pytest.mark.parametrize("form", ["pem", "base64"])
def test_ed25519_secret_loads(form: str) -> None:
    """An Ed25519 key as PKCS#8 PEM or as the CDP portal's base64 (seed + public key)."""
    private = ed25519.Ed25519PrivateKey.generate()
    if form == "pem":
        secret = private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
    else:
        raw = private.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        ) + private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        secret = base64.b64encode(raw).decode()
    key = coinbase_key(secret)
    header = decoded(token_of(sign(key)).split(".")[0])
    assert header["alg"] == "EdDSA"


def _pem(key: Any, encryption: Any = None) -> str:
    return str(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            encryption or serialization.NoEncryption(),
        ).decode()
    )


@pytest.mark.parametrize(
    ("secret", "expected"),
    [
        ("not a key at all", "is neither a PEM private key"),
        (
            "-----BEGIN EC PRIVATE KEY-----\nSENTINELc0ffee\n-----END EC PRIVATE KEY-----\n",
            "looks like PEM but is not a readable private key",
        ),
        (_pem(ec.generate_private_key(ec.SECP384R1())), "another curve than P-256"),
        (
            _pem(rsa.generate_private_key(public_exponent=65537, key_size=2048)),
            "a type Coinbase does not use",
        ),
        (
            _pem(
                ec.generate_private_key(ec.SECP256R1()),
                serialization.BestAvailableEncryption(b"pw"),
            ),
            "encrypted PEM",
        ),
        ('{"name": "organizations/x/apiKeys/y", "privateKey": "SENTINEL"}', "whole CDP key JSON"),
        (base64.b64encode(b"\x01" * 48).decode(), "base64 of a 32-byte seed"),
    ],
    ids=["garbage", "bad-pem", "p384", "rsa", "encrypted", "json", "bad-ed25519-length"],
)
def test_bad_secret_is_named_and_never_quoted(tmp_path: Path, secret: str, expected: str) -> None:
    problems = _problems(tmp_path, NAME, secret)
    assert len(problems) == 1, problems
    assert problems[0].startswith("keys[0].api_secret: key 'acme-cb': api_secret ")
    assert expected in problems[0]
    for line in secret.splitlines():
        if len(line) > 12 and "-----" not in line:
            assert line not in problems[0]
    assert "SENTINEL" not in problems[0]


@pytest.mark.parametrize(
    ("api_key", "hint"),
    [
        ("acme-trading-key", "it does not have that shape"),
        ("0b5e7a11-0000-4000-8000-0000000000aa", "bare key id"),
        (new_key_pair("ES256")[0], "api_key and api_secret swapped?"),
    ],
    ids=["shape", "uuid", "swapped"],
)
def test_bad_key_name_is_named_and_never_quoted(tmp_path: Path, api_key: str, hint: str) -> None:
    private, _ = new_key_pair("ES256")
    problems = _problems(tmp_path, api_key, private)
    assert len(problems) == 1, problems
    assert problems[0].startswith(
        "keys[0].api_key: key 'acme-cb': api_key must be the CDP key name "
        "organizations/<org_id>/apiKeys/<key_id>"
    )
    assert hint in problems[0]
    assert api_key.splitlines()[1 if "\n" in api_key else 0] not in problems[0]


# ----------------------------------------------------------------------------- audits


async def audit(
    sim: CoinbaseSimulator | httpx.AsyncBaseTransport,
    secret: str,
    *,
    clock: Callable[[], float] = lambda: float(START),
    times: int = 1,
) -> AuditResult:
    settings = Settings(keys=[key_config(secret)], trusted_ips=["127.0.0.1/32"])
    transport = sim.transport() if isinstance(sim, CoinbaseSimulator) else sim
    async with Auditor(settings, transport_factory=lambda _n: transport, clock=clock) as auditor:
        result = None
        for _ in range(times):
            result = await auditor.audit(settings.keys[0])
    assert result is not None
    return result


async def test_facts_are_three_state() -> None:
    """can_view/can_trade/can_transfer observed; IP list, creation and expiry not visible."""
    private, public = new_key_pair("ES256")
    sim = simulator()
    sim.add_key(NAME, public, can_view=False, can_transfer=True)
    result = await audit(sim, private)
    assert result.facts is not None
    assert dict(result.facts.permissions) == {
        "read": False,
        "spot_trade": True,
        "withdraw": True,
    }
    assert result.facts.ip_restricted is None
    assert result.facts.ip_list is None
    assert result.facts.created_at is None
    assert result.facts.deadlines == ()
    fired = {(f.rule, f.severity, f.permission) for f in result.findings}
    assert fired == {
        (Rule.WITHDRAW_ENABLED, Severity.CRITICAL, None),
        (Rule.MISSING_PERMISSION, Severity.WARNING, "read"),
    }
    checked = {check.rule for check in result.evaluation.checks}
    assert not checked & {Rule.IP_UNRESTRICTED, Rule.UNTRUSTED_IP, Rule.REVIEW_DEADLINE}


async def test_server_clock_skew_is_corrected_by_the_time_sync() -> None:
    """Coinbase's clock 10 minutes ahead: keymon signs by Coinbase's time, not its own."""
    private, public = new_key_pair("ES256")
    sim = simulator()
    sim.add_key(NAME, public)
    sim.clock_skew_ms = 600_000
    result = await audit(sim, private)
    assert result.ok, (result.error, sim.last_rejection)


async def test_skew_without_a_readable_server_clock_is_key_rejected_not_guessed() -> None:
    """When Coinbase's clock cannot be read, keymon does not claim clock skew: it reports the
    bare 401 as a key rejection and says it could not rule the clock out."""
    private, public = new_key_pair("ES256")
    sim = simulator()
    sim.add_key(NAME, public)
    sim.clock_skew_ms = 600_000

    class NoClock(httpx.AsyncBaseTransport):
        def __init__(self) -> None:
            self._inner = sim.transport()

        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            if request.url.path == TIME_PATH:
                return httpx.Response(503, content=b"<html>down</html>")
            return await self._inner.handle_async_request(request)

    result = await audit(NoClock(), private)
    assert result.error is not None
    assert result.error.reason is Reason.KEY_REJECTED
    assert "could not read Coinbase's clock" in result.error.message
    assert sim.last_rejection == "expired"


class BackwardClock:
    """A local clock that loses 100 s per reading: every JWT has expired by Coinbase's time."""

    def __init__(self) -> None:
        self.now = float(START)

    def __call__(self) -> float:
        self.now -= 100
        return self.now


async def test_expired_jwt_after_a_resync_is_clock_skew() -> None:
    private, public = new_key_pair("ES256")
    sim = simulator()
    sim.add_key(NAME, public)
    result = await audit(sim, private, clock=BackwardClock())
    assert result.error is not None
    assert result.error.reason is Reason.CLOCK_SKEW
    assert "expired by Coinbase's clock" in result.error.message


async def test_one_spurious_401_is_retried() -> None:
    """A single 401 (reported for valid JWTs) costs a re-sync and one retry, not an alert."""
    private, public = new_key_pair("ES256")
    sim = simulator()
    sim.add_key(NAME, public)
    calls: list[str] = []

    class FlakyOnce(httpx.AsyncBaseTransport):
        def __init__(self) -> None:
            self._inner = sim.transport()

        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            calls.append(request.url.path)
            if calls.count(PERMISSIONS_PATH) == 1 and request.url.path == PERMISSIONS_PATH:
                return httpx.Response(401, content=b"Unauthorized\n")
            return await self._inner.handle_async_request(request)

    result = await audit(FlakyOnce(), private)
    assert result.ok, result.error
    assert calls == [TIME_PATH, PERMISSIONS_PATH, TIME_PATH, PERMISSIONS_PATH]


async def test_deleted_key_message_lists_the_causes_and_no_secret() -> None:
    private, public = new_key_pair("ES256")
    sim = simulator()
    sim.add_key(NAME, public)
    sim.delete_key(NAME)
    result = await audit(sim, private)
    assert result.error is not None
    assert result.error.reason is Reason.KEY_REJECTED
    assert result.error.code == 401
    assert result.error.refused_ip is None  # Coinbase names no IP: keymon does not guess one
    message = result.error.message
    assert "Coinbase's clock, read around the retry, shows no skew" in message
    for cause in ("unknown to Coinbase", "private key does not match", "IP allowlist"):
        assert cause in message
    assert NAME not in message
    assert all(line not in message for line in private.splitlines()[1:-1])


def _canned(status: int, body: bytes, headers: dict[str, str] | None = None) -> Any:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == TIME_PATH:
            millis = str(START * 1000)
            return httpx.Response(200, json={"epochMillis": millis, "epochSeconds": str(START)})
        return httpx.Response(status, content=body, headers=headers or {})

    return httpx.MockTransport(handler)


@pytest.mark.parametrize(
    ("status", "body", "headers", "expected"),
    [
        (429, b"<html><title>Coinbase</title></html>", {"Retry-After": "7"}, Reason.RATE_LIMITED),
        (
            429,
            b'{"error":"RATE_LIMIT_EXCEEDED","message":"Too many requests"}',
            {},
            Reason.RATE_LIMITED,
        ),
        (503, b"<html>maintenance</html>", {}, Reason.EXCHANGE_UNAVAILABLE),
        (403, b'{"error":"PERMISSION_DENIED","message":"denied"}', {}, Reason.KEY_REJECTED),
        (404, b'{"error":"NOT_FOUND","message":"Not Found"}', {}, Reason.BAD_RESPONSE),
        (200, b'{"can_view": true, "can_tr', {}, Reason.BAD_RESPONSE),
        (200, b'{"can_view": "yes", "can_trade": true}', {}, Reason.BAD_RESPONSE),
    ],
    ids=["429-html", "429-json", "503", "403", "404", "truncated", "wrong-shape"],
)
async def test_error_classification(
    status: int, body: bytes, headers: dict[str, str], expected: Reason
) -> None:
    private, _ = new_key_pair("ES256")
    result = await audit(_canned(status, body, headers), private)
    assert result.error is not None
    assert result.error.reason is expected, result.error.message
    if status == 429 and headers:
        assert result.error.retry_after == 7.0
    if expected is Reason.BAD_RESPONSE and status == 200 and b"yes" in body:
        # The flag of the wrong type is named; an absent can_transfer is "not visible", not an
        # error (the docs and the official SDK make every field optional).
        assert "can_view" in result.error.message


async def test_private_rate_limit_is_rate_limited(clock: FakeClock) -> None:
    """Past the documented 30 requests/s per user, Coinbase answers 429."""
    private, public = new_key_pair("ES256")
    sim = CoinbaseSimulator(clock=clock)
    sim.add_key(NAME, public)
    sim.set_limit(2)
    result = await audit(sim, private, clock=clock, times=3)
    assert result.error is not None
    assert result.error.reason is Reason.RATE_LIMITED
    assert sim.status_count(429) == 1


def test_read_only_allowlist_is_the_two_gets() -> None:
    assert CoinbaseAdapter.read_only_endpoints == frozenset(
        {("GET", TIME_PATH), ("GET", PERMISSIONS_PATH)}
    )


def test_auth_repr_hides_the_key() -> None:
    private, _ = new_key_pair("ES256")
    auth = CoinbaseAuth(coinbase_key(private), lambda: START)
    assert NAME not in repr(auth)
    assert "PRIVATE" not in repr(auth)
