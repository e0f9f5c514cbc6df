"""The Gate simulator against keymon's Gate adapter: the documented states end to end."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest

from keymon.audit import Auditor
from keymon.config import Settings
from keymon.exchanges.gate import GateAdapter
from keymon.model import Reason
from keymon.simulator.gate import DETAIL_PATH, TIME_PATH, GateSimulator, mask, prehash, sign
from tests.conftest import FakeClock

KEY = "c5dcfbf1f3a7d00dfeedbeef"
SECRET = "testsecret"


def test_sign_reproduces_the_derived_vector() -> None:
    text = prehash("GET", "/api/v4/account/detail", "", b"", "1700000000")
    assert sign(SECRET, text).startswith("36948941e0e3da66275b97186e291a6b")


def test_mask_keeps_a_prefix() -> None:
    assert mask(KEY) == "c5dcfbf1f3a7*****"


def _settings() -> Settings:
    key = {"name": "k", "client": "acme", "exchange": "gate", "api_key": KEY, "api_secret": SECRET}
    return Settings(keys=[key], trusted_ips=["127.0.0.1/32"])


async def _audit(sim: GateSimulator, client_ip: str = "127.0.0.1"):  # type: ignore[no-untyped-def]
    s = _settings()
    async with Auditor(s, transport_factory=lambda _n: sim.transport(client_ip)) as auditor:
        return await auditor.audit(s.keys[0])


async def test_guide_key_audits_clean() -> None:
    sim = GateSimulator()
    sim.add_key(KEY, SECRET)
    sim.add_key("ffffffffffff0000", "other", perms=[("wallet", False)])
    result = await _audit(sim)
    assert result.ok, result.error
    assert result.facts is not None
    assert result.facts.ip_list == ("127.0.0.1",)
    assert result.facts.permissions["spot_trade"] is True
    assert result.facts.permissions["withdraw"] is False
    assert not result.findings


async def test_wallet_write_is_withdraw() -> None:
    sim = GateSimulator()
    sim.add_key(KEY, SECRET, perms=[("spot", False), ("wallet", False)])
    result = await _audit(sim)
    assert result.facts is not None
    assert result.facts.permissions["withdraw"] is True


async def test_main_keys_forbidden_leaves_permissions_unknown() -> None:
    sim = GateSimulator()
    sim.add_key(KEY, SECRET)
    sim.main_keys_forbidden = True
    result = await _audit(sim)
    assert result.ok, result.error
    assert result.facts is not None
    assert result.facts.permissions == {}
    assert result.facts.ip_restricted is True


async def test_locked_key_and_last_use_are_shown() -> None:
    """main_keys' ``state`` 2 (locked) is key_locked, with its critical finding; last_access
    is the last use."""
    sim = GateSimulator()
    sim.add_key(KEY, SECRET)
    sim.update_key(KEY, state=2)
    result = await _audit(sim)
    assert result.facts is not None
    assert result.facts.key_locked is True
    assert result.facts.last_used_at is not None
    assert [f.rule for f in result.findings] == ["key_locked"]


async def test_key_without_account_read_is_accepted_not_rejected() -> None:
    """A valid key without the ``account`` permission gets 403 FORBIDDEN on account/detail:
    accepted, liveness only, never key_rejected."""
    sim = GateSimulator()
    sim.add_key(KEY, SECRET, account_read=False)
    result = await _audit(sim)
    assert result.ok, result.error
    assert result.facts is not None
    assert str(result.facts.coverage) == "liveness"


async def test_deleted_key_and_foreign_ip_are_rejected() -> None:
    sim = GateSimulator()
    sim.add_key(KEY, SECRET)
    result = await _audit(sim, client_ip="10.9.9.9")
    assert result.error is not None
    assert result.error.reason is Reason.KEY_REJECTED
    assert result.error.refused_ip == "10.9.9.9"
    sim.delete_key(KEY)
    result = await _audit(sim)
    assert result.error is not None
    assert result.error.reason is Reason.KEY_REJECTED


async def test_adapter_syncs_to_a_skewed_server_clock() -> None:
    """The server's clock is hours away from the local one: the sync corrects the stamp."""
    sim = GateSimulator(clock=lambda: 1_700_000_000.0)
    sim.add_key(KEY, SECRET)
    async with httpx.AsyncClient(transport=sim.transport(), base_url="http://gate.test") as c:
        adapter = GateAdapter(c, _settings().exchanges.gate)
        key = _settings().keys[0]
        facts = await adapter.audit(key)  # type: ignore[arg-type]
    assert facts.ip_restricted is True


def _signed(sim: GateSimulator, stamp: int, path: str = DETAIL_PATH) -> tuple[int, Any]:
    """A signed GET straight through the simulator's handler, stamped ``stamp`` (s)."""
    headers = {
        "KEY": KEY,
        "Timestamp": str(stamp),
        "SIGN": sign(SECRET, prehash("GET", path, "", b"", str(stamp))),
    }
    response = sim.handle("GET", path, "", b"", headers, "127.0.0.1")
    return response.status, json.loads(response.body)


def test_latency_is_the_answer_delay(clock: FakeClock) -> None:
    """Every answer, failed ones included, carries the injected latency as its delay."""
    sim = GateSimulator(clock=clock)
    sim.add_key(KEY, SECRET)
    assert sim.handle("GET", TIME_PATH, "", b"", {}, "127.0.0.1").delay == 0
    sim.latency = 0.25
    assert sim.latency == 0.25
    assert sim.handle("GET", TIME_PATH, "", b"", {}, "127.0.0.1").delay == 0.25
    sim.fail_next(1, 502)
    failed = sim.handle("GET", TIME_PATH, "", b"", {}, "127.0.0.1")
    assert (failed.status, failed.delay) == (502, 0.25)
    with pytest.raises(ValueError, match="latency"):
        sim.latency = -1


async def test_latency_delays_the_transport() -> None:
    """The in-process transport waits out the latency before answering."""
    sim = GateSimulator()
    sim.latency = 0.2
    async with httpx.AsyncClient(transport=sim.transport(), base_url="http://gate.test") as c:
        started = time.monotonic()
        response = await c.get(TIME_PATH)
        elapsed = time.monotonic() - started
    assert response.status_code == 200
    assert elapsed >= 0.2


def test_skew_shifts_spot_time_and_expires_local_stamps(clock: FakeClock) -> None:
    """With the server clock 2 min ahead, spot/time says so and a stamp from the local clock
    is out of the 60 s window: 401 REQUEST_EXPIRED (exchange-apis.md §2.4); a stamp from the
    server's time passes."""
    sim = GateSimulator(clock=clock)
    sim.add_key(KEY, SECRET)
    assert _signed(sim, int(clock.now))[0] == 200
    sim.clock_skew_ms = 120_000
    assert sim.clock_skew_ms == 120_000
    assert sim.server_time_ms() == round(clock.now * 1000) + 120_000
    time_answer = sim.handle("GET", TIME_PATH, "", b"", {}, "127.0.0.1")
    assert json.loads(time_answer.body) == {"server_time": sim.server_time_ms()}
    status, body = _signed(sim, int(clock.now))
    assert (status, body["label"]) == (401, "REQUEST_EXPIRED")
    assert _signed(sim, sim.server_time_ms() // 1000)[0] == 200
    sim.clock_skew_ms = -120_000
    assert _signed(sim, int(clock.now))[1]["label"] == "REQUEST_EXPIRED"


async def test_adapter_syncs_to_the_skew_knob(clock: FakeClock) -> None:
    """keymon's adapter measures the skew on spot/time and signs with the server's time."""
    sim = GateSimulator(clock=clock)
    sim.add_key(KEY, SECRET)
    sim.clock_skew_ms = 3_600_000
    s = _settings()
    async with Auditor(s, transport_factory=lambda _n: sim.transport(), clock=clock) as auditor:
        result = await auditor.audit(s.keys[0])
    assert result.ok, result.error


def test_fault_knobs_validate_their_arguments() -> None:
    """The shared knobs refuse nonsense (the old Gate copies took anything)."""
    sim = GateSimulator()
    with pytest.raises(ValueError, match="fail_next"):
        sim.fail_next(-1)
    with pytest.raises(ValueError, match="fail_next"):
        sim.fail_next(1, 42)
    with pytest.raises(ValueError, match="truncate_next"):
        sim.truncate_next(-1)
