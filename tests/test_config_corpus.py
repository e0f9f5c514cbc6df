"""A corpus of broken configurations: each is refused with a located problem, never a crash.

Every entry of :data:`CORPUS` is a :class:`Case`: the configuration (YAML text, raw bytes, or a
builder that also makes the secret files, directories or links it needs), the environment it
runs with, and where the problem must be reported: the start of one problem line, with
``{path}`` standing for the configuration file. Add a case by appending one entry.

Each case is checked three ways:

* ``python -m keymon validate-config`` as a real process exits 2 and names the location, with
  no traceback, no signal and no secret on its output (:mod:`tests.keymon_forks` forks these
  processes from one that imported keymon already, so the corpus runs in seconds);
* a running daemon (an in-process :class:`~keymon.app.App`) given the broken file keeps its
  configuration, logs the located problem without the secret and sets
  ``keymon_config_last_reload_success`` to 0;
* a few representative ones, the deep-nesting file first (it crashed the process with
  SIGSEGV), against a real ``keymon run`` process reloading on SIGHUP, a real
  ``python -m keymon validate-config`` started from scratch, and ``keymon check`` (exit 3).
"""

from __future__ import annotations

import functools
import io
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from keymon import log as logging_setup
from keymon.app import App
from keymon.config import MAX_CONFIG_BYTES, MAX_SECRET_FILE_BYTES, load
from tests.conftest import SENTINEL, wait_until
from tests.keymon_forks import Completed, run_many

#: Builds a case in ``directory`` (secret files, links) and returns the configuration's text or
#: bytes, or None when it made ``config`` itself (a directory, a link loop).
Builder = Callable[[Path, Path], "str | bytes | None"]


@dataclass(frozen=True)
class Case:
    """One broken configuration and where its problem must be reported."""

    id: str
    config: str | bytes | Builder
    #: The start of one problem line (``{path}``: the configuration file's path).
    where: str
    #: Environment variables for this case, on top of :data:`BASE_ENV`.
    env: Mapping[str, str] = field(default_factory=dict)


BASE_ENV = {"KMC_KEY": "acme-api-key-0001", "KMC_SECRET": "acme-api-secret-0001"}

KEY = """\
keys:
  - name: acme-binance-main
    client: acme
    exchange: binance
    api_key: {env: KMC_KEY}
    api_secret: {env: KMC_SECRET}
"""


def top(text: str) -> str:
    """``text`` (top-level settings) followed by a valid key."""
    return text + ("" if text.endswith("\n") else "\n") + KEY


def key(*lines: str, exchange: str = "binance", **fields: str) -> str:
    """The key block with ``fields`` replaced (value written as given) and ``lines`` added."""
    values = {
        "name": "acme-binance-main",
        "client": "acme",
        "exchange": exchange,
        "api_key": "{env: KMC_KEY}",
        "api_secret": "{env: KMC_SECRET}",
    }
    values.update(fields)
    entry = "".join(f"    {k}: {v}\n" for k, v in values.items()).replace("    ", "  - ", 1)
    return "keys:\n" + entry + "".join(f"    {line}\n" for line in lines)


def deep_flow(depth: int, open_: str = "[", close: str = "]", inner: str = "") -> str:
    return open_ * depth + inner + close * depth


def laughs(target: str) -> str:
    """A "billion laughs" file: ten anchors, each repeating the previous nine times."""
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
    return "\n".join(lines) + f"\n{target}: *a9\n" + KEY


def merge_laughs() -> str:
    """The same through merge keys: each mapping merges the previous one nine times."""
    lines = ["m0: &m0 {a: 1, b: 2, c: 3, d: 4, e: 5, f: 6, g: 7, h: 8, i: 9}"]
    lines += [f"m{i}: &m{i} {{<<: [{', '.join([f'*m{i - 1}'] * 9)}]}}" for i in range(1, 10)]
    return "\n".join(lines) + "\n" + KEY


def secret_file(content: bytes, ref: str = "api_secret") -> Builder:
    """A key whose ``ref`` is a ``{file:}`` holding ``content``."""

    def build(directory: Path, config: Path) -> str:
        (directory / "secret").write_bytes(content)
        return key(**{ref: f"{{file: {directory}/secret}}"})

    return build


def secret_dir(directory: Path, config: Path) -> str:
    (directory / "secret.d").mkdir()
    return key(api_secret=f"{{file: {directory}/secret.d}}")


def _unreadable(path: Path) -> None:
    """Make ``path`` unreadable: without read permission, or (as root, who reads anything) a
    link to itself, which no one can open."""
    if os.geteuid() != 0:
        path.write_text("secret\n")
        path.chmod(0)
    else:
        path.symlink_to(path.name)


def secret_unreadable(directory: Path, config: Path) -> str:
    _unreadable(directory / "secret")
    return key(api_secret=f"{{file: {directory}/secret}}")


def secret_under_a_file(directory: Path, config: Path) -> str:
    (directory / "plain").write_text("x\n")
    return key(api_secret=f"{{file: {directory}/plain/secret}}")


def secret_fifo(directory: Path, config: Path) -> str:
    os.mkfifo(directory / "fifo")
    return key(api_secret=f"{{file: {directory}/fifo}}")


def config_is_a_directory(directory: Path, config: Path) -> None:
    config.mkdir()


def config_unreadable(directory: Path, config: Path) -> None:
    _unreadable(config)


def config_under_a_file(directory: Path, config: Path) -> None:
    # The configuration path names a "directory" that is a file: a link to such a path.
    (directory / "plain").write_text("x\n")
    config.symlink_to(directory / "plain" / "keymon.yaml")


def config_dangling_link(directory: Path, config: Path) -> None:
    config.symlink_to(directory / "gone.yaml")


def too_big(directory: Path, config: Path) -> bytes:
    return KEY.encode() + b"#" * (MAX_CONFIG_BYTES + 1) + b"\n"


def pem_not_a_key(directory: Path, config: Path) -> str:
    body = f"-----BEGIN PRIVATE KEY-----\n{SENTINEL}\n-----END PRIVATE KEY-----\n"
    (directory / "pem").write_text(body)
    return key(api_secret=f"{{file: {directory}/pem}}")


def bitmart_memo_dir(directory: Path, config: Path) -> str:
    (directory / "memo.d").mkdir()
    return key(f"memo: {{file: {directory}/memo.d}}", exchange="bitmart")


#: An environment variable name that is really a secret pasted in the wrong place.
UNSET_SENTINEL_NAME = SENTINEL  # letters and digits: a valid, unset variable name

CORPUS: list[Case] = [
    # ------------------------------------------------------------------ YAML syntax
    Case("yaml-tab-indent", "keys:\n\t- name: a\n", "{path}:2:1: invalid YAML"),
    Case(
        "yaml-unclosed-quote",
        key(api_secret=f'"{SENTINEL}'),
        "{path}:",
    ),
    Case("yaml-unclosed-flow", "keys: [\n", "{path}:2:1: invalid YAML"),
    Case("yaml-unclosed-flow-mapping", "audit: {interval: 5m\n" + KEY, "{path}:"),
    Case("yaml-bad-indentation", KEY + "   client: beta\n", "{path}:7:"),
    Case("yaml-stray-colon", key(api_secret=f"{SENTINEL}: pasted-twice"), "{path}:6:"),
    Case("yaml-missing-colon", KEY.replace("client: acme", "client acme"), "{path}:"),
    Case("yaml-undefined-alias", key(api_secret=f"*{SENTINEL}"), "{path}:6:"),
    Case("yaml-unknown-tag", key(api_secret=f"!{SENTINEL} x"), "{path}:6:"),
    Case("yaml-duplicate-anchor", "a: &x 1\nb: &x 2\n" + KEY, "{path}:"),
    Case("yaml-bad-int-tag", top("listen: !!int nope"), "{path}:1:9: invalid YAML: !!int"),
    Case("yaml-bad-timestamp-tag", top("data_dir: !!timestamp 2024-13-45"), "{path}:1:11:"),
    Case("yaml-bad-bool-tag", top("notify: {send_resolved: !!bool maybe}"), "{path}:1:"),
    Case("yaml-bad-binary-tag", key(api_secret=f"!!binary {SENTINEL}!"), "{path}:6:"),
    Case("yaml-python-tag", top("listen: !!python/object:os.system {}"), "{path}:1:"),
    Case("yaml-two-documents", KEY + "---\n" + KEY, "{path}:7:"),
    Case("yaml-directive-only", "%YAML 1.1\n", "{path}:"),
    Case("yaml-empty-file", "", "{path}: the file is empty"),
    Case("yaml-only-comments", "# nothing here\n", "{path}: the file is empty"),
    Case("yaml-null-document", "~\n", "{path}: the file is empty"),
    Case("yaml-top-level-list", "- " + KEY, "{path}: the top level must be a mapping"),
    Case("yaml-top-level-scalar", "hello\n", "{path}: the top level must be a mapping"),
    Case("yaml-top-level-number-key", top("9877: x"), "9877: unknown field"),
    Case("yaml-top-level-null-key", top("~: x"), "None: unknown field"),
    # ------------------------------------------------------------------ nesting, size, aliases
    Case("deep-flow-sequence", top("x: " + deep_flow(100_000)), "{path}:1:"),
    Case("deep-flow-mapping", top("x: " + deep_flow(100_000, "{a: ", "}", "1")), "{path}:1:"),
    Case("deep-block-sequence", top("x:\n  " + "- " * 100_000 + "1"), "{path}:2:"),
    Case(
        "deep-block-mapping",
        top("x:\n" + "".join("  " * (i + 1) + "a:\n" for i in range(40)) + "  " * 41 + "1"),
        "{path}:",
    ),
    Case("deep-in-keys", "keys: " + deep_flow(40) + "\n", "{path}:1:"),
    Case("deep-in-secret", key(api_secret="{env: " + deep_flow(40) + "}"), "{path}:6:"),
    Case("deep-in-labels", key("labels: " + deep_flow(40, "{a: ", "}", "b")), "{path}:7:"),
    Case("billion-laughs-trusted-ips", laughs("trusted_ips"), "{path}:"),
    Case("billion-laughs-keys", laughs("keys"), "{path}:"),
    Case("billion-laughs-merge-keys", merge_laughs(), "{path}:"),
    Case("alias-recursive", "a: &a [*a]\n" + KEY, "{path}:1:"),
    Case("alias-recursive-mapping", "a: &a {b: *a}\n" + KEY, "{path}:1:"),
    Case("file-too-big", too_big, "{path}: larger than 8 MiB"),
    # ------------------------------------------------------------------ encodings
    Case("latin-1-comment", KEY.encode() + b"# caf\xe9\n", "{path}:7:6: not UTF-8"),
    Case("latin-1-in-secret", key(api_secret='"caf\xe9"').encode("latin-1"), "{path}:6:"),
    Case(
        "utf-16-file",
        KEY.encode("utf-16"),
        "{path}:1:1: not UTF-8",
    ),
    Case("nul-byte", KEY.encode() + b"listen: \x00\n", "{path}:7:"),
    Case("control-character", KEY + "data_dir: a\x07b\n", "{path}:7:"),
    Case("lone-surrogate-in-client", key(client='"\\ud800"'), "keys[0].client:"),
    Case("lone-surrogate-in-secret", key(api_secret='"\\ud800x"'), "keys[0].api_secret:"),
    Case("control-escape-in-secret", key(api_secret=f'"\\x07{SENTINEL}"'), "keys[0].api_secret:"),
    # ------------------------------------------------------------------ types
    Case("keys-not-a-list", "keys: 5\n", "keys:"),
    Case("keys-item-not-a-mapping", "keys: [acme]\n", "keys[0]:"),
    Case("keys-empty", "keys: []\n", "keys: at least one key"),
    Case("keys-missing", "listen: 0.0.0.0:9877\n", "keys:"),
    Case("audit-not-a-mapping", top("audit: 5m"), "audit:"),
    Case("log-level-unknown", top("log: {level: verbose}"), "log.level:"),
    Case("log-format-unknown", top("log: {format: xml}"), "log.format:"),
    Case("log-not-a-mapping", top("log: [json]"), "log:"),
    Case("listen-a-number", top("listen: 9877"), "listen:"),
    Case("listen-port-too-big", top("listen: 0.0.0.0:70000"), "listen:"),
    Case("listen-no-port", top("listen: 0.0.0.0"), "listen:"),
    Case("data-dir-a-list", top("data_dir: [a]"), "data_dir:"),
    Case("data-dir-nul", top('data_dir: "a\\0b"'), "data_dir:"),
    Case("trusted-ips-not-a-list", top("trusted_ips: 10.0.0.1"), "trusted_ips:"),
    Case("trusted-ip-a-number", top("trusted_ips: [10]"), "trusted_ips[0]:"),
    Case("trusted-ip-scoped-ipv6", top("trusted_ips: ['fe80::1%eth0']"), "trusted_ips[0]:"),
    Case("trusted-ip-host-bits", top("trusted_ips: [10.0.0.1/8]"), "trusted_ips[0]:"),
    Case("trusted-ip-garbage", top("trusted_ips: [10.0.0.1, nope]"), "trusted_ips[1]:"),
    Case("policies-a-list", top("policies: [a]"), "policies:"),
    Case("policy-require-a-string", top("policies: {market-maker: {require: read}}"), "policies."),
    Case(
        "policy-forbid-a-list", top("policies: {market-maker: {forbid: [withdraw]}}"), "policies."
    ),
    Case(
        "policy-unknown-permission",
        top("policies: {market-maker: {require: [read, trade]}}"),
        "policies.market-maker.require[1]:",
    ),
    Case(
        "policy-severity-fatal",
        top("policies: {market-maker: {forbid: {futures_trade: fatal}}}"),
        "policies.market-maker.forbid.futures_trade:",
    ),
    Case(
        "policy-forbid-withdraw",
        top("policies: {market-maker: {forbid: {withdraw: critical}}}"),
        "policies.market-maker.forbid:",
    ),
    Case(
        "policy-required-and-forbidden",
        top("policies: {market-maker: {require: [read], forbid: {read: warning}}}"),
        "policies.market-maker:",
    ),
    Case(
        "policy-bool-a-number",
        top("policies: {market-maker: {require_ip_restriction: 1}}"),
        "policies.market-maker.require_ip_restriction: expected true or false",
    ),
    Case(
        "policy-bool-a-word",
        top("policies: {market-maker: {require_ip_restriction: maybe}}"),
        "policies.market-maker.require_ip_restriction:",
    ),
    Case("policy-unknown-field", top("policies: {market-maker: {requires: [read]}}"), "policies."),
    Case("default-policy-missing", top("default_policy: nope"), "default_policy:"),
    Case("key-policy-missing", key("policy: nope"), "keys[0].policy:"),
    Case("notify-bool-a-number", top("notify: {send_resolved: 0}"), "notify.send_resolved:"),
    Case("notify-urls-a-string", top("notify: {urls: 'json://x'}"), "notify.urls:"),
    Case("notify-url-a-number", top("notify: {urls: [5]}"), "notify.urls[0]:"),
    Case("notify-url-unknown-scheme", top("notify: {urls: ['slak://a/b/c']}"), "notify.urls[0]:"),
    Case("notify-unknown-field", top("notify: {url: ['json://x']}"), "notify.url:"),
    Case("labels-a-list", key("labels: [eu]"), "keys[0].labels:"),
    Case("label-value-a-number", key("labels: {tier: 1}"), "keys[0].labels.tier:"),
    Case("label-name-reserved", key("labels: {key: x}"), "keys[0].labels:"),
    Case("label-name-invalid", key("labels: {'desk-eu': x}"), "keys[0].labels:"),
    Case("key-name-a-number", key(name="5"), "keys[0].name:"),
    Case("key-name-space", key(name="'acme main'"), "keys[0].name:"),
    Case("key-name-duplicate", KEY + KEY.removeprefix("keys:\n"), "keys[1].name:"),
    Case("key-client-empty", key(client="''"), "keys[0].client:"),
    Case("key-client-missing", KEY.replace("    client: acme\n", ""), "keys[0].client:"),
    Case("key-exchange-a-number", key(exchange="5"), "keys[0].exchange:"),
    Case("key-exchange-unknown", key(exchange="kraken2"), "keys[0].exchange:"),
    Case("key-unknown-field", key("api_secert: x"), "keys[0].api_secert:"),
    Case(
        "kucoin-key-version-4",
        key("passphrase: {env: KMC_SECRET}", "key_version: 4", exchange="kucoin"),
        "keys[0].key_version:",
    ),
    Case(
        "kucoin-key-version-true",
        key("passphrase: {env: KMC_SECRET}", "key_version: true", exchange="kucoin"),
        "keys[0].key_version:",
    ),
    Case("htx-uid-letters", key("uid: 'abc'", exchange="htx"), "keys[0].uid:"),
    Case("bitget-passphrase-missing", key(exchange="bitget"), "keys[0].passphrase:"),
    Case("binance-key-type-mismatch", key("key_type: rsa"), "keys[0].key_type:"),
    Case("kraken-secret-not-base64", key(exchange="kraken"), "keys[0].api_secret:"),
    Case("coinbase-key-name-shape", key(exchange="coinbase"), "keys[0].api_key:"),
    Case("unknown-top-level-field", top("trusted_ip: []"), "trusted_ip: unknown field"),
    Case("unknown-exchange-section", top("exchanges: {binanse: {}}"), "exchanges.binanse:"),
    # ------------------------------------------------------------------ ranges and durations
    Case("interval-inf", top("audit: {interval: .inf}"), "audit.interval:"),
    Case("interval-minus-inf", top("audit: {interval: -.inf}"), "audit.interval:"),
    Case("interval-nan", top("audit: {interval: .nan}"), "audit.interval:"),
    Case("interval-huge-days", top("audit: {interval: 99999999999d}"), "audit.interval:"),
    Case("interval-beyond-scheduler", top("audit: {interval: 10000000d}"), "audit.interval:"),
    Case("interval-3651d", top("audit: {interval: 3651d}"), "audit.interval: '3651d' is longer"),
    Case("interval-huge-integer", top(f"audit: {{interval: {10**30}}}"), "audit.interval:"),
    Case("interval-huge-float", top("audit: {interval: 1.0e+400}"), "audit.interval:"),
    Case("interval-many-digits", top("audit: {interval: " + "9" * 400 + "d}"), "audit.interval:"),
    Case("interval-negative", top("audit: {interval: -5}"), "audit.interval:"),
    Case("interval-zero", top("audit: {interval: 0s}"), "audit.interval:"),
    Case("interval-a-bool", top("audit: {interval: true}"), "audit.interval:"),
    Case("interval-unit-unknown", top("audit: {interval: 5x}"), "audit.interval:"),
    Case("interval-very-long-text", top("audit: {interval: " + "1s" * 40 + "}"), "audit.interval:"),
    Case("jitter-negative", top("audit: {jitter: -5}"), "audit.jitter:"),
    Case("jitter-not-below-interval", top("audit: {interval: 1m, jitter: 1m}"), "audit:"),
    Case("timeout-zero", top("audit: {timeout: 0s}"), "audit.timeout:"),
    Case("timeout-too-long", top("audit: {timeout: 11m}"), "audit.timeout: must be at most 10m"),
    Case("timeout-negative", top("audit: {timeout: -1}"), "audit.timeout:"),
    Case(
        "recv-window-too-long",
        top("exchanges: {binance: {recv_window: 90s}}"),
        "exchanges.binance.recv_window:",
    ),
    Case(
        "recv-window-zero",
        top("exchanges: {binance: {recv_window: 0s}}"),
        "exchanges.binance.recv_window:",
    ),
    Case(
        "bingx-recv-window-6s",
        top("exchanges: {bingx: {recv_window: 6s}}"),
        "exchanges.bingx.recv_window:",
    ),
    Case(
        "time-sync-interval-zero",
        top("exchanges: {binance: {time_sync_interval: 0s}}"),
        "exchanges.binance.time_sync_interval: must be at least 1s",
    ),
    Case(
        "time-sync-interval-inf",
        top("exchanges: {okx: {time_sync_interval: .inf}}"),
        "exchanges.okx.time_sync_interval:",
    ),
    Case(
        "max-weight-a-bool",
        top("exchanges: {binance: {max_weight_per_minute: true}}"),
        "exchanges.binance.max_weight_per_minute: expected a whole number, not true",
    ),
    Case(
        "max-weight-zero",
        top("exchanges: {binance: {max_weight_per_minute: 0}}"),
        "exchanges.binance.max_weight_per_minute:",
    ),
    Case(
        "max-weight-negative",
        top("exchanges: {kraken: {max_weight_per_minute: -1}}"),
        "exchanges.kraken.max_weight_per_minute:",
    ),
    Case(
        "max-weight-fraction",
        top("exchanges: {binance: {max_weight_per_minute: 1.5}}"),
        "exchanges.binance.max_weight_per_minute:",
    ),
    Case(
        "max-weight-too-big",
        top("exchanges: {binance: {max_weight_per_minute: 10000000}}"),
        "exchanges.binance.max_weight_per_minute:",
    ),
    Case(
        "max-weight-inf",
        top("exchanges: {gate: {max_weight_per_minute: .inf}}"),
        "exchanges.gate.max_weight_per_minute:",
    ),
    Case(
        "max-weight-a-word",
        top("exchanges: {binance: {max_weight_per_minute: lots}}"),
        "exchanges.binance.max_weight_per_minute:",
    ),
    Case(
        "bitget-max-weight-61",
        top("exchanges: {bitget: {max_weight_per_minute: 61}}"),
        "exchanges.bitget.max_weight_per_minute:",
    ),
    Case(
        "review-warning-too-long",
        top("policies: {market-maker: {review_warning: 3651d}}"),
        "policies.market-maker.review_warning:",
    ),
    Case(
        "review-critical-longer-than-warning",
        top("policies: {market-maker: {review_warning: 1d, review_critical: 2d}}"),
        "policies.market-maker:",
    ),
    Case(
        "max-age-zero",
        top("policies: {market-maker: {max_age: 0s}}"),
        "policies.market-maker.max_age: must be more than 0s",
    ),
    Case(
        "policy-interval-below-jitter",
        top("audit: {jitter: 30s}\npolicies: {market-maker: {interval: 10s}}"),
        "policies.market-maker.interval:",
    ),
    Case("key-interval-half-second", key("interval: 500ms"), "keys[0].interval:"),
    Case("reminder-zero", top("notify: {reminder: 0s}"), "notify.reminder:"),
    Case("reminder-inf", top("notify: {reminder: 1.0e+400}"), "notify.reminder:"),
    # ------------------------------------------------------------------ base_url
    Case(
        "base-url-plain-http-remote",
        top("exchanges: {binance: {base_url: 'http://api.binance.com'}}"),
        "exchanges.binance.base_url: plain http to api.binance.com",
    ),
    Case(
        "base-url-http-to-loopback-lookalike",
        top("exchanges: {binance: {base_url: 'http://127.0.0.1.example.com'}}"),
        "exchanges.binance.base_url: plain http",
    ),
    Case(
        "base-url-userinfo",
        top(f"exchanges: {{binance: {{base_url: 'http://user:{SENTINEL}@127.0.0.1'}}}}"),
        "exchanges.binance.base_url: a base URL must not hold a user name or password",
    ),
    Case(
        "base-url-https-userinfo",
        top(f"exchanges: {{okx: {{base_url: 'https://{SENTINEL}@www.okx.com'}}}}"),
        "exchanges.okx.base_url:",
    ),
    Case(
        "base-url-query",
        top(f"exchanges: {{binance: {{base_url: 'https://api.binance.com?key={SENTINEL}'}}}}"),
        "exchanges.binance.base_url: a base URL takes no query",
    ),
    Case(
        "base-url-fragment",
        top("exchanges: {binance: {base_url: 'https://api.binance.com#x'}}"),
        "exchanges.binance.base_url:",
    ),
    Case(
        "base-url-path",
        top("exchanges: {binance: {base_url: 'https://api.binance.com/api'}}"),
        "exchanges.binance.base_url: a base URL takes no path",
    ),
    Case(
        "base-url-ftp",
        top("exchanges: {binance: {base_url: 'ftp://api.binance.com'}}"),
        "exchanges.binance.base_url:",
    ),
    Case(
        "base-url-no-scheme",
        top("exchanges: {binance: {base_url: api.binance.com}}"),
        "exchanges.binance.base_url:",
    ),
    Case(
        "base-url-port-out-of-range",
        top("exchanges: {binance: {base_url: 'https://api.binance.com:99999'}}"),
        "exchanges.binance.base_url:",
    ),
    Case(
        "base-url-no-host",
        top("exchanges: {binance: {base_url: 'https://'}}"),
        "exchanges.binance.base_url:",
    ),
    Case(
        "base-url-unclosed-ipv6",
        top("exchanges: {binance: {base_url: 'https://[::1'}}"),
        "exchanges.binance.base_url: not an http(s) base URL",
    ),
    Case(
        "base-url-a-number",
        top("exchanges: {binance: {base_url: 5}}"),
        "exchanges.binance.base_url:",
    ),
    Case(
        "allow-insecure-http-a-number",
        top("exchanges: {binance: {allow_insecure_http: 1}}"),
        "exchanges.binance.allow_insecure_http:",
    ),
    # ------------------------------------------------------------------ duplicate keys
    Case("duplicate-keys-section", KEY + KEY, "keys: duplicate key (lines 1 and 7)"),
    Case(
        "duplicate-field-in-key",
        KEY + "    name: other\n",
        "keys[0].name: duplicate key (lines 2 and 7)",
    ),
    Case(
        "duplicate-in-flow-mapping",
        top("audit: {interval: 5m, interval: 1m}"),
        "audit.interval: duplicate key (twice on line 1)",
    ),
    Case(
        "duplicate-under-a-secret",
        key(api_secret="{env: KMC_SECRET, env: KMC_KEY}"),
        "keys[0].api_secret: duplicate key",
    ),
    Case(
        "duplicate-secret-as-key",
        key(api_secret=f"{{{SENTINEL}: 1, {SENTINEL}: 2}}"),
        "keys[0].api_secret: duplicate key",
    ),
    Case(
        "duplicate-policy",
        top("policies:\n  mm: {require: [read]}\n  mm: {require: [read, spot_trade]}"),
        "policies.mm: duplicate key (lines 2 and 3)",
    ),
    Case(
        "duplicate-exchange-setting",
        top("exchanges:\n  binance:\n    recv_window: 5s\n    recv_window: 6s"),
        "exchanges.binance.recv_window: duplicate key (lines 3 and 4)",
    ),
    Case("duplicate-label", key("labels: {desk: eu, desk: us}"), "keys[0].labels.desk: duplicate"),
    # ------------------------------------------------------------------ environment overrides
    Case("env-keys-not-json", KEY, "KEYMON_KEYS: not valid JSON", {"KEYMON_KEYS": "notjson"}),
    Case("env-keys-truncated-json", KEY, "KEYMON_KEYS: not valid JSON", {"KEYMON_KEYS": "[{"}),
    Case(
        "env-keys-deep-json",
        KEY,
        "KEYMON_KEYS: not valid JSON: nested more than",
        {"KEYMON_KEYS": deep_flow(50_000)},
    ),
    Case(
        "env-keys-nested-json",
        KEY,
        "KEYMON_KEYS: not valid JSON: nested more than",
        {"KEYMON_KEYS": deep_flow(40)},
    ),
    Case(
        "env-keys-lowercase-name",
        KEY,
        "keymon_keys: not valid JSON",
        {"keymon_keys": "notjson"},
    ),
    Case(
        "env-trusted-ips-not-json",
        KEY,
        "KEYMON_TRUSTED_IPS: not valid JSON",
        {"KEYMON_TRUSTED_IPS": "10.0.0.1"},
    ),
    Case("env-audit-not-json", KEY, "KEYMON_AUDIT: not valid JSON", {"KEYMON_AUDIT": "{interval"}),
    Case("env-log-not-json", KEY, "KEYMON_LOG: not valid JSON", {"KEYMON_LOG": "{}}"}),
    Case(
        "env-exchange-section-not-json",
        KEY,
        "KEYMON_EXCHANGES__BINANCE: not valid JSON",
        {"KEYMON_EXCHANGES__BINANCE": "fast"},
    ),
    Case(
        "env-policies-not-json", KEY, "KEYMON_POLICIES: not valid JSON", {"KEYMON_POLICIES": "[["}
    ),
    Case(
        "env-notify-urls-not-json",
        KEY,
        "KEYMON_NOTIFY__URLS: not valid JSON",
        {"KEYMON_NOTIFY__URLS": "json://hooks.example/x"},
    ),
    Case(
        "env-policy-not-a-mapping",
        KEY,
        "policies.mm:",
        {"KEYMON_POLICIES__MM": "strict"},
    ),
    Case(
        "env-interval-not-a-duration",
        KEY,
        "audit.interval:",
        {"KEYMON_AUDIT__INTERVAL": "5x"},
    ),
    Case("env-jitter-negative", KEY, "audit.jitter:", {"KEYMON_AUDIT__JITTER": "-5s"}),
    Case(
        "env-max-weight-a-word",
        KEY,
        "exchanges.binance.max_weight_per_minute:",
        {"KEYMON_EXCHANGES__BINANCE__MAX_WEIGHT_PER_MINUTE": "true"},
    ),
    Case(
        "env-base-url-plain-http",
        KEY,
        "exchanges.binance.base_url:",
        {"KEYMON_EXCHANGES__BINANCE__BASE_URL": "http://example.com"},
    ),
    Case(
        "env-send-resolved-maybe",
        KEY,
        "notify.send_resolved:",
        {"KEYMON_NOTIFY__SEND_RESOLVED": "maybe"},
    ),
    Case("env-listen-no-port", KEY, "listen:", {"KEYMON_LISTEN": "nope"}),
    Case(
        "env-unknown-field", KEY, "audit.intreval: unknown field", {"KEYMON_AUDIT__INTREVAL": "5m"}
    ),
    Case(
        "env-keys-with-a-secret-as-env-name",
        KEY,
        "keys[0].api_secret:",
        {
            "KEYMON_KEYS": json.dumps(
                [
                    {
                        "name": "a",
                        "client": "c",
                        "exchange": "binance",
                        "api_key": {"env": "KMC_KEY"},
                        "api_secret": {"env": f"sk-live-{SENTINEL}"},
                    }
                ]
            )
        },
    ),
    Case(
        "env-bad-json-and-bad-file",
        top("audit: {interval: 5x}"),
        "audit.interval:",
        {"KEYMON_KEYS": "notjson"},
    ),
    # ------------------------------------------------------------------ secret references
    Case("secret-env-is-the-secret", key(api_secret=f'{{env: "sk-live-{SENTINEL}"}}'), "keys[0]."),
    Case(
        "secret-env-unset-secret-like",
        key(api_secret=f"{{env: {UNSET_SENTINEL_NAME}}}"),
        "keys[0].api_secret: the environment variable named by env: is not set",
    ),
    Case(
        "secret-env-unset",
        key(api_secret="{env: ACME_SECRET_UNSET}"),
        "keys[0].api_secret: environment variable ACME_SECRET_UNSET is not set",
    ),
    Case(
        "secret-env-empty",
        key(api_secret="{env: KMC_EMPTY}"),
        "keys[0].api_secret: environment variable KMC_EMPTY is empty",
        {"KMC_EMPTY": ""},
    ),
    Case(
        "secret-env-control-character",
        key(api_secret="{env: KMC_CONTROL}"),
        "keys[0].api_secret:",
        {"KMC_CONTROL": f"\x01{SENTINEL}"},
    ),
    Case("secret-env-a-list", key(api_secret="{env: [a, b]}"), "keys[0].api_secret:"),
    Case("secret-env-null", key(api_secret="{env: null}"), "keys[0].api_secret:"),
    Case("secret-env-a-number", key(api_key="{env: 12}"), "keys[0].api_key:"),
    Case("secret-mapping-typo", key(api_secret=f"{{evn: {SENTINEL}}}"), "keys[0].api_secret:"),
    Case(
        "secret-env-and-file",
        key(api_secret=f"{{env: KMC_SECRET, file: {SENTINEL}}}"),
        "keys[0].api_secret:",
    ),
    Case("secret-a-list", key(api_secret=f"[{SENTINEL}]"), "keys[0].api_secret:"),
    Case("secret-a-number", key(api_secret="12345"), "keys[0].api_secret:"),
    Case("secret-empty", key(api_secret="''"), "keys[0].api_secret: secret is empty"),
    Case("secret-null", key(api_secret="null"), "keys[0].api_secret:"),
    Case(
        "secret-file-is-the-secret",
        key(api_secret=f"{{file: {SENTINEL}}}"),
        "keys[0].api_secret: cannot read the secret file",
    ),
    Case(
        "secret-file-base64-secret",
        key(api_secret=f"{{file: '/{SENTINEL}+a/b=='}}"),
        "keys[0].api_secret: cannot read the secret file",
    ),
    Case(
        "secret-file-missing",
        key(api_secret="{file: /run/secrets/acme_typo}"),
        "keys[0].api_secret: cannot read secret file /run/secrets/acme_typo",
    ),
    Case("secret-file-directory", secret_dir, "keys[0].api_secret: cannot read secret file"),
    Case("secret-file-unreadable", secret_unreadable, "keys[0].api_secret: cannot read"),
    Case("secret-file-under-a-file", secret_under_a_file, "keys[0].api_secret: cannot read"),
    Case("secret-file-fifo", secret_fifo, "keys[0].api_secret: secret file"),
    Case(
        "secret-file-binary",
        secret_file(b"\x89PNG\r\n\x1a\n\x00\x00\xff" + SENTINEL.encode()),
        "keys[0].api_secret:",
    ),
    Case(
        "secret-file-nul-bytes",
        secret_file(SENTINEL.encode() + b"\x00\x00"),
        "keys[0].api_secret:",
    ),
    Case("secret-file-empty", secret_file(b""), "keys[0].api_secret:"),
    Case("secret-file-only-newline", secret_file(b"\n"), "keys[0].api_secret:"),
    Case(
        "secret-file-too-big",
        secret_file(b"a" * (MAX_SECRET_FILE_BYTES + 1)),
        "keys[0].api_secret:",
    ),
    Case("secret-file-nul-in-path", key(api_secret='{file: "/run/a\\0b"}'), "keys[0].api_secret:"),
    Case("secret-file-a-number", key(api_secret="{file: 5}"), "keys[0].api_secret:"),
    Case("secret-pem-not-a-key", pem_not_a_key, "keys[0].api_secret:"),
    Case(
        "secret-api-key-file-empty",
        secret_file(b"", ref="api_key"),
        "keys[0].api_key:",
    ),
    Case(
        "okx-passphrase-unset",
        key("passphrase: {env: ACME_OKX_PASSPHRASE_UNSET}", exchange="okx"),
        "keys[0].passphrase: environment variable ACME_OKX_PASSPHRASE_UNSET is not set",
    ),
    Case("bitmart-memo-directory", bitmart_memo_dir, "keys[0].memo:"),
    Case(
        "notify-url-env-unset",
        top("notify: {urls: [{env: OPS_NOTIFY_URL_UNSET}]}"),
        "notify.urls[0]: environment variable OPS_NOTIFY_URL_UNSET is not set",
    ),
    Case(
        "notify-url-file-is-the-secret",
        top(f"notify: {{urls: [{{file: 'slack://{SENTINEL}'}}]}}"),
        "notify.urls[0]:",
    ),
    # ------------------------------------------------------------------ the file itself
    Case("config-is-a-directory", config_is_a_directory, "{path}: is a directory"),
    Case("config-unreadable", config_unreadable, "{path}: cannot read"),
    Case("config-under-a-file", config_under_a_file, "{path}: cannot read"),
    Case("config-dangling-link", config_dangling_link, "{path}: no such file"),
]

CONFIG_NAME = "keymon.yaml"


def test_corpus_is_large_and_its_ids_unique() -> None:
    """At least a hundred cases, each with its own id (the id names its directory)."""
    ids = [case.id for case in CORPUS]
    assert len(ids) >= 100
    assert len(set(ids)) == len(ids), sorted({i for i in ids if ids.count(i) > 1})


def materialize(case: Case, directory: Path, config: Path) -> None:
    """Make ``case``'s configuration at ``config`` (side files in ``directory``)."""
    directory.mkdir(parents=True, exist_ok=True)
    content = case.config(directory, config) if callable(case.config) else case.config
    if isinstance(content, str):
        config.write_text(content, encoding="utf-8", errors="surrogatepass")
    elif isinstance(content, bytes):
        config.write_bytes(content)


def case_env(case: Case) -> dict[str, str]:
    """The environment a case runs with: no KEYMON_* but its own."""
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("KEYMON_")}
    return {**env, **BASE_ENV, **case.env}


def problem_lines(stderr: str) -> list[str]:
    """The problems ``validate-config`` printed, without their ``keymon: `` or indent."""
    return [line.strip().removeprefix("keymon: ") for line in stderr.splitlines()]


def assert_clean(output: str, what: str) -> None:
    assert "Traceback" not in output, what
    assert SENTINEL not in output, what
    assert "this is a bug in keymon" not in output, what


@pytest.fixture(scope="module")
def corpus_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Completed]]:
    """Every case through ``python -m keymon validate-config`` (forked real processes)."""
    root = tmp_path_factory.mktemp("corpus")
    requests, paths = [], {}
    for case in CORPUS:
        directory = root / case.id
        config = directory / CONFIG_NAME
        materialize(case, directory, config)
        paths[case.id] = config
        argv = ["validate-config", "--config", str(config)]
        requests.append((case.id, argv, case_env(case), directory))
    results = run_many(requests)
    return {case.id: (paths[case.id], results[case.id]) for case in CORPUS}


@pytest.mark.parametrize("case", CORPUS, ids=[case.id for case in CORPUS])
def test_validate_config_refuses_with_the_location(
    case: Case, corpus_runs: dict[str, tuple[Path, Completed]]
) -> None:
    """Exit 2 (not 1, not a signal), the location on stderr, no traceback, no secret."""
    config, result = corpus_runs[case.id]
    where = case.where.replace("{path}", str(config))
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    assert_clean(result.stdout + result.stderr, case.id)
    assert any(line.startswith(where) for line in problem_lines(result.stderr)), (
        where,
        result.stderr[-2000:],
    )


# ----------------------------------------------------------------------------- at reload


VALID_CONFIG = """\
listen: "127.0.0.1:0"
data_dir: "{data}"
exchanges: {{binance: {{base_url: "https://127.0.0.1:9"}}}}
keys:
  - name: acme-binance-main
    client: acme
    exchange: binance
    api_key: {{env: KMC_KEY}}
    api_secret: {{env: KMC_SECRET}}
"""


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        path.rmdir()


@pytest.fixture
def reload_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[App, Path]]:
    """An App (not started: no HTTP, no scheduler) over a valid file, logging into a buffer."""
    for name in list(os.environ):
        if name.upper().startswith("KEYMON_"):
            monkeypatch.delenv(name)
    for name, value in BASE_ENV.items():
        monkeypatch.setenv(name, value)
    config = tmp_path / CONFIG_NAME
    config.write_text(VALID_CONFIG.format(data=tmp_path / "data"))
    app = App(load(config), watch_interval=3600)
    yield app, config
    app.db.close()


async def test_reload_keeps_the_old_configuration_for_every_case(
    reload_app: tuple[App, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The daemon given each broken file keeps its settings, logs the located problem (never
    the secret) and reports keymon_config_last_reload_success 0; a good file then applies."""
    app, config = reload_app
    old = app.settings
    logs = io.StringIO()
    logging_setup.configure(fmt="json", level="info", stream=logs)
    for case in CORPUS:
        _remove(config)
        materialize(case, tmp_path / "cases" / case.id, config)
        with monkeypatch.context() as patch:
            for name, value in case.env.items():
                patch.setenv(name, value)
            start = logs.tell()
            assert not await app.reload(), case.id
            written = logs.getvalue()[start:]
        assert app.settings is old, case.id
        assert app.registry.get_sample_value("keymon_config_last_reload_success") == 0, case.id
        assert_clean(written, case.id)
        events = [json.loads(line) for line in written.splitlines()]
        (failed,) = [e for e in events if e["event"] == "config_reload_failed"]
        where = case.where.replace("{path}", str(config))
        assert any(p.startswith(where) for p in failed["problems"]), (case.id, failed)
    _remove(config)
    config.write_text(VALID_CONFIG.format(data=tmp_path / "data"))
    assert await app.reload()
    assert app.registry.get_sample_value("keymon_config_last_reload_success") == 1


# ----------------------------------------------------------------------------- real processes

#: Representative cases run as processes started from scratch (not forked).
REPRESENTATIVE = [
    "deep-flow-sequence",
    "deep-block-sequence",
    "billion-laughs-keys",
    "env-keys-not-json",
    "secret-env-is-the-secret",
    "interval-beyond-scheduler",
    "config-is-a-directory",
]
KEYMON = [sys.executable, "-m", "keymon"]
#: Of those, the ones ``keymon check`` is run on too (the plugin convention: 3 UNKNOWN).
CHECKED = ["deep-flow-sequence", "env-keys-not-json", "config-is-a-directory"]


def _case(case_id: str) -> Case:
    (case,) = [c for c in CORPUS if c.id == case_id]
    return case


def _run(argv: list[str], env: Mapping[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*KEYMON, *argv], capture_output=True, text=True, env=env, cwd=cwd, timeout=60, check=False
    )


def test_representative_cases_in_fresh_processes(tmp_path: Path) -> None:
    """``python -m keymon validate-config`` exits 2 (``check``: 3) with the location."""
    jobs = []
    for case_id in REPRESENTATIVE:
        case = _case(case_id)
        config = tmp_path / case.id / CONFIG_NAME
        materialize(case, tmp_path / case.id, config)
        jobs.append((case, config, "validate-config", 2))
        if case_id in CHECKED:
            jobs.append((case, config, "check", 3))
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(
            pool.map(
                lambda job: _run(
                    [job[2], "--config", str(job[1])], case_env(job[0]), job[1].parent
                ),
                jobs,
            )
        )
    for (case, config, command, status), proc in zip(jobs, results, strict=True):
        what = f"{command} {case.id}"
        assert proc.returncode == status, (what, proc.returncode, proc.stderr[-2000:])
        assert_clean(proc.stdout + proc.stderr, what)
        where = case.where.replace("{path}", str(config))
        assert any(line.startswith(where) for line in problem_lines(proc.stderr)), (
            what,
            proc.stderr,
        )


def test_run_refuses_a_broken_file_at_start(tmp_path: Path) -> None:
    """``keymon run`` on a broken file exits 2 with the location, for every kind of problem
    (forked processes: run never gets as far as starting the daemon)."""
    requests, paths = [], {}
    for case in CORPUS[::7]:  # one in seven: every section of the corpus is represented
        directory = tmp_path / case.id
        config = directory / CONFIG_NAME
        materialize(case, directory, config)
        paths[case.id] = config
        requests.append((case.id, ["run", "--config", str(config)], case_env(case), directory))
    results = run_many(requests)
    for case_id, result in results.items():
        where = _case(case_id).where.replace("{path}", str(paths[case_id]))
        assert result.returncode == 2, (case_id, result.stderr[-2000:])
        assert_clean(result.stdout + result.stderr, case_id)
        assert any(line.startswith(where) for line in problem_lines(result.stderr)), case_id


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _reload_success(base: str) -> float | None:
    try:
        text = httpx.get(f"{base}/metrics", timeout=5).text
    except httpx.HTTPError:
        return None
    for line in text.splitlines():
        if line.startswith("keymon_config_last_reload_success "):
            return float(line.split()[1])
    return None


def _failed_at(lines: list[str], start: int, where: str) -> bool:
    """Whether a log line from ``start`` on is a failed reload with a problem at ``where``."""
    for line in lines[start:]:
        if "config_reload_failed" in line:
            event = json.loads(line)
            if any(p.startswith(where) for p in event["problems"]):
                return True
    return False


#: Cases a running ``keymon run`` is given, the segfaulting deep nesting first.
DAEMON_CASES = [
    "deep-flow-sequence",
    "deep-block-sequence",
    "deep-flow-mapping",
    "billion-laughs-merge-keys",
    "duplicate-keys-section",
    "secret-env-is-the-secret",
    "interval-beyond-scheduler",
    "latin-1-comment",
    "config-is-a-directory",
]


def test_running_daemon_survives_broken_files(tmp_path: Path) -> None:
    """A real ``keymon run`` reloaded (SIGHUP) onto each broken file keeps running and serving,
    logs the located problem without the secret, and reports the failed reload."""
    port = _free_port()
    config = tmp_path / CONFIG_NAME
    valid = VALID_CONFIG.format(data=tmp_path / "data").replace("127.0.0.1:0", f"127.0.0.1:{port}")
    config.write_text(valid)
    env = case_env(Case("daemon", "", ""))
    proc = subprocess.Popen(
        [*KEYMON, "run", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    lines: list[str] = []
    stderr = proc.stderr
    assert stderr is not None

    def read() -> None:
        for line in stderr:
            lines.append(line)

    reader = threading.Thread(target=read)
    reader.start()
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _reload_success(base) == 1, timeout=30)
        for case_id in DAEMON_CASES:
            case = _case(case_id)
            _remove(config)
            materialize(case, tmp_path / case.id, config)
            where = case.where.replace("{path}", str(config))
            seen = len(lines)
            proc.send_signal(signal.SIGHUP)
            # The file watcher may reload too (and may have caught the file half-written):
            # wait for a failure that names this case's location.
            wait_until(functools.partial(_failed_at, lines, seen, where), timeout=20)
            assert proc.poll() is None, (case_id, "".join(lines[-20:]))
            assert _reload_success(base) == 0, case_id
            assert httpx.get(f"{base}/healthz", timeout=5).status_code == 200, case_id
        _remove(config)
        config.write_text(valid)
        proc.send_signal(signal.SIGHUP)
        wait_until(lambda: _reload_success(base) == 1, timeout=20)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        finally:
            if proc.poll() is None:
                proc.kill()
            reader.join(timeout=10)
            stderr.close()
            if proc.stdout is not None:
                proc.stdout.close()
    output = "".join(lines)
    assert proc.returncode == 0, output[-3000:]
    assert_clean(output, "keymon run")
