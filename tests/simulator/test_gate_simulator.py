"""The Gate simulator against keymon's Gate adapter: the documented states end to end."""

from __future__ import annotations

import httpx

from keymon.audit import Auditor
from keymon.config import Settings
from keymon.exchanges.gate import GateAdapter
from keymon.model import Reason
from keymon.simulator.gate import GateSimulator, mask, prehash, sign

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
