"""Hub and spoke in virtual time: one hub server is the hot standby of two sites, each
with its own primary, its own subnet and its own failover relationship, and it serves a
third subnet alone (examples/hub-standby.toml, spoke-a-primary.toml, spoke-b-primary.toml:
100 addresses per site, 20 % reserve, MCLT 300 s, lease 600 s).

Three LANs: site A (primary ``pa``, the hub's interface 192.0.2.3, clients a*), site B
(primary ``pb``, the hub's 203.0.113.3, clients b*), the hub's own LAN (198.51.100.3,
clients c*). The simulator checks its invariants after every step (no address leased
twice, no ACKed lease forgotten); this file adds the MCLT bound per relationship and
"site B stays NORMAL" once it got there.

Timeline: commissioned at t=0 -> both relationships NORMAL and the reserves handed over by
``SETTLED`` -> clients of all three LANs start -> ``pa`` crashes at ``CRASH`` -> the hub
serves site A's clients from site A's reserve with MCLT leases, site B is untouched.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import cache
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest

from tandem.config.schema import Config
from tandem.config.validate import load
from tandem.failover.peer import META_STATE_KEY, FailoverPeer
from tandem.leases.model import BindingState
from tandem.leases.table import lease_key
from tandem.sim import SimClient, Simulation
from tandem.sim.faults import failover_stack
from tandem.sim.hub import (
    HubServer,
    add_client_on,
    add_hub,
    add_lan,
    add_server_on,
    link_relationship,
)
from tandem.sim.server import SimServer
from tandem.sim.trace import Event
from tandem.wire.dhcp import DhcpMessage
from tandem.wire.failover import ServerState

S = ServerState
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
MCLT, LEASE = 300, 600
SETTLED = 400.0  # both relationships in settled NORMAL (as in test_hot_standby.py)
CRASH = 500.0
NET = {"a": IPv4Network("192.0.2.0/24"), "b": IPv4Network("203.0.113.0/24"),
       "c": IPv4Network("198.51.100.0/25")}
HUB_IP = {"a": IPv4Address("192.0.2.3"), "b": IPv4Address("203.0.113.3"),
          "c": IPv4Address("198.51.100.3")}
PRIMARY_IP = {"a": IPv4Address("192.0.2.2"), "b": IPv4Address("203.0.113.2")}
REL = {"a": "site-a", "b": "site-b"}


@cache
def _config(name: str) -> Config:
    return load(EXAMPLES / name)


_primary_stack = failover_stack  # engine + FailoverPeer around its policy (as the service)


def _site(addr: IPv4Address) -> str:
    return next(site for site, net in NET.items() if addr in net)


class HubWorld:
    """The hub, two primaries, clients on three LANs, and the extra checks."""

    def __init__(self, seed: int = 1) -> None:
        self.sim = sim = Simulation(seed)
        lans = {"a": sim.lan, "b": add_lan(sim, "lanB"), "c": add_lan(sim, "lanC")}
        self.lans = lans
        self.pa = sim.add_server("pa", PRIMARY_IP["a"], _config("spoke-a-primary.toml"),
                                 factory=_primary_stack)
        self.pb = add_server_on(sim, lans["b"], "pb", PRIMARY_IP["b"],
                                _config("spoke-b-primary.toml"), factory=_primary_stack)
        self.hub: HubServer = add_hub(sim, "hub", [(lans[s], HUB_IP[s]) for s in "abc"],
                                      _config("hub-standby.toml"))
        link_relationship(sim, self.hub, "site-a", self.pa)
        link_relationship(sim, self.hub, "site-b", self.pb)
        self.primary = {"a": self.pa, "b": self.pb}
        self.clients: dict[str, SimClient] = {}
        self.mclt_checked = 0
        self._pending: list[tuple[SimServer, DhcpMessage, float, float]] = []
        self._b_normal_since: float | None = None
        self.watch_b = True  # "site B stays NORMAL" (off where the hub itself crashes)
        for srv in (self.pa, self.pb, self.hub):
            srv.on_ack.append(self._ack_sent)
        sim.invariants.add_check("MCLT bound", self._mclt_bound)
        sim.invariants.add_check("site B stays NORMAL", self._site_b_normal)

    def client(self, site: str, name: str, at: float) -> SimClient:
        c = add_client_on(self.sim, self.lans[site], name, start_at=at)
        self.clients[name] = c
        return c

    def rel_state(self, site: str) -> ServerState:
        return self.hub.failover.relationship(REL[site]).peer.state

    def primary_state(self, site: str) -> ServerState:
        peer = self.primary[site].peer
        assert isinstance(peer, FailoverPeer)
        return peer.state

    def replies_from(self, server: str, since: float = 0.0) -> list[Event]:
        return [e for e in self.sim.trace.dhcp("tx", src=server, since=since)
                if e.dhcp is not None and e.dhcp.type in ("OFFER", "ACK", "NAK")]

    # -------------------------------------------------------------- extra checks

    def _ack_sent(self, srv: SimServer, msg: DhcpMessage, handled: float) -> None:
        site = _site(msg.yiaddr)
        if site == "c":
            return  # standalone: no partner, no MCLT (checked separately: full leases)
        other = self.hub if srv is not self.hub else self.primary[site]
        known = other.store.leases.get(msg.yiaddr)
        base = 0.0
        if known is not None and lease_key(known) == b"H\x01" + msg.hwaddr:
            base = max(known.tsfp, known.end - 1.0 if known.state is BindingState.ACTIVE else 0.0)
        assert msg.lease_time is not None
        self._pending.append((srv, msg, handled + msg.lease_time, base))

    def _mclt_bound(self, now: float) -> Iterator[str]:
        pending, self._pending = self._pending, []
        for srv, msg, end, base in pending:
            self.mclt_checked += 1
            allowed = MCLT + max(end - (msg.lease_time or 0), base)
            if end > allowed + 1e-6:
                yield f"{srv.name} ACKed {msg.yiaddr} beyond MCLT + partner's knowledge"

    def _site_b_normal(self, now: float) -> Iterator[str]:
        if not self.watch_b or not self.hub.up or self.hub.stack is None:
            return
        state, partner = self.rel_state("b"), self.primary_state("b")
        if self._b_normal_since is None:
            if state is S.NORMAL and partner is S.NORMAL:
                self._b_normal_since = now
            return
        if state is not S.NORMAL or partner is not S.NORMAL:
            yield f"site-b left NORMAL: hub {state.name}, pb {partner.name}"


def settled(seed: int = 1) -> HubWorld:
    w = HubWorld(seed)
    w.sim.run_until(SETTLED)
    return w


def test_both_relationships_reach_normal_and_each_reserve_is_its_own() -> None:
    w = settled()
    for site in "ab":
        assert w.rel_state(site) is S.NORMAL and w.primary_state(site) is S.NORMAL
        assert w.hub.failover.relationship(REL[site]).peer.reserve_counts() == (80, 20)
    backup = [a for a, le in w.hub.store.leases.items() if le.state is BindingState.BACKUP]
    assert sorted(_site(a) for a in backup) == ["a"] * 20 + ["b"] * 20  # none in subnet 3
    assert set(w.hub.store.meta) >= {META_STATE_KEY + "/site-a", META_STATE_KEY + "/site-b"}
    assert META_STATE_KEY not in w.hub.store.meta
    # each link carried only its relationship: nothing was refused on either side
    for site in "ab":
        hub_peer = w.hub.failover.relationship(REL[site]).peer
        primary = w.primary[site].peer
        assert isinstance(primary, FailoverPeer)
        assert hub_peer.stats.updates_rejected == primary.stats.updates_rejected == 0
        assert hub_peer.stats.updates_received == 20  # the 20 reserve moves (BACKUP)


def run_sites(seed: int = 1) -> HubWorld:
    """Settled; two clients per LAN from SETTLED; ``pa`` crashes at CRASH; a new site-A
    client starts after the crash; run until every first lease was renewed or rebound."""
    w = settled(seed)
    for site in "abc":
        for i in (1, 2):
            w.client(site, f"{site}{i}", SETTLED + i)
    w.sim.run_until(CRASH - 1)
    w.before_crash = {  # type: ignore[attr-defined]
        name: c.holds(w.sim.start + CRASH - 1) for name, c in w.clients.items()
    }
    w.reserve_at_crash = {  # type: ignore[attr-defined]
        a for a, le in w.hub.store.leases.items()
        if le.state is BindingState.BACKUP and _site(a) == "a"
    }
    w.sim.at(CRASH, lambda now: w.pa.crash(now), "crash pa")
    w.client("a", "a3", CRASH + 10)
    w.sim.run_until(SETTLED + LEASE + 150)
    return w


@pytest.fixture(scope="module")
def sites() -> HubWorld:
    return run_sites()


def test_each_site_is_served_by_its_primary_and_the_hub_by_itself(sites: HubWorld) -> None:
    w = sites
    held = w.before_crash  # type: ignore[attr-defined]
    for name, b in held.items():
        assert b is not None, f"{name} not bound before the crash"
        site = name[0]
        assert b.address in NET[site]
        want = HUB_IP["c"] if site == "c" else PRIMARY_IP[site]
        assert b.original_server_id == want, name
    for name in ("c1", "c2"):
        assert held[name].lease_s == LEASE  # standalone subnet: the whole lease
    # before the crash the hub answered only its own LAN's clients
    hw = {c.hwaddr: name for name, c in w.clients.items()}
    early = [e for e in w.replies_from("hub") if e.t < CRASH]
    assert early and {hw[e.dhcp.hwaddr][0] for e in early if e.dhcp is not None} == {"c"}
    # the hub learnt site A's and site B's bindings through their own relationships
    for name in ("a1", "a2", "b1", "b2"):
        le = w.hub.store.leases.get(held[name].address)
        assert le is not None and le.state is BindingState.ACTIVE
        assert le.hwaddr == w.clients[name].hwaddr


def test_a_crashed_primary_only_affects_its_relationship(sites: HubWorld) -> None:
    w = sites
    assert w.rel_state("a") is S.COMMUNICATIONS_INTERRUPTED
    assert w.rel_state("b") is S.NORMAL and w.primary_state("b") is S.NORMAL
    assert w._b_normal_since is not None and w._b_normal_since < w.sim.start + SETTLED
    # site B's clients never heard from the hub
    hw = {c.hwaddr: name for name, c in w.clients.items()}
    talked_to = {hw[e.dhcp.hwaddr] for e in w.replies_from("hub") if e.dhcp is not None}
    assert not {n for n in talked_to if n.startswith("b")}
    assert {"a1", "a2", "a3"} <= talked_to  # after the crash, site A's clients did


def test_the_hub_serves_site_a_from_its_reserve_with_mclt_leases(sites: HubWorld) -> None:
    w = sites
    now = w.sim.sched.now
    a3 = w.clients["a3"].holds(now)
    assert a3 is not None and a3.original_server_id == HUB_IP["a"]
    assert a3.address in w.reserve_at_crash  # type: ignore[attr-defined]
    assert a3.lease_s <= MCLT
    for name in ("a1", "a2"):  # rebound to the hub, same address, MCLT leases
        b = w.clients[name].holds(now)
        assert b is not None and b.server_id == HUB_IP["a"]
        assert b.address == w.before_crash[name].address  # type: ignore[attr-defined]
        assert b.lease_s <= MCLT
    hub_acks = [e for e in w.replies_from("hub", since=CRASH) if e.dhcp is not None
                and e.dhcp.type == "ACK" and e.dhcp.yiaddr in NET["a"]]
    assert hub_acks and all(e.dhcp is not None and (e.dhcp.lease_s or 0) <= MCLT
                            for e in hub_acks)
    for name in ("b1", "b2"):  # renewed with their own primary, untouched
        b = w.clients[name].holds(now)
        assert b is not None and b.server_id == PRIMARY_IP["b"]
    assert w.mclt_checked > 0
    assert w.sim.invariants.checks_run > 1000


@pytest.mark.parametrize("seed", [2, 3])
def test_other_seeds_hold_the_invariants(seed: int) -> None:
    w = run_sites(seed)  # the invariants raise inside the run if violated
    assert w.rel_state("a") is S.COMMUNICATIONS_INTERRUPTED and w.rel_state("b") is S.NORMAL
    assert all(c.holds(w.sim.sched.now) is not None for c in w.clients.values())


def test_hub_crash_and_restart_restores_every_relationship() -> None:
    """kill -9 of the hub with clients bound on all three LANs: each relationship restarts
    from its own stored state, both return to NORMAL with their partners, every client keeps
    its address (invariants after every step), and the standalone subnet is served again."""
    w = settled()
    for site in "abc":
        w.client(site, f"{site}1", SETTLED + 1)
    w.sim.run_until(SETTLED + 50)
    before = {n: c.holds(w.sim.sched.now) for n, c in w.clients.items()}
    assert all(b is not None for b in before.values())
    stored = {k: v for k, v in w.hub.store.meta.items() if k.startswith(META_STATE_KEY)}
    assert set(stored) == {META_STATE_KEY + "/site-a", META_STATE_KEY + "/site-b"}
    w.watch_b = False  # the hub's own crash takes site B out of NORMAL on purpose
    w.sim.at(SETTLED + 60, lambda now: w.hub.crash(now), "crash hub")
    w.sim.at(SETTLED + 90, lambda now: w.hub.restart(now), "restart hub")
    w.sim.run_until(SETTLED + 100)
    assert w.hub.lives == 2
    for site in "ab":
        assert w.rel_state(site) is S.NORMAL and w.primary_state(site) is S.NORMAL
        assert w.hub.failover.relationship(REL[site]).peer.reserve_counts()[1] == 20
    w.client("c", "c2", SETTLED + 110)
    w.sim.run_until(SETTLED + LEASE + 100)  # every first lease renewed at least once
    now = w.sim.sched.now
    for name, b in before.items():
        assert b is not None
        got = w.clients[name].holds(now)
        assert got is not None and got.address == b.address, name
    c2 = w.clients["c2"].holds(now)
    assert c2 is not None and c2.server_id == HUB_IP["c"] and c2.lease_s == LEASE
