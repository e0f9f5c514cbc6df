"""The daemon over a fleet that mixes every exchange: the demo's keys, each on its simulator.

One :class:`~keymon.app.App` audits the demo fleet (keys on every exchange, in telling states),
and everything an operator sees carries the right exchange: the findings, the metrics and the
notifications.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from keymon.app import App
from keymon.config import load
from keymon.demo import build_simulators, demo_keys, write_config
from tests.notify_receiver import Receiver

#: What each demo key must show: the rules that fire on it.
EXPECTED: dict[str, set[str]] = {
    "acme-binance-main": set(),
    "bravo-binance": {"withdraw_enabled"},
    "charlie-binance": {"ip_unrestricted", "review_deadline"},
    "delta-binance": {"key_rejected"},
    "echo-binance": {"forbidden_permission"},
    "foxtrot-bybit": {"forbidden_permission"},
    "golf-okx": set(),
    "hotel-kucoin": {"untrusted_ip"},
    "india-bitget": {"withdraw_enabled"},
    "juliet-htx": {"ip_unrestricted"},
    "kilo-gate": set(),
    "lima-kraken": {"review_deadline"},
    "mike-bingx": {"ip_unrestricted"},
    "november-coinbase": {"withdraw_enabled"},
    "oscar-mexc": set(),
    "papa-bitmart": {"key_rejected"},
    "quebec-bitrue": set(),
    "romeo-xt": {"withdraw_enabled"},
    "sierra-lbank": set(),
    "tango-coinstore": {"key_rejected"},
    "uniform-biconomy": set(),
    "victor-binance": {"trading_locked"},
    "whiskey-binance": {"trading_lock_risk"},
}


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as rx:
        yield rx


async def test_daemon_labels_findings_metrics_and_notifications_by_exchange(
    tmp_path: Path, receiver: Receiver
) -> None:
    keys = demo_keys(time.time())
    assert {key.name for key in keys} == set(EXPECTED)
    simulators = build_simulators(keys)
    transports = {name: sim.transport() for name, sim in simulators.items()}
    config = write_config(tmp_path, {name: f"https://{name}.test" for name in simulators}, keys)
    data: dict[str, Any] = yaml.safe_load(config.read_text())
    data["notify"] = {"urls": [receiver.url()], "send_resolved": True}
    config.write_text(yaml.safe_dump(data))
    app = App(load(config), transport_factory=transports.get)
    await app.start(serve_http=False, schedule=False)
    try:
        await app.audit_all()
        text = app.render_metrics().decode()
        await app.notifier.deliver_due()
    finally:
        await app.stop()

    exchange_of = {key.name: key.exchange for key in keys}
    firing: dict[str, set[str]] = {name: set() for name in EXPECTED}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = sample.labels.get("key")
            if key is None:
                continue
            # Every per-key series names the key's own exchange.
            assert sample.labels["exchange"] == exchange_of[key], sample
            if sample.name == "keymon_key_finding" and sample.value == 1:
                firing[key].add(sample.labels["rule"])
    assert firing == EXPECTED

    # One message per firing finding, "[SEVERITY] key: rule[permission]", naming the exchange;
    # none for a healthy key.
    messages = {str(m["title"]).split("] ", 1)[1]: str(m["message"]) for m in receiver.delivered}
    for name, rules in EXPECTED.items():
        sent = {
            title.split(": ", 1)[1].split("[")[0]: body
            for title, body in messages.items()
            if title.split(": ", 1)[0] == name
        }
        assert set(sent) == rules, (name, sorted(messages))
        for body in sent.values():
            assert f"exchange {exchange_of[name]}" in body
