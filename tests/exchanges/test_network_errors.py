"""Failures without a response name their kind and the host:port, for real where possible.

Each kind is produced by a real socket on 127.0.0.1 (or a ``.invalid`` name, which never
resolves): a refused port, a plain-HTTP server behind an ``https://`` URL, a self-signed TLS
server, a server that accepts and never answers, one whose accept queue is full, one that
resets and one that hangs up. The reason stays from the fixed list (``network`` or
``timeout``); the kind goes into the message, the logs and ``keymon check``'s output.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable, Iterator, MutableMapping
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from structlog.testing import capture_logs

from keymon.audit import Auditor
from keymon.cli import check
from keymon.exchanges.base import describe_transport_error
from keymon.model import AuditResult, Reason
from tests.conftest import DOC_API_KEY, DOC_SECRET, key_entry, make_settings

RESTRICTIONS = "/sapi/v1/account/apiRestrictions"
TIMEOUT = "500ms"


async def audit_at(base_url: str) -> tuple[AuditResult, list[MutableMapping[str, Any]]]:
    """Audit the doc key against ``base_url`` with the real transport; the result and logs."""
    settings = make_settings(
        key_entry("doc-key", DOC_API_KEY, DOC_SECRET),
        base_url=base_url,
        audit={"timeout": TIMEOUT, "jitter": "0s"},
    )
    with capture_logs() as logs:
        async with Auditor(settings) as auditor:
            result = await auditor.audit(settings.keys[0])
    return result, logs


def error_of(result: AuditResult) -> tuple[Reason, str]:
    assert result.error is not None, "the audit should have failed"
    return result.error.reason, result.error.message


# ----------------------------------------------------------------------------- servers


@contextlib.contextmanager
def serving(handle: Callable[[socket.socket], None], *, backlog: int = 16) -> Iterator[int]:
    """A TCP server on 127.0.0.1 calling ``handle`` per connection; yields its port."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(backlog)
    held: list[socket.socket] = []

    def loop() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return  # the listener was closed: the test is over
            held.append(conn)
            with contextlib.suppress(OSError):
                handle(conn)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        # shutdown() wakes the thread blocked in accept(); close() alone may not.
        with contextlib.suppress(OSError):
            listener.shutdown(socket.SHUT_RDWR)
        listener.close()
        thread.join(timeout=5)
        for conn in held:
            conn.close()


def answer_plain_http(conn: socket.socket) -> None:
    conn.recv(65536)
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")
    conn.close()


def never_answer(conn: socket.socket) -> None:
    """Keep the connection open and say nothing (the serving loop holds it)."""


def reset(conn: socket.socket) -> None:
    conn.recv(65536)
    # SO_LINGER with a zero timeout: close() sends RST instead of FIN.
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()


def hang_up(conn: socket.socket) -> None:
    conn.recv(65536)
    conn.close()


def self_signed_context(tmp_path: Path) -> ssl.SSLContext:
    """A server TLS context with a certificate for 127.0.0.1 that no CA signed."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    return context


def free_port() -> int:
    """A port nothing listens on: bound by the kernel's choice, then released."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ----------------------------------------------------------------------------- kinds


async def test_refused_names_kind_and_host() -> None:
    """Nothing listening: network, "connect refused to 127.0.0.1:PORT (ConnectError)"."""
    port = free_port()
    result, logs = await audit_at(f"http://127.0.0.1:{port}")
    reason, message = error_of(result)
    assert reason is Reason.NETWORK
    assert message == f"binance: {RESTRICTIONS}: connect refused to 127.0.0.1:{port} (ConnectError)"
    # The logs say the same: the failed clock sync and the failed audit.
    sync = next(e for e in logs if e["event"] == "clock_sync_failed")
    assert f"connect refused to 127.0.0.1:{port}" in str(sync["error"])
    failed = next(e for e in logs if e["event"] == "audit_failed")
    assert failed["reason"] == "network"
    assert failed["error"] == message


async def test_unresolvable_name_is_dns() -> None:
    """A name that cannot resolve (.invalid, RFC 2606) is "dns: cannot resolve", at once."""
    started = time.monotonic()
    result, _ = await audit_at("https://api.binance.invalid")
    reason, message = error_of(result)
    assert reason is Reason.NETWORK
    assert f"binance: {RESTRICTIONS}: dns: cannot resolve api.binance.invalid:443" in message
    assert message.endswith("(ConnectError)")
    assert time.monotonic() - started < 10  # resolution fails, it does not hang


async def test_https_to_a_plain_http_server_is_tls() -> None:
    """An https:// base URL on a plain-HTTP server: the TLS handshake fails, and says so."""
    with serving(answer_plain_http) as port:
        result, _ = await audit_at(f"https://127.0.0.1:{port}")
    reason, message = error_of(result)
    assert reason is Reason.NETWORK
    assert f"tls: handshake with 127.0.0.1:{port} failed" in message
    assert message.endswith("(ConnectError)")


async def test_self_signed_certificate_is_tls(tmp_path: Path) -> None:
    """A server whose certificate no CA signed: "tls: certificate ... not accepted"."""
    context = self_signed_context(tmp_path)

    def handshake(conn: socket.socket) -> None:
        with context.wrap_socket(conn, server_side=True) as tls:
            tls.recv(65536)

    with serving(handshake) as port:
        result, _ = await audit_at(f"https://127.0.0.1:{port}")
    reason, message = error_of(result)
    assert reason is Reason.NETWORK
    assert f"tls: certificate of 127.0.0.1:{port} not accepted: self-signed certificate" in (
        message
    )


async def test_silent_server_is_a_read_timeout() -> None:
    """Accepted but never answered: reason timeout, "read timeout from ... after 0.5 s"."""
    with serving(never_answer) as port:
        result, _ = await audit_at(f"http://127.0.0.1:{port}")
    reason, message = error_of(result)
    assert reason is Reason.TIMEOUT
    assert message == (
        f"binance: {RESTRICTIONS}: read timeout from 127.0.0.1:{port} after 0.5 s (ReadTimeout)"
    )


async def test_full_accept_queue_is_a_connect_timeout() -> None:
    """A listener whose accept queue is full drops new SYNs: "connect timeout to ..."."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    try:
        for _ in range(4):  # more than the queue holds; nobody accepts them
            filler = socket.socket()
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect(("127.0.0.1", port))
            fillers.append(filler)
        result, _ = await audit_at(f"http://127.0.0.1:{port}")
    finally:
        for filler in fillers:
            filler.close()
        listener.close()
    reason, message = error_of(result)
    assert reason is Reason.TIMEOUT
    assert message == (
        f"binance: {RESTRICTIONS}: connect timeout to 127.0.0.1:{port} after 0.5 s (ConnectTimeout)"
    )


async def test_reset_is_connection_reset() -> None:
    """A server that answers with RST: "connection reset by 127.0.0.1:PORT"."""
    with serving(reset) as port:
        result, _ = await audit_at(f"http://127.0.0.1:{port}")
    reason, message = error_of(result)
    assert reason is Reason.NETWORK
    assert f"connection reset by 127.0.0.1:{port}" in message


async def test_hang_up_is_connection_closed() -> None:
    """A server that closes without answering: "connection closed by ... before ..."."""
    with serving(hang_up) as port:
        result, _ = await audit_at(f"http://127.0.0.1:{port}")
    reason, message = error_of(result)
    assert reason is Reason.NETWORK
    assert f"connection closed by 127.0.0.1:{port} before the response was complete" in message


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (httpx.ProxyError("p"), "proxy: cannot reach api.example:443 through the proxy"),
        (httpx.ConnectError("c"), "connect failed to api.example:443"),
        (httpx.ConnectTimeout("t"), "connect timeout to api.example:443"),
        (httpx.ReadTimeout("t"), "read timeout from api.example:443"),
        (httpx.RemoteProtocolError("r"), "invalid HTTP response from api.example:443"),
        (httpx.ReadError("r"), "read failed from api.example:443"),
    ],
    ids=["proxy", "connect", "connect-timeout", "read-timeout", "protocol", "read"],
)
def test_httpx_errors_without_a_cause_are_described_by_class(
    error: httpx.HTTPError, expected: str
) -> None:
    """A transport that chains no OS error (tests' in-process ones) still names a kind."""
    assert describe_transport_error(error, "api.example:443") == expected


# ----------------------------------------------------------------------------- check


def test_check_prints_the_kind_and_the_host(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`keymon check` against a refused port: UNKNOWN, and the line says what and where."""
    port = free_port()
    config = tmp_path / "keymon.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "data_dir": str(tmp_path / "data"),
                "exchanges": {"binance": {"base_url": f"http://127.0.0.1:{port}"}},
                "audit": {"timeout": TIMEOUT},
                "keys": [key_entry("doc-key", DOC_API_KEY, DOC_SECRET)],
            }
        )
    )
    status = check(config)
    out, err = capsys.readouterr()
    assert status == 3
    assert (
        f"audit failed (network): binance: {RESTRICTIONS}: connect refused to "
        f"127.0.0.1:{port} (ConnectError)"
    ) in out
    assert f"connect refused to 127.0.0.1:{port}" in err  # the warning logged on stderr
