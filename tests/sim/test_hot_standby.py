"""hot-standby.md expectations 1.1-4.3 in virtual time, on the reference configuration
(examples/hot-standby-*.toml: 100 addresses, 20 % reserve, MCLT 300 s, lease 600 s).

Two real engines with :class:`tandem.failover.peer.FailoverPeer` talk the failover protocol
over the simulator's peer link; RFC 2131 clients on the LAN. The simulator checks its safety
invariants after every step (no address leased twice, no ACKed lease forgotten) and this file
adds the MCLT bound: no ACK ends later than MCLT beyond what the partner has acknowledged (the
PET / lease end the partner has committed for that client), or beyond the time of the ACK.

Timeline: the pair is commissioned at t=0 (both stores empty). A first run goes through
RECOVER -> RECOVER-DONE -> NORMAL, and the first MCLT of that NORMAL is treated as "after
recovery" (grants capped at the MCLT, mclt.in_recovery_caution); clients therefore start at
``SETTLED`` (t=400), when the pair is in settled NORMAL.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from functools import cache
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from tandem.config.schema import Config
from tandem.config.validate import load
from tandem.errors import DecodeError
from tandem.failover.hot_standby import HotStandbyPolicy
from tandem.failover.peer import FailoverPeer
from tandem.leases.model import BindingState
from tandem.leases.table import lease_key
from tandem.sim import SimClient, Simulation
from tandem.sim.faults import failover_stack
from tandem.sim.server import SimServer
from tandem.sim.trace import Event
from tandem.wire.dhcp import DhcpMessage
from tandem.wire.failover import MessageType, ServerState, decode
from tandem.wire.framing import FrameBuffer

S = ServerState
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
PRIMARY_IP = IPv4Address("192.0.2.2")
STANDBY_IP = IPv4Address("192.0.2.3")
MCLT = 300
LEASE = 600
SETTLED = 400.0  # run time when the commissioned pair is in settled NORMAL
_FIRST = int(IPv4Address("192.0.2.100"))
POOL = [IPv4Address(a) for a in range(_FIRST, _FIRST + 100)]  # the shared scope


def _config(name: str) -> Config:
    return load(EXAMPLES / name)


_factory = failover_stack  # engine + FailoverPeer around its policy, as the service builds them


def _describe(data: bytes) -> str:
    fb = FrameBuffer()
    try:
        names = []
        for frame in fb.feed(data):
            msg = decode(frame)
            t = msg.msg_type
            names.append(t.name if isinstance(t, MessageType) else str(t))
        return " ".join(names) or f"{len(data)} B (partial)"
    except DecodeError as exc:
        return f"{len(data)} B ({exc})"


class Pair:
    """The reference pair in a simulation, with the MCLT-bound check registered."""

    def __init__(self, seed: int = 1) -> None:
        self.sim = Simulation(seed)
        self.p = self.sim.add_server("p", PRIMARY_IP, _config("hot-standby-primary.toml"),
                                     factory=_factory)
        self.s = self.sim.add_server("s", STANDBY_IP, _config("hot-standby-standby.toml"),
                                     factory=_factory)
        self.link = self.sim.link_peers("p", "s", describe=_describe)
        self.partner = {"p": self.s, "s": self.p}
        self.mclt_checked = 0
        self._pending: list[tuple[SimServer, DhcpMessage, float, float]] = []
        for srv in (self.p, self.s):
            srv.on_ack.append(self._ack_sent)
        self.sim.invariants.add_check("MCLT bound", self._mclt_bound)

    # ------------------------------------------------------------------ MCLT bound

    def _ack_sent(self, srv: SimServer, msg: DhcpMessage, handled: float) -> None:
        """Measure, when the ACK leaves, what the partner has committed for this client."""
        lease_s = msg.lease_time
        if lease_s is None:
            return
        other = self.partner[srv.name]
        known = other.store.leases.get(msg.yiaddr)
        base = 0.0
        key = b"H\x01" + msg.hwaddr
        if known is not None and lease_key(known) == key:
            # lease ends travel rounded up to whole seconds: count the end 1 s early
            base = max(known.tsfp, known.end - 1.0 if known.state is BindingState.ACTIVE else 0.0)
        self._pending.append((srv, msg, handled + lease_s, base))

    def _mclt_bound(self, now: float) -> Iterator[str]:
        pending, self._pending = self._pending, []
        for srv, msg, end, base in pending:
            self.mclt_checked += 1
            handled = end - (msg.lease_time or 0)
            allowed = MCLT + max(handled, base)
            if end > allowed + 1e-6:
                yield (
                    f"{srv.name} ACKed {msg.yiaddr} until {end - self.sim.start:.3f}, beyond "
                    f"MCLT + partner's knowledge ({allowed - self.sim.start:.3f})"
                )

    # ------------------------------------------------------------------ helpers

    def peer(self, name: str) -> FailoverPeer:
        srv = self.sim.servers[name]
        peer = srv.peer
        assert isinstance(peer, FailoverPeer), f"{name} is down"
        return peer

    def state(self, name: str) -> ServerState:
        return self.peer(name).state

    def client(self, name: str, at: float) -> SimClient:
        return self.sim.add_client(name, start_at=at)

    def operator(self, name: str, t: float, command: str) -> None:
        """Run an operator command on server ``name`` at run time ``t`` (the step ends like
        any other: changes committed, STATE sent, timers re-armed)."""
        srv = self.sim.servers[name]

        def run(now: float) -> None:
            getattr(self.peer(name), command)(now)
            srv.peer_receive(b"", now)  # ends the step through the server (commit, send, arm)

        self.sim.at(t, run, f"operator {command} on {name}")

    def acks(self, client: str, since: float | None = None) -> list[Event]:
        return self.sim.trace.answers_to(client, "ACK", since=since)

    def replies_from(self, server: str, since: float = 0.0) -> list[Event]:
        return [
            e
            for e in self.sim.trace.dhcp("tx", src=server, since=since)
            if e.dhcp is not None and e.dhcp.type in ("OFFER", "ACK", "NAK")
        ]


def settled_pair(seed: int = 1) -> Pair:
    pair = Pair(seed)
    pair.sim.run_until(SETTLED)
    assert pair.state("p") is S.NORMAL and pair.state("s") is S.NORMAL
    return pair


def _run(pair: Pair, t: float) -> None:
    pair.sim.run_until(t)


# ------------------------------------------------------------------------------------------
# The commissioned pair
# ------------------------------------------------------------------------------------------


def test_commissioned_pair_reaches_normal_and_the_standby_holds_the_reserve() -> None:
    pair = settled_pair()
    # 20 % of the 100 free addresses are the standby's reserve, on both sides.
    assert pair.peer("p").reserve_counts() == (80, 20)
    assert pair.peer("s").reserve_counts() == (80, 20)
    backup = {a for a, le in pair.s.store.leases.items() if le.state is BindingState.BACKUP}
    assert len(backup) == 20 and backup <= set(POOL)
    assert pair.p.store.meta["failover.state"]  # the state is persisted


# ------------------------------------------------------------------------------------------
# 1. Normal operation
# ------------------------------------------------------------------------------------------

T0 = SETTLED  # the client starts here


def normal_pair(until: float) -> Pair:
    pair = settled_pair()
    pair.client("c1", T0)
    _run(pair, until)
    return pair


def test_1_1_discover_is_answered_by_the_primary_only() -> None:
    pair = normal_pair(T0 + 10)
    offers = pair.sim.trace.answers_to("c1", "OFFER")
    assert offers and all(e.src == "p" for e in offers)
    assert pair.replies_from("s") == []  # the standby sends nothing
    assert pair.sim.trace.dhcp("rx", type="DISCOVER", node="s")  # although it heard it


def test_1_2_request_is_acked_by_the_primary_only() -> None:
    pair = normal_pair(T0 + 10)
    acks = pair.acks("c1")
    assert len(acks) == 1 and acks[0].src == "p"
    assert pair.sim.trace.dhcp("rx", type="REQUEST", node="s")
    assert pair.replies_from("s") == []


def test_1_3_first_lease_is_limited_to_the_mclt() -> None:
    pair = normal_pair(T0 + 10)
    (ack,) = pair.acks("c1")
    assert ack.dhcp is not None
    assert ack.dhcp.lease_s == MCLT and ack.dhcp.t1_s == MCLT // 2
    assert pair.mclt_checked >= 1


def test_1_4_the_binding_goes_to_the_standby_which_acknowledges_it() -> None:
    pair = normal_pair(T0 + 10)
    c1 = pair.sim.clients["c1"]
    addr = c1.address
    assert addr is not None
    mine = pair.p.store.leases[addr]
    theirs = pair.s.store.leases[addr]
    assert theirs.state is BindingState.ACTIVE and lease_key(theirs) == c1.key
    assert theirs.end == math.ceil(mine.end)  # whole seconds on the wire, rounded up
    # The primary holds the standby's acknowledgement: the PET it sent (now + 600 + 150).
    assert mine.tsfp == pytest.approx(mine.cltt + LEASE + MCLT / 2, abs=1.0)
    assert theirs.tsfp == mine.tsfp  # the standby stored the same PET
    assert pair.peer("p").stats.updates_acked >= 21  # 20 reserve moves + this lease


def test_1_5_t1_renewal_by_unicast_gets_the_full_lease_and_is_sent_again() -> None:
    pair = normal_pair(T0 + MCLT / 2 + 5)
    renewals = pair.sim.trace.dhcp("tx", type="REQUEST", src="c1", state="RENEWING")
    assert renewals and renewals[0].unicast and renewals[0].dst == "p"
    assert renewals[0].t == pytest.approx(T0 + MCLT / 2, abs=0.1)
    acks = pair.acks("c1")
    assert [a.src for a in acks] == ["p", "p"]
    assert acks[1].dhcp is not None and acks[1].dhcp.lease_s == LEASE
    assert pair.replies_from("s") == []
    addr = pair.sim.clients["c1"].address
    assert addr is not None
    renewed_end = pair.sim.start + acks[1].t + LEASE
    assert pair.s.store.leases[addr].end == pytest.approx(renewed_end, abs=1.0)


# ------------------------------------------------------------------------------------------
# 2. Primary failure before the MCLT has passed
# ------------------------------------------------------------------------------------------

CRASH = T0 + 20  # the primary dies (kill -9) 20 s after c1's first lease
T_B = CRASH + 10  # a new client arrives while the primary is down


def outage_pair(until: float, *, new_client: bool = True) -> Pair:
    pair = settled_pair()
    pair.client("c1", T0)
    if new_client:
        pair.client("c2", T_B)
    pair.sim.at(CRASH, lambda now: pair.p.crash(now), "crash primary")
    _run(pair, until)
    return pair


def test_2_1_the_standby_notices_the_lost_contact() -> None:
    pair = outage_pair(CRASH + 1, new_client=False)
    assert pair.state("s") is S.COMMUNICATIONS_INTERRUPTED
    changed = [r for r in pair.peer("s").m.records if r.to_state is S.COMMUNICATIONS_INTERRUPTED]
    assert changed and changed[-1].at - pair.sim.start == pytest.approx(CRASH, abs=0.01)


def test_2_2_a_new_client_gets_a_reserve_address_from_the_standby_for_the_mclt() -> None:
    pair = outage_pair(T_B + 10)
    offers = pair.sim.trace.answers_to("c2", "OFFER")
    acks = pair.acks("c2")
    assert offers and all(e.src == "s" for e in offers)
    assert len(acks) == 1 and acks[0].src == "s" and acks[0].dhcp is not None
    assert acks[0].dhcp.lease_s == MCLT
    addr = acks[0].dhcp.yiaddr
    # From the reserve: the primary's (crashed) store still has it as the standby's BACKUP.
    assert pair.p.store.leases[addr].state is BindingState.BACKUP
    assert pair.s.store.leases[addr].state is BindingState.ACTIVE


def test_2_3_primary_client_rebinds_at_t2_and_the_standby_extends_the_same_address() -> None:
    t2 = T0 + MCLT * 7 // 8
    pair = outage_pair(t2 + 5, new_client=False)
    c1 = pair.sim.clients["c1"]
    first = pair.acks("c1")[0]
    assert first.src == "p" and first.dhcp is not None
    renew = pair.sim.trace.dhcp("tx", type="REQUEST", src="c1", state="RENEWING")
    assert renew and all(e.unicast and e.dst == "p" for e in renew)  # unanswered: p is down
    rebind = pair.sim.trace.dhcp("tx", type="REQUEST", src="c1", state="REBINDING")
    assert rebind and not rebind[0].unicast
    assert rebind[0].t == pytest.approx(t2, abs=1.0)
    acks = pair.acks("c1", since=CRASH)
    assert len(acks) == 1 and acks[0].src == "s" and acks[0].dhcp is not None
    assert acks[0].dhcp.yiaddr == first.dhcp.yiaddr == c1.address
    assert acks[0].dhcp.lease_s == MCLT


def test_2_4_standby_ignores_unicast_renewals_and_answers_the_t2_broadcast() -> None:
    t1, t2 = T_B + MCLT / 2, T_B + MCLT * 7 / 8
    pair = outage_pair(t2 + 10)
    first = pair.acks("c2")[0]
    assert first.src == "s"
    renew = pair.sim.trace.dhcp("tx", type="REQUEST", src="c2", state="RENEWING")
    assert renew and all(e.unicast and e.dst == "s" for e in renew)
    assert pair.sim.trace.dhcp("rx", type="REQUEST", node="s", src="c2", since=t1 - 2)
    assert renew[0].t == pytest.approx(t1, abs=2.0)
    acks = pair.acks("c2")
    assert len(acks) == 2  # no answer to any RENEWING; one to the rebind
    assert acks[1].t >= t2 - 2.0 and acks[1].src == "s" and acks[1].dhcp is not None
    assert acks[1].dhcp.lease_s == MCLT
    assert first.dhcp is not None and acks[1].dhcp.yiaddr == first.dhcp.yiaddr
    assert pair.state("s") is S.COMMUNICATIONS_INTERRUPTED


# ------------------------------------------------------------------------------------------
# 3. Primary still down after the MCLT, and while it recovers; 4. after recovery
# ------------------------------------------------------------------------------------------
#
# One timeline (run once, queried by each test):
#   400  c1 gets its lease from the primary (300 s), renews at 550 (600 s, T1 850, T2 1075)
#   600  the primary crashes (kill -9); the standby goes COMMUNICATIONS-INTERRUPTED
#   610  the operator puts the standby in PARTNER-DOWN (all free usable from 910)
#   620  c2..c21 take the standby's 20 reserve addresses
#   700  c22 finds the reserve empty and must wait for 910
#  1000  the primary restarts: RECOVER (UPDREQ), UPDDONE; it went down (~600) more than an
#        MCLT ago, so no RECOVER-WAIT: RECOVER-DONE, then both NORMAL (~1000); the first MCLT
#        of that NORMAL grants the MCLT (until ~1300)
#  ~1019 c1, which got no answer to its RENEWING retransmissions since T1 (850), is renewed by
#        the returned primary (3.2)
#  1350  c23, a new client, after recovery

LONG_CRASH = 600.0
PARTNER_DOWN_AT = 610.0
RESERVE_CLIENTS = [f"c{i}" for i in range(2, 22)]
RESTART = 1000.0
END_LONG = 2200.0


@cache
def long_outage() -> Pair:
    pair = settled_pair()
    pair.client("c1", T0)
    pair.sim.at(LONG_CRASH, lambda now: pair.p.crash(now), "crash primary")
    pair.operator("s", PARTNER_DOWN_AT, "partner_down")
    for name in RESERVE_CLIENTS:
        pair.client(name, PARTNER_DOWN_AT + 10)
    pair.client("c22", 700)
    pair.sim.at(RESTART, lambda now: pair.p.restart(now), "restart primary")
    pair.client("c23", 1350)
    _run(pair, END_LONG)
    return pair


def _normal_again(pair: Pair) -> float:
    """Run time at which the primary re-entered NORMAL after its restart."""
    recs = [r for r in pair.peer("p").m.records if r.to_state is S.NORMAL]
    assert recs, "the primary never got back to NORMAL"
    return recs[-1].at - pair.sim.start


def test_3_1_after_mclt_in_partner_down_the_standby_uses_any_free_address() -> None:
    pair = long_outage()
    pd = [r for r in pair.peer("s").m.records if r.to_state is S.PARTNER_DOWN]
    assert len(pd) == 1 and pd[0].input.value == "operator-partner-down"
    assert pd[0].at - pair.sim.start == pytest.approx(PARTNER_DOWN_AT)
    # The 20 reserve clients emptied the reserve (all from 192.0.2.100-119).
    reserve = {pair.acks(c)[0].dhcp.yiaddr for c in RESERVE_CLIENTS}  # type: ignore[union-attr]
    assert reserve == set(POOL[:20])
    # c22 got nothing before PARTNER-DOWN + MCLT, then an address outside the reserve.
    usable = PARTNER_DOWN_AT + MCLT
    assert pair.sim.trace.answers_to("c22", "OFFER")[0].t >= usable
    first = pair.acks("c22")[0]
    assert first.src == "s" and first.dhcp is not None
    assert first.t >= usable and first.dhcp.yiaddr not in reserve
    assert first.dhcp.lease_s == MCLT
    assert pair.sim.trace.dhcp("tx", type="DISCOVER", src="c22", since=700)[0].t < usable - 100


def test_3_2_after_a_long_outage_the_returned_primary_renews_its_own_client() -> None:
    # Section-3 setting: the primary down 600-1000, the standby in PARTNER-DOWN from 610 (all
    # free addresses usable from 910). c1 (renewed at 550 for 600 s: T1 850, T2 1075) gets no
    # answer to its unicast RENEWING while the primary is down; once the primary is back it
    # renews c1 by unicast, before T2, with the MCLT.
    pair = long_outage()
    back = _normal_again(pair)
    assert back < RESTART + 30  # no RECOVER-WAIT: it went down more than an MCLT ago
    states = [r.to_state for r in pair.peer("p").m.records if r.at - pair.sim.start >= RESTART]
    assert S.RECOVER in states and S.RECOVER_WAIT not in states
    acks = pair.acks("c1")
    assert all(a.src == "p" for a in acks)
    assert acks[1].t == pytest.approx(550, abs=1.0) and acks[1].dhcp is not None
    assert acks[1].dhcp.lease_s == LEASE
    renewals = pair.sim.trace.dhcp("tx", type="REQUEST", src="c1", state="RENEWING", since=800)
    unanswered = [e for e in renewals if e.t < RESTART]
    assert unanswered and all(e.unicast and e.dst == "p" for e in unanswered)
    renewal = next(a for a in acks if a.t > RESTART)
    assert renewal.t < 1075 and renewal.unicast and renewal.state == "RENEWING"
    assert renewal.dhcp is not None and renewal.dhcp.lease_s == MCLT
    assert renewal.dhcp.yiaddr == acks[0].dhcp.yiaddr  # type: ignore[union-attr]
    rebinds = pair.sim.trace.dhcp("tx", type="REQUEST", src="c1", state="REBINDING")
    assert [e for e in rebinds if e.t < renewal.t] == []  # never had to fall back to T2


def test_3_2_after_a_short_outage_the_returned_primary_renews_its_own_client() -> None:
    # A short outage (no partner-down): c1's T1 (850) falls after the primary is back (700).
    pair = settled_pair()
    pair.client("c1", T0)
    pair.sim.at(LONG_CRASH, lambda now: pair.p.crash(now), "crash primary")
    pair.sim.at(700, lambda now: pair.p.restart(now), "restart primary")
    _run(pair, 900)
    assert pair.state("p") is S.NORMAL and pair.state("s") is S.NORMAL
    acks = pair.acks("c1")
    assert [a.src for a in acks] == ["p", "p", "p"]
    assert acks[1].dhcp is not None and acks[1].dhcp.lease_s == LEASE  # before the crash
    renewal = acks[2]
    assert renewal.t == pytest.approx(850, abs=1.0) and renewal.unicast
    assert renewal.dhcp is not None and renewal.dhcp.lease_s == MCLT  # after recovery
    assert pair.sim.trace.dhcp("tx", type="REQUEST", src="c1", state="REBINDING") == []


def test_3_3_standby_client_renews_by_broadcast_and_the_primary_answers_for_the_mclt() -> None:
    pair = long_outage()
    back = _normal_again(pair)
    for name in RESERVE_CLIENTS[:3]:
        acks = pair.acks(name)
        from_s = [a for a in acks if a.src == "s"]
        assert from_s, f"{name} was never served by the standby"
        later = [a for a in acks if a.src == "p" and a.t > back]
        assert later, f"{name} never came back to the primary"
        first_p = later[0]
        assert first_p.state == "REBINDING"  # the answer to a broadcast
        # Its unicast renewals to the standby after recovery were not answered...
        tx = pair.sim.trace.dhcp("tx", type="REQUEST", src=name, state="RENEWING", since=back)
        tx = [e for e in tx if e.t < first_p.t]
        assert tx and all(e.dst == "s" and e.unicast for e in tx)
        assert not [a for a in acks if a.src == "s" and a.t > back]
        # ...the broadcast at T2 was, by the primary, with the MCLT.
        rebinds = pair.sim.trace.dhcp("tx", type="REQUEST", src=name, state="REBINDING", since=back)
        assert rebinds and rebinds[0].t <= first_p.t
        assert first_p.dhcp is not None and first_p.dhcp.lease_s == MCLT
        assert first_p.dhcp.yiaddr == from_s[0].dhcp.yiaddr  # type: ignore[union-attr]


def test_4_1_back_to_normal_operation() -> None:
    pair = long_outage()
    assert pair.state("p") is S.NORMAL and pair.state("s") is S.NORMAL
    back = _normal_again(pair)
    offers = pair.sim.trace.answers_to("c23", "OFFER")
    acks = pair.acks("c23")
    assert offers and all(e.src == "p" for e in offers)
    assert acks and all(e.src == "p" for e in acks)
    assert pair.replies_from("s", since=back + 1) == []
    # The standby knows c23's binding (1.4 again).
    addr = pair.sim.clients["c23"].address
    assert addr is not None and pair.s.store.leases[addr].state is BindingState.ACTIVE


def test_4_2_mclt_leases_until_an_mclt_after_recovery_then_the_full_lease() -> None:
    pair = long_outage()
    back = _normal_again(pair)
    # Renewals and rebinds of existing bindings (a new client's first lease is the MCLT, 1.3).
    acks = [
        a for c in pair.sim.clients for a in pair.acks(c, since=back)
        if a.src == "p" and a.dhcp is not None and a is not pair.acks(c)[0]
    ]
    early = [a for a in acks if a.t < back + MCLT]
    late = [a for a in acks if a.t >= back + MCLT + 1]
    assert early and late
    assert {a.dhcp.lease_s for a in early} == {MCLT}  # type: ignore[union-attr]
    assert {a.dhcp.lease_s for a in late} == {LEASE}  # type: ignore[union-attr]


def test_4_3_reserve_addresses_stay_with_their_clients_and_the_reserve_is_topped_up() -> None:
    pair = long_outage()
    for name in RESERVE_CLIENTS:
        c = pair.sim.clients[name]
        first = pair.acks(name)[0].dhcp
        assert first is not None and c.address == first.yiaddr  # still theirs
        assert pair.acks(name)[-1].t > END_LONG - LEASE  # and still being renewed
    free, backup = pair.peer("p").reserve_counts()
    assert pair.peer("s").reserve_counts() == (free, backup)
    assert backup == (free + backup) * 20 // 100 > 0  # topped up to 20 % of the available
    moved = {a for a, le in pair.s.store.leases.items() if le.state is BindingState.BACKUP}
    ever_leased = {e.dhcp.yiaddr for e in pair.sim.trace.dhcp("tx", type="ACK") if e.dhcp}
    assert moved and not moved & ever_leased  # from never-leased addresses


def test_mclt_bound_was_checked_on_every_ack() -> None:
    pair = long_outage()
    assert pair.mclt_checked == len(pair.sim.trace.dhcp("tx", type="ACK"))
    assert pair.sim.invariants.checks_run > 1000


def test_3_1_automatic_partner_down_after_the_state_switchover_interval() -> None:
    def with_switchover(name: str) -> Config:
        cfg = _config(name)
        assert cfg.failover is not None
        fo = cfg.failover.model_copy(update={"state_switchover_interval_s": 120})
        return cfg.model_copy(update={"failover": fo})

    sim = Simulation(3)
    sim.add_server("p", PRIMARY_IP, with_switchover("hot-standby-primary.toml"), factory=_factory)
    s = sim.add_server("s", STANDBY_IP, with_switchover("hot-standby-standby.toml"),
                       factory=_factory)
    sim.link_peers("p", "s")
    sim.at(SETTLED, lambda now: sim.servers["p"].crash(now), "crash primary")
    sim.run_until(SETTLED + 119)
    peer = s.peer
    assert isinstance(peer, FailoverPeer)
    before = peer.state
    sim.run_until(SETTLED + 121)
    after = peer.state
    assert (before, after) == (S.COMMUNICATIONS_INTERRUPTED, S.PARTNER_DOWN)
    assert peer.m.all_free_usable_at == pytest.approx(sim.start + SETTLED + 120 + MCLT)


def test_the_mclt_bound_check_catches_an_unacknowledged_full_lease(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tandem.sim import InvariantViolation

    # A broken policy that ignores the MCLT: the first lease is 600 s, unknown to the partner.
    monkeypatch.setattr(HotStandbyPolicy, "max_lease_time", lambda self, lease, d, now: d)
    pair = settled_pair()
    pair.client("c1", T0)
    with pytest.raises(InvariantViolation, match="MCLT bound"):
        _run(pair, T0 + 10)


@pytest.mark.parametrize("seed", [11, 12])
def test_random_crashes_partitions_and_partner_down_keep_every_invariant(seed: int) -> None:
    """30 clients, then crashes of either server, peer-link partitions and operator
    partner-down at random times; every invariant (incl. the MCLT bound) after every step."""
    pair = Pair(seed)
    sim = pair.sim
    rng = sim.rng
    for i in range(30):
        pair.client(f"c{i}", SETTLED + rng.uniform(0, 600))

    def partner_down(now: float) -> None:
        for srv in (pair.p, pair.s):
            peer = srv.peer
            if isinstance(peer, FailoverPeer) and peer.state is S.COMMUNICATIONS_INTERRUPTED:
                peer.partner_down(now)
                srv.peer_receive(b"", now)

    t = SETTLED + 50
    while t < 3000:
        t += rng.uniform(50, 400)
        back = t + rng.uniform(10, 500)
        what = rng.choice(["crash p", "crash s", "partition", "partner-down"])
        if what == "partition":
            sim.at(t, lambda now: pair.link.partition(), what)
            sim.at(back, lambda now: pair.link.heal(), "heal")
        elif what == "partner-down":
            sim.at(t, partner_down, what)
        else:
            srv = pair.p if what == "crash p" else pair.s
            sim.at(t, srv.crash, what)
            sim.at(back, srv.restart, "restart")
    _run(pair, 4000)  # raises InvariantViolation on any breach
    assert pair.mclt_checked > 100
    ups = [srv for srv in (pair.p, pair.s) if srv.up]
    assert sum(len(srv.committed_active(sim.sched.now)) for srv in ups) > 0
