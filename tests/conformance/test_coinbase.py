# ruff: noqa: E501 - the SDK's test keys and docs URLs are quoted verbatim
"""Coinbase conformance record: Coinbase's own sources on keymon's calls, and how keymon reads
them.

Sources (official): the Advanced Trade API reference, "Get API Key Permissions"
(https://docs.cdp.coinbase.com/api-reference/advanced-trade-api/rest-api/data-api/get-api-key-permissions,
``GetApiKeyPermissionsResponse``: can_view, can_trade, can_transfer, portfolio_uuid,
portfolio_type, all optional) and "Get Server Time" (.../public/get-server-time,
``ExtendedTimestamp``: iso, epochSeconds, epochMillis); "API Scopes and Permissions"
(https://docs.cdp.coinbase.com/coinbase-app/authentication-authorization/authorization: View,
Trade, Transfer "send and receive funds, on and off platform"); the official SDKs
coinbase/coinbase-advanced-py (``coinbase/jwt_generator.py`` ``_load_private_key``,
``tests/constants.py`` test keys, ``tests/rest/test_data_api.py`` and
``tests/rest/test_public.py`` mocked answers, ``coinbase/rest/rest_base.py`` 403 "Missing
required scopes") and coinbase/cdp-sdk (``python/cdp/auth/utils/jwt.py``
``_parse_private_key``). The SDKs' test keys are published test material, quoted verbatim.
Coinbase documents no error codes for the key: its refusals are HTTP statuses (a bare 401).
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization

from keymon.exchanges.coinbase import coinbase_private_key, normalize_coinbase_secret
from keymon.model import Coverage, Reason
from keymon.simulator.coinbase import CoinbaseSimulator
from tests.conformance.answering import Canned, answering, audit, reason
from tests.conftest import FakeClock

TIME = "/api/v3/brokerage/time"
PERMISSIONS = "/api/v3/brokerage/key_permissions"

# coinbase/coinbase-advanced-py tests/constants.py (verbatim).
TEST_API_KEY = "organizations/test-organization/apiKeys/test-api-key"
TEST_API_SECRET = "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIKwf3Uox30cRWzRBOPoPOH5p0Gpb0Dt8zUKXUEM5fMkGoAoGCCqGSM49\nAwEHoUQDQgAEbAtpLlSZYVOwYICz+uEyxcS29vRIujiES/gQ1DC7FV4zK4JuYE9v\nqDyGZQYjdXHLM7I6f/QnnOITL+dXYWBHRA==\n-----END EC PRIVATE KEY-----\n"
TEST_ED25519_API_SECRET = (
    "k0BUni0p0vZG1BdpVjS6ogBJ7kxm630AJ2dN+tuputDOKsRAwgyrpEQLeBtS1znTmzPX6Xr2eOWpzx6nW8knkA=="
)
# Same key as TEST_ED25519_API_SECRET, wrapped in PKCS8 PEM (-----BEGIN PRIVATE KEY-----)
TEST_ED25519_PKCS8_API_SECRET = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIJNAVJ4tKdL2RtQXaVY0uqIASe5MZut9ACdnTfrbqbrQ\n-----END PRIVATE KEY-----\n"
# Same key as TEST_ED25519_API_SECRET, raw 32-byte seed only (base64)
TEST_ED25519_SEED_API_SECRET = "k0BUni0p0vZG1BdpVjS6ogBJ7kxm630AJ2dN+tuputA="

#: Every form the official SDKs accept, each from their own fixtures or docs.
SDK_SECRETS: dict[str, str] = {
    "ec-pem-sec1": TEST_API_SECRET,
    "ed25519-base64-64-bytes": TEST_ED25519_API_SECRET,
    "ed25519-pkcs8-pem": TEST_ED25519_PKCS8_API_SECRET,
    "ed25519-base64-32-byte-seed": TEST_ED25519_SEED_API_SECRET,
    # jwt_generator: "trailing newlines from .env loaders don't break valid keys".
    "ed25519-seed-trailing-newline": TEST_ED25519_SEED_API_SECRET + "\n",
    # cdp-sdk JwtOptions docstring: a PEM with literal \n escapes.
    "ec-pem-literal-escapes": TEST_API_SECRET.replace("\n", "\\n"),
    # base64 broken over lines: jwt_generator joins on whitespace before decoding.
    "ed25519-base64-wrapped": TEST_ED25519_API_SECRET[:44] + "\n" + TEST_ED25519_API_SECRET[44:],
}

# coinbase-advanced-py tests/rest/test_data_api.py, the mocked answer (verbatim). It has no
# can_transfer (and an undocumented can_withdraw): withdraw is not visible from it.
SDK_PERMISSIONS = {
    "can_view": True,
    "can_trade": False,
    "can_withdraw": False,
    "portfolio_uuid": "portfolio1",
}
# coinbase-advanced-py tests/rest/test_public.py, the mocked answer (verbatim).
SDK_TIME = {"iso": "2022-01-01T00:00:00Z", "epoch": 1640995200}


def public_pem(secret: str) -> str:
    private, _ = coinbase_private_key(normalize_coinbase_secret(secret))
    return str(
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


@pytest.mark.parametrize("form", list(SDK_SECRETS))
async def test_every_secret_form_the_sdks_accept_signs_a_jwt_coinbase_verifies(form: str) -> None:
    """keymon's configuration accepts the secret, and the simulator, holding only the public
    key, verifies the JWT keymon signs with it (ES256 or EdDSA)."""
    secret = SDK_SECRETS[form]
    clock = FakeClock()
    sim = CoinbaseSimulator(clock=clock)
    sim.add_key(TEST_API_KEY, public_pem(secret))
    result = await audit(
        "coinbase", sim.transport(), api_key=TEST_API_KEY, api_secret=secret, clock=clock
    )
    assert result.ok, result.error
    assert result.facts is not None
    assert dict(result.facts.permissions) == {"read": True, "spot_trade": True, "withdraw": False}


def test_the_64_byte_form_signs_with_its_seed_as_the_sdks_do() -> None:
    """coinbase-advanced-py and cdp-sdk both use the first 32 bytes; so the 64-byte, PKCS#8
    and seed forms of the SDK's test key are one key."""
    keys = {
        form: coinbase_private_key(normalize_coinbase_secret(SDK_SECRETS[form]))[0]
        for form in ("ed25519-base64-64-bytes", "ed25519-pkcs8-pem", "ed25519-base64-32-byte-seed")
    }
    raw = {
        form: key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        for form, key in keys.items()
    }
    assert len(set(raw.values())) == 1


def doc_time(clock: FakeClock) -> dict[str, str]:
    """Constructed in the docs' ExtendedTimestamp shape (decimal strings), at the clock's now."""
    return {
        "iso": "2026-11-18T00:00:00Z",
        "epochSeconds": str(int(clock.now)),
        "epochMillis": str(int(clock.now * 1000)),
    }


async def test_sdk_permissions_answer_gives_what_it_says_and_no_more() -> None:
    clock = FakeClock()
    routes: dict[str, Canned] = {TIME: (200, doc_time(clock)), PERMISSIONS: (200, SDK_PERMISSIONS)}
    result = await audit(
        "coinbase", answering(routes), api_key=TEST_API_KEY, api_secret=TEST_API_SECRET, clock=clock
    )
    assert result.ok, result.error
    facts = result.facts
    assert facts is not None
    assert facts.coverage is Coverage.INTROSPECTION
    assert facts.permissions["read"] is True
    assert facts.permissions["spot_trade"] is False
    assert "withdraw" not in facts.permissions  # no can_transfer: not visible, never "off"
    assert facts.permissions["can_withdraw"] is False  # undocumented, kept under its raw name
    assert facts.ip_restricted is None
    assert facts.ip_list is None


@pytest.mark.parametrize(
    ("answer", "withdraw"),
    [
        ({"can_view": True, "can_trade": True, "can_transfer": True}, True),
        ({"can_view": True, "can_trade": True, "can_transfer": False}, False),
    ],
)
async def test_documented_fields(answer: dict[str, Any], withdraw: bool) -> None:
    """The reference's fields: can_transfer ("send and receive funds, on and off platform")
    is withdraw; a permission the docs say is on is reported on."""
    clock = FakeClock()
    body = answer | {
        "portfolio_uuid": "8a6c6f5e-0000-0000-0000-000000000000",
        "portfolio_type": "DEFAULT",
    }
    routes: dict[str, Canned] = {TIME: (200, doc_time(clock)), PERMISSIONS: (200, body)}
    result = await audit(
        "coinbase", answering(routes), api_key=TEST_API_KEY, api_secret=TEST_API_SECRET, clock=clock
    )
    assert result.facts is not None, result.error
    assert result.facts.permissions == {"read": True, "spot_trade": True, "withdraw": withdraw}


async def test_sdk_time_answer_is_read_from_iso() -> None:
    """The SDK's mocked time answer has only iso (and an undocumented epoch): keymon reads iso."""
    from keymon.exchanges.coinbase import CoinbaseAdapter, CoinbaseSettings

    adapter = CoinbaseAdapter(
        httpx.AsyncClient(
            transport=answering({TIME: (200, SDK_TIME)}), base_url="http://coinbase.test"
        ),
        CoinbaseSettings(),
    )
    assert await adapter._server_time() == 1640995200.0


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (401, b"Unauthorized", Reason.KEY_REJECTED),
        # coinbase-advanced-py rest_base.handle_exception: 403 with "Missing required scopes".
        (
            403,
            b'{"error":"PERMISSION_DENIED","error_details":"Missing required scopes"}',
            Reason.KEY_REJECTED,
        ),
        (429, b'{"error":"RESOURCE_EXHAUSTED"}', Reason.RATE_LIMITED),
        (500, b"", Reason.EXCHANGE_UNAVAILABLE),
        (503, b"", Reason.EXCHANGE_UNAVAILABLE),
        (404, b'{"error":"NOT_FOUND"}', Reason.BAD_RESPONSE),
    ],
    ids=["401", "403-scopes", "429", "500", "503", "404"],
)
async def test_http_statuses(status: int, body: bytes, expected: Reason) -> None:
    clock = FakeClock()
    routes: dict[str, Canned] = {TIME: (200, doc_time(clock)), PERMISSIONS: (status, body)}
    result = await audit(
        "coinbase", answering(routes), api_key=TEST_API_KEY, api_secret=TEST_API_SECRET, clock=clock
    )
    assert reason(result) is expected, result.error
