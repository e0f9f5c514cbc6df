"""Biconomy (biconomy.com exchange, open API v1): liveness only (exchange-apis.md §2.14).

Biconomy has no endpoint that shows the calling key its own permissions, IP binding, creation
or expiry. keymon makes one signed read, ``POST /api/v1/private/user`` ("Get User Assets",
20 requests/s; BiconomyOfficial/apidocs ``README.md``), which proves that the key exists, that
its secret is right and, as far as Biconomy enforces it, that this egress IP is bound to it.
The balances are never kept.

Signing (BiconomyOfficial/apidocs "Signature Authentication" and its ``v1/fullsample_v1.py``;
exchange-apis.md §2.14 had it as third-party and the joining rule unconfirmed): the parameters
(here only ``api_key``) are sorted by name and joined as ``k=v&...``; ``&secret_key=<secret>``
is appended; ``sign`` is the **uppercase** hex MD5 of that string. ``api_key`` and ``sign`` are
sent as an ``application/x-www-form-urlencoded`` POST body, with the header ``X-SITE-ID: 127``
that the docs require on every request (not signed). The docs' own example is the only
confirmation keymon has: **no official test vector exists**, so the scheme is verified only
against keymon's own simulator. If every Biconomy key is rejected, suspect the signing first.

No timestamp is signed, so Biconomy has no clock window and **keymon cannot detect clock skew
there** (nor does it need a time sync). An MD5 signature without a timestamp also means a
captured request could be replayed; keymon sends only this read.

Errors: the docs list ``{"code": N, "message": ...}`` codes 1 (invalid parameter), 2 (internal
error), 3 (service unavailable), 4 (method not found), 5 (service timeout) and 10005 (record not
found: an ``X-SITE-ID`` setting error), and **no code for an unknown key, a bad signature, a
refused IP or an expired or frozen key**. keymon reads code 1 on this call, whose only
parameters are ``api_key`` and ``sign``, as the key being rejected (an inference, unconfirmed),
10022 (failed real-name authentication) and 10051 (user forbids trading) as rejections, 2, 3
and 5 as the exchange being unavailable, 4 (method not found) and 10005 (X-SITE-ID) as keymon's
own malformed request, HTTP 401 as a rejection, 429 as a rate limit and anything else as a bad
response, quoting Biconomy's code and message. The docs name ``https://market.biconomy.vip``
the main URL and ``https://www.biconomy.com`` (keymon's default) the backup.
"""

from __future__ import annotations

import hashlib
from collections.abc import Generator, Mapping
from typing import Any, ClassVar, Final, Literal

import httpx

from keymon.config_base import KeyBase, LivenessSettings
from keymon.exchanges.liveness import Kind, LivenessAdapter

# ----------------------------------------------------------------------------- configuration

BICONOMY_BASE_URL = "https://www.biconomy.com"


class BiconomySettings(LivenessSettings):
    """``exchanges.biconomy:`` (liveness only)."""

    base_url: str = BICONOMY_BASE_URL


class BiconomyKey(KeyBase):
    """A Biconomy key (liveness only): API key and secret."""

    exchange: Literal["biconomy"]


NAME: Final = "biconomy"
USER_PATH: Final = "/api/v1/private/user"
SITE_ID: Final = "127"


def signing_string(params: Mapping[str, str], secret: str) -> str:
    """The parameters sorted by name and joined as ``k=v&...``, then ``&secret_key=<secret>``."""
    joined = "&".join(f"{name}={params[name]}" for name in sorted(params))
    return f"{joined}&secret_key={secret}"


def sign(params: Mapping[str, str], secret: str) -> str:
    """``sign``: uppercase hex MD5 of :func:`signing_string`."""
    text = signing_string(params, secret)
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest().upper()


class BiconomySiteAuth(httpx.Auth):
    """Adds the ``X-SITE-ID`` header every Biconomy request must carry."""

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["X-SITE-ID"] = SITE_ID
        yield request


class BiconomyAdapter(LivenessAdapter, settings_model=BiconomySettings, key_model=BiconomyKey):
    """Audits Biconomy keys for liveness: ``POST /api/v1/private/user`` is accepted, or why
    not."""

    name: ClassVar[str] = NAME
    probe: ClassVar[tuple[str, str]] = ("POST", USER_PATH)
    time_path: ClassVar[str | None] = None
    weights: ClassVar[Mapping[str, int]] = {USER_PATH: 1}
    codes: ClassVar[Mapping[int | str, tuple[Kind, str]]] = {
        1: (
            Kind.REJECTED,
            "'invalid parameter' on a call that carries only api_key and sign: the key is "
            "unknown (deleted?), the secret is wrong, or the key is refused (IP, state); "
            "Biconomy documents no finer code. If every Biconomy key says this, suspect "
            "keymon's signing scheme",
        ),
        2: (Kind.UNAVAILABLE, "internal error"),
        3: (Kind.UNAVAILABLE, "service unavailable"),
        4: (Kind.MALFORMED, "method not found"),
        5: (Kind.UNAVAILABLE, "service timeout"),
        10005: (Kind.MALFORMED, "record not found: the X-SITE-ID header is wrong"),
        10022: (Kind.REJECTED, "the account failed real-name authentication"),
        10051: (Kind.REJECTED, "the user forbids trading"),
    }

    def auth(self, key: BiconomyKey) -> httpx.Auth:
        return BiconomySiteAuth()

    def probe_params(self, key: BiconomyKey) -> Mapping[str, str]:
        """``api_key`` and its ``sign`` (no timestamp is signed, so signing now is signing at
        send time)."""
        params = {"api_key": key.api_key.get()}
        return {**params, "sign": sign(params, key.api_secret.get())}

    def error_code(self, response: httpx.Response, body: Any) -> tuple[int | str, str] | None:
        """Biconomy answers ``{"code": 0, "message": "successful", "result": {...}}``."""
        if not isinstance(body, dict):
            if response.status_code != httpx.codes.OK:
                return None
            return "missing", "an answer that is not a JSON object"
        code = body.get("code")
        if isinstance(code, bool) or not isinstance(code, int):
            if response.status_code != httpx.codes.OK:
                return None
            return "missing", "an answer without a result code"
        if code == 0 and response.status_code == httpx.codes.OK:
            return None
        message = body.get("message")
        return code, message if isinstance(message, str) else ""
