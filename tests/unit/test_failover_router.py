"""The policy router of a server in several failover relationships: every question goes to
the policy of the subnet it is about, subnets in no relationship are served alone; and
:class:`FailoverSet`, which builds one peer per relationship around one engine."""

from __future__ import annotations

import json
from ipaddress import IPv4Address
from pathlib import Path

import pytest
from _configs import previous_on_startup_timeout

from tandem.config import load
from tandem.dhcp.engine import Engine
from tandem.dhcp.types import RxInfo
from tandem.failover.hot_standby import HotStandbyPolicy
from tandem.failover.peer import META_STATE_KEY
from tandem.failover.policy import Policy, RequestKind, StandalonePolicy
from tandem.failover.relationships import FailoverSet, state_meta_key
from tandem.failover.router import PolicyRouter
from tandem.leases.model import BindingState, Lease
from tandem.sim.server import MemoryStore, build_engine
from tandem.wire.dhcp import DhcpMessage, MessageType
from tandem.wire.failover import ServerState

ROOT = Path(__file__).resolve().parents[2]
HUB = ROOT / "examples" / "hub-standby.toml"
NOW = 1_700_000_000.0
HUB_IP = IPv4Address("198.51.100.200")
RELAY = {1: IPv4Address("192.0.2.1"), 2: IPv4Address("203.0.113.1"), 3: IPv4Address("198.51.100.1")}


class Recorder:
    """A policy that answers as told and records every question."""

    def __init__(self, answer: bool, lease_s: int) -> None:
        self.answer, self.lease_s = answer, lease_s
        self.calls: list[tuple[str, object]] = []

    def may_answer(self, msg: DhcpMessage, kind: RequestKind, now: float) -> bool:
        self.calls.append(("may_answer", kind))
        return self.answer

    def may_allocate(self, lease: Lease, now: float) -> bool:
        self.calls.append(("may_allocate", lease.address))
        return self.answer

    def max_lease_time(self, lease: Lease, desired_s: int, now: float) -> int:
        self.calls.append(("max_lease_time", lease.address))
        return min(desired_s, self.lease_s)

    def lease_changed(self, lease: Lease, now: float) -> None:
        self.calls.append(("lease_changed", lease.address))


def discover(hw: bytes, subnet: int) -> DhcpMessage:
    return DhcpMessage(xid=7, giaddr=RELAY[subnet], chaddr=hw + bytes(10),
                       options={53: bytes((MessageType.DISCOVER,))})


def request(hw: bytes, subnet: int, addr: IPv4Address) -> DhcpMessage:
    return DhcpMessage(xid=8, giaddr=RELAY[subnet], chaddr=hw + bytes(10),
                       options={53: bytes((MessageType.REQUEST,)), 50: addr.packed,
                                54: HUB_IP.packed})


RX = RxInfo(src_ip=IPv4Address("192.0.2.1"), src_port=67, interface="eth0", local_ip=HUB_IP)


def lease(addr: str, sid: int) -> Lease:
    return Lease(IPv4Address(addr), sid, BindingState.ACTIVE, b"\x02" * 6, end=NOW + 60)


# ---------------------------------------------------------------- the router alone


def test_each_lease_question_goes_to_its_subnets_policy() -> None:
    a, b = Recorder(True, 100), Recorder(False, 50)
    router = PolicyRouter()
    router.route([1], a)
    router.route([2, 4], b)
    la, lb, lc = lease("192.0.2.10", 1), lease("203.0.113.10", 2), lease("198.51.100.60", 3)
    assert router.may_allocate(la, NOW) is True
    assert router.may_allocate(lb, NOW) is False
    assert router.may_allocate(lc, NOW) is True  # subnet 3: standalone
    assert router.max_lease_time(la, 600, NOW) == 100
    assert router.max_lease_time(lb, 600, NOW) == 50
    assert router.max_lease_time(lc, 600, NOW) == 600
    for le in (la, lb, lc):
        router.lease_changed(le, NOW)
    assert a.calls == [("may_allocate", la.address), ("max_lease_time", la.address),
                       ("lease_changed", la.address)]
    assert b.calls == [("may_allocate", lb.address), ("max_lease_time", lb.address),
                       ("lease_changed", lb.address)]
    assert router.policy_for_subnet(4) is b
    assert isinstance(router.policy_for_subnet(3), StandalonePolicy)
    assert isinstance(router.policy_for_subnet(None), StandalonePolicy)
    assert router.routed == {1: a, 2: b, 4: b}


def test_may_answer_without_a_subnet_needs_every_policy() -> None:
    a, b = Recorder(True, 100), Recorder(False, 50)
    router = PolicyRouter()
    router.route([1], a)
    assert router.may_answer(discover(b"\x01" * 6, 1), RequestKind.DISCOVER, NOW) is True
    router.route([2], b)
    assert router.may_answer(discover(b"\x01" * 6, 1), RequestKind.DISCOVER, NOW) is False


def test_a_subnet_is_routed_once() -> None:
    router = PolicyRouter()
    router.route([1, 2], StandalonePolicy())
    with pytest.raises(ValueError, match=r"subnet\(s\) \[2\] already routed"):
        router.route([2, 3], StandalonePolicy())
    assert 3 not in router.routed  # nothing of the refused call was applied


# ---------------------------------------------------------------- the engine with a router


def engine_with(policies: dict[int, Policy]) -> Engine:
    router = PolicyRouter()
    for sid, policy in policies.items():
        router.route([sid], policy)
    return Engine(load(HUB), router)


def test_engine_asks_the_policy_of_the_clients_subnet() -> None:
    silent, active = Recorder(False, 300), Recorder(True, 300)
    eng = engine_with({1: silent, 2: active})
    hw = b"\x02\x00\x00\x00\x00\x01"
    out = eng.handle(discover(hw, 1), RX, NOW)
    assert out.replies == [] and eng.stats["drop_policy"] == 1
    assert silent.calls == [("may_answer", RequestKind.DISCOVER)]
    out = eng.handle(discover(hw, 2), RX, NOW)
    (offer,) = out.replies
    assert offer.msg.yiaddr in load(HUB).subnets[1].prefix
    assert offer.msg.lease_time == 300  # site B's policy capped it
    offered = offer.msg.yiaddr
    out = eng.handle(request(hw, 2, offered), RX, NOW)
    assert [r.msg.message_type for r in out.replies] == [MessageType.ACK]
    assert ("lease_changed", offered) in active.calls
    assert not any(c[0] == "lease_changed" for c in silent.calls)
    # subnet 3 is in no relationship: the whole lease time, nobody told
    before = (len(active.calls), len(silent.calls))
    out = eng.handle(discover(b"\x02\x00\x00\x00\x00\x02", 3), RX, NOW)
    (offer3,) = out.replies
    assert offer3.msg.lease_time == 600 and offer3.msg.yiaddr in load(HUB).subnets[2].prefix
    assert (len(active.calls), len(silent.calls)) == before  # no question about subnet 3


# ---------------------------------------------------------------- FailoverSet


def build(store: MemoryStore, previous: bool = True) -> tuple[FailoverSet, list[Engine]]:
    cfg = previous_on_startup_timeout(HUB) if previous else load(HUB)
    engines: list[Engine] = []

    def make_engine(policy: Policy) -> Engine:
        engines.append(build_engine(cfg, policy, store, NOW))
        return engines[-1]

    return FailoverSet(cfg, store, NOW, make_engine), engines


def test_failover_set_one_peer_per_relationship_around_one_engine() -> None:
    store = MemoryStore()
    fs, engines = build(store)
    assert len(engines) == 1 and fs.engine is engines[0]
    assert list(fs.peers) == ["site-a", "site-b"]
    assert [r.subnet_ids for r in fs.relationships] == [(1,), (2,)]
    assert fs.standalone_subnets() == [3]
    assert fs.router is not None and isinstance(engines[0].policy, PolicyRouter)
    routed = fs.router.routed
    assert routed[1] is fs.peers["site-a"].policy and routed[2] is fs.peers["site-b"].policy
    assert state_meta_key("site-a", single=False) == META_STATE_KEY + "/site-a"
    # each peer's pool is its own relationship's subnet only
    assert fs.peers["site-a"].reserve_counts() == (100, 0)
    assert fs.peers["site-b"].reserve_counts() == (100, 0)
    # no partner yet (STARTUP/RECOVER): the hub answers no one of the sites, serves subnet 3
    fs.handle_timer(NOW + 30)
    # each relationship's state under its own key; the single-relationship key unused
    assert set(store.meta) == {META_STATE_KEY + "/site-a", META_STATE_KEY + "/site-b"}
    eng = engines[0]
    for subnet, answered in ((1, False), (2, False), (3, True)):
        out = eng.handle(discover(bytes((2, 0, 0, 0, 1, subnet)), subnet), RX, NOW + 30)
        assert bool(out.replies) is answered, subnet


def test_failover_set_restores_each_relationships_own_state() -> None:
    store = MemoryStore()
    store.meta[META_STATE_KEY + "/site-a"] = json.dumps(
        {"state": int(ServerState.PARTNER_DOWN), "since": NOW - 5000})
    store.meta[META_STATE_KEY + "/site-b"] = json.dumps(
        {"state": int(ServerState.NORMAL), "since": NOW - 5000})
    fs, _ = build(store)
    fs.handle_timer(NOW + 30)  # the startup timer: back to the stored states
    a, b = fs.peers["site-a"], fs.peers["site-b"]
    assert a.state is ServerState.PARTNER_DOWN
    assert b.state is ServerState.COMMUNICATIONS_INTERRUPTED  # NORMAL without its partner
    # Tandem's default ("wait"): only the relationship that was in PARTNER-DOWN resumes.
    fs, _ = build(store, previous=False)
    fs.handle_timer(NOW + 30)
    a, b = fs.peers["site-a"], fs.peers["site-b"]
    assert a.state is ServerState.PARTNER_DOWN
    assert b.state is ServerState.STARTUP


def test_one_relationship_over_every_subnet_keeps_the_old_shape() -> None:
    cfg = previous_on_startup_timeout(ROOT / "examples" / "hot-standby-standby.toml")
    store = MemoryStore()
    engines: list[Engine] = []

    def make_engine(policy: Policy) -> Engine:
        engines.append(build_engine(cfg, policy, store, NOW))
        return engines[-1]

    fs = FailoverSet(cfg, store, NOW, make_engine)
    assert fs.router is None
    assert isinstance(engines[0].policy, HotStandbyPolicy)
    fs.handle_timer(NOW + 30)
    assert set(store.meta) == {META_STATE_KEY}  # the key every existing store has


def test_lease_updates_stay_in_their_relationship() -> None:
    store = MemoryStore()
    fs, engines = build(store)
    eng = engines[0]
    for sid, addr in ((1, "192.0.2.150"), (2, "203.0.113.150"), (3, "198.51.100.60")):
        le = lease(addr, sid)
        eng.apply(le, NOW)
        eng.policy.lease_changed(le, NOW)
    a, b = fs.peers["site-a"], fs.peers["site-b"]
    assert [c.lease.address for c in a.policy.outbound] == [IPv4Address("192.0.2.150")]
    assert [c.lease.address for c in b.policy.outbound] == [IPv4Address("203.0.113.150")]
