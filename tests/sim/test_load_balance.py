"""Load-balance mode in virtual time (hot-standby.md "Load-balance mode"; failover-protocol.md
§8.2-§8.3, §9), on the example pair (examples/load-balance-*.toml: 100 addresses, MCLT 300 s,
lease 600 s, 50/50, delayed service after 3 s) and a 70/30 variant.

Two real engines with :class:`tandem.failover.peer.FailoverPeer` in load-balance mode talk the
failover protocol over the simulator's peer link. The simulator checks its invariants after
every step (no address leased twice, no ACKed lease forgotten) and this file adds the MCLT
bound, as tests/sim/test_hot_standby.py does. Every "who answered" assertion is compared with
the RFC 3074 hash of the client's MAC, computed here independently of the policy.
"""

from __future__ import annotations

from collections.abc import Iterator
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from tandem.config.schema import Config
from tandem.config.validate import load
from tandem.errors import DecodeError
from tandem.failover.lb_hash import decode_hba, rfc3074_hash
from tandem.failover.load_balance import LoadBalancePolicy, plan_balance
from tandem.failover.peer import FailoverPeer
from tandem.leases.model import BindingState
from tandem.leases.table import lease_key
from tandem.sim import SimClient, Simulation
from tandem.sim.faults import failover_stack
from tandem.sim.server import SimServer
from tandem.wire.dhcp import DhcpMessage
from tandem.wire.failover import MessageType, ServerState, decode
from tandem.wire.framing import FrameBuffer

S = ServerState
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
PRIMARY_IP = IPv4Address("192.0.2.2")
SECONDARY_IP = IPv4Address("192.0.2.3")
MCLT = 300
LEASE = 600
SETTLED = 400.0  # commissioned pair in settled NORMAL (first MCLT after RECOVER-DONE passed)
_FIRST = int(IPv4Address("192.0.2.100"))
POOL = {IPv4Address(a) for a in range(_FIRST, _FIRST + 100)}


def _config(name: str, percent: int, max_seconds: int | None = None) -> Config:
    cfg = load(EXAMPLES / name)
    fo = cfg.failover
    assert fo is not None and not isinstance(fo, list)
    upd: dict[str, object] = {"load_balance_percent": percent}
    if max_seconds is not None:
        upd["load_balance_max_seconds"] = max_seconds
    return cfg.model_copy(update={"failover": fo.model_copy(update=upd)})


_factory = failover_stack  # engine + FailoverPeer around its policy, as the service builds them


def _describe(data: bytes) -> str:
    """Message names of the failover bytes (the trace shows them on peer-tx / peer-rx)."""
    fb = FrameBuffer()
    try:
        names = [decode(f).msg_type for f in fb.feed(data)]
    except DecodeError as exc:
        return f"{len(data)} B ({exc})"
    return " ".join(t.name if isinstance(t, MessageType) else str(t) for t in names)


def mac(i: int) -> bytes:
    return bytes((0x02, 0x10, 0x00, 0x00, i >> 8, i & 0xFF))


def owner_of(hw: bytes, primary_percent: int) -> str:
    """The server whose bucket the MAC hashes to (RFC 3074, ISC-style split)."""
    return "p" if rfc3074_hash(hw) < round(2.56 * primary_percent) else "s"


def macs_of(server: str, n: int, primary_percent: int, start: int = 0) -> list[bytes]:
    out = []
    i = start
    while len(out) < n:
        if owner_of(mac(i), primary_percent) == server:
            out.append(mac(i))
        i += 1
    return out


class LBPair:
    """A load-balance pair in a simulation, with the MCLT-bound check registered."""

    def __init__(self, primary_percent: int = 50, seed: int = 1,
                 max_seconds: int | None = None) -> None:
        self.pct = primary_percent
        self.sim = Simulation(seed)
        pc = _config("load-balance-primary.toml", primary_percent, max_seconds)
        sc = _config("load-balance-secondary.toml", 100 - primary_percent, max_seconds)
        self.p = self.sim.add_server("p", PRIMARY_IP, pc, factory=_factory)
        self.s = self.sim.add_server("s", SECONDARY_IP, sc, factory=_factory)
        self.link = self.sim.link_peers("p", "s", describe=_describe)
        self.partner = {"p": self.s, "s": self.p}
        self.mclt_checked = 0
        self._pending: list[tuple[SimServer, DhcpMessage, float, float]] = []
        for srv in (self.p, self.s):
            srv.on_ack.append(self._ack_sent)
        self.sim.invariants.add_check("MCLT bound", self._mclt_bound)
        self.hw: dict[str, bytes] = {}

    def _ack_sent(self, srv: SimServer, msg: DhcpMessage, handled: float) -> None:
        lease_s = msg.lease_time
        if lease_s is None:
            return
        known = self.partner[srv.name].store.leases.get(msg.yiaddr)
        base = 0.0
        if known is not None and lease_key(known) == b"H\x01" + msg.hwaddr:
            base = max(known.tsfp, known.end - 1.0 if known.state is BindingState.ACTIVE else 0.0)
        self._pending.append((srv, msg, handled + lease_s, base))

    def _mclt_bound(self, now: float) -> Iterator[str]:
        pending, self._pending = self._pending, []
        for srv, msg, end, base in pending:
            self.mclt_checked += 1
            allowed = MCLT + max(end - (msg.lease_time or 0), base)
            if end > allowed + 1e-6:
                yield f"{srv.name} ACKed {msg.yiaddr} beyond MCLT + partner's knowledge"

    def peer(self, name: str) -> FailoverPeer:
        peer = self.sim.servers[name].peer
        assert isinstance(peer, FailoverPeer), f"{name} is down"
        return peer

    def policy(self, name: str) -> LoadBalancePolicy:
        pol = self.peer(name).policy
        assert isinstance(pol, LoadBalancePolicy)
        return pol

    def client(self, name: str, hw: bytes, at: float) -> SimClient:
        self.hw[name] = hw
        return self.sim.add_client(name, hwaddr=hw, start_at=at)

    def owner(self, name: str) -> str:
        return owner_of(self.hw[name], self.pct)

    def replies(self, client: str, src: str | None = None, since: float = 0.0) -> list[str]:
        """Servers that sent OFFER/ACK/NAK to ``client`` (in order)."""
        hw = self.hw[client]
        return [
            e.src
            for e in self.sim.trace.dhcp("tx", src=src, since=since)
            if e.dhcp is not None and e.dhcp.hwaddr == hw and e.dhcp.type in ("OFFER", "ACK", "NAK")
        ]

    def acks(
        self, client: str, since: float | None = None
    ) -> list[tuple[str, float, int, IPv4Address]]:
        """(server, time, lease seconds, address) of every ACK ``client`` received."""
        out = []
        for e in self.sim.trace.answers_to(client, "ACK", since=since):
            assert e.dhcp is not None and e.src is not None
            out.append((e.src, e.t, e.dhcp.lease_s or 0, e.dhcp.yiaddr))
        return out

    def operator(self, name: str, t: float, command: str) -> None:
        srv = self.sim.servers[name]

        def run(now: float) -> None:
            getattr(self.peer(name), command)(now)
            srv.peer_receive(b"", now)

        self.sim.at(t, run, f"operator {command} on {name}")

    def backup_set(self, name: str) -> set[IPv4Address]:
        return {a for a, le in self.sim.servers[name].store.leases.items()
                if le.state is BindingState.BACKUP}


def settled(primary_percent: int = 50, **kw: object) -> LBPair:
    pair = LBPair(primary_percent, **kw)  # type: ignore[arg-type]
    pair.sim.run_until(SETTLED)
    assert pair.peer("p").state is S.NORMAL and pair.peer("s").state is S.NORMAL
    return pair


# ------------------------------------------------------------------------------------------
# The commissioned pair: HBA and the FREE/BACKUP split
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("pct", [50, 70])
def test_commissioned_pair_splits_buckets_and_free_addresses(pct: int) -> None:
    pair = settled(pct)
    n_p = round(2.56 * pct)
    assert pair.policy("p").my_buckets == frozenset(range(n_p))
    assert pair.policy("s").my_buckets == frozenset(range(n_p, 256))
    # The HBA the secondary received in CONNECT is the primary's share (isc polarity).
    conn = pair.peer("s").conn
    assert conn is not None and decode_hba(conn.hba, "isc") == frozenset(range(n_p))
    # FREE (primary) / BACKUP (secondary) in proportion, the same on both sides.
    assert pair.peer("p").reserve_counts() == (pct, 100 - pct)
    assert pair.peer("s").reserve_counts() == (pct, 100 - pct)
    assert pair.backup_set("p") == pair.backup_set("s") and len(pair.backup_set("s")) == 100 - pct


# ------------------------------------------------------------------------------------------
# NORMAL: each server answers exactly the clients of its buckets
# ------------------------------------------------------------------------------------------

N_CLIENTS = 40


@pytest.mark.parametrize("pct", [50, 70])
def test_each_server_answers_exactly_the_clients_of_its_buckets(pct: int) -> None:
    pair = settled(pct)
    backup_at_start = pair.backup_set("s")
    for i in range(N_CLIENTS):
        pair.client(f"c{i}", mac(i), SETTLED + i * 0.5)
    end = SETTLED + 800  # first leases (MCLT), renewals at T1, full leases, renewals again
    pair.sim.run_until(end)
    served = {"p": 0, "s": 0}
    for i in range(N_CLIENTS):
        name = f"c{i}"
        want = pair.owner(name)
        other = "s" if want == "p" else "p"
        assert pair.replies(name, src=other) == [], f"{name} answered by {other}"
        acks = pair.acks(name)
        assert len(acks) >= 3 and {a[0] for a in acks} == {want}, (name, want, acks)
        assert pair.sim.clients[name].holds(pair.sim.sched.now) is not None
        # ...from its own pool: the secondary's addresses were BACKUP, the primary's FREE
        assert (acks[0][3] in backup_at_start) == (want == "s")
        served[want] += 1
    assert served["p"] > 0 and served["s"] > 0
    # Both heard every broadcast and ignored the partner's clients; no delayed service.
    for name in ("p", "s"):
        st = pair.policy(name).lb_stats
        assert st["ignored"] >= served["s" if name == "p" else "p"] and st["delayed"] == 0
    assert pair.mclt_checked == len(pair.sim.trace.dhcp("tx", type="ACK"))


def test_delayed_service_answers_a_partners_client_after_max_seconds() -> None:
    pair = settled(50)
    (hw,) = macs_of("p", 1, 50)
    # The primary does not hear this client (LAN cut), the link between servers stays up.
    pair.sim.lan.partition(["p"], ["late"])
    pair.client("late", hw, SETTLED + 10)
    pair.sim.run_until(SETTLED + 40)
    assert pair.peer("p").state is S.NORMAL
    discovers = pair.sim.trace.dhcp("tx", type="DISCOVER", src="late")
    assert len(discovers) >= 2
    offers = pair.sim.trace.answers_to("late", "OFFER")
    assert offers and all(o.src == "s" for o in offers)
    # Not the first DISCOVER (secs 0): only a retransmission whose secs exceeds 3.
    assert offers[0].t > discovers[0].t + 3
    assert pair.policy("s").lb_stats["delayed"] >= 1
    acks = pair.acks("late")
    assert acks and acks[0][0] == "s" and acks[0][2] == MCLT
    # The primary knows the binding (BNDUPD) although it never saw the client.
    lease = pair.p.store.leases[acks[0][3]]
    assert lease.state is BindingState.ACTIVE and lease.hwaddr == hw


def test_a_partners_client_is_not_answered_when_secs_is_within_the_threshold() -> None:
    pair = settled(50, max_seconds=0)  # 0 = never: no delayed service
    (hw,) = macs_of("p", 1, 50)
    pair.sim.lan.partition(["p"], ["late"])
    pair.client("late", hw, SETTLED + 10)
    pair.sim.run_until(SETTLED + 120)
    assert len(pair.sim.trace.dhcp("tx", type="DISCOVER", src="late")) >= 4
    assert pair.replies("late") == []


# ------------------------------------------------------------------------------------------
# One server down: the other serves everyone under the MCLT rules; recovery
# ------------------------------------------------------------------------------------------
#
#   400  10 clients (5 per side) get leases from their bucket's owner
#   600  the secondary crashes; the primary goes COMMUNICATIONS-INTERRUPTED
#   610  the operator puts the primary in PARTNER-DOWN (partner's addresses usable from 910)
#   620  50 new clients (both buckets): the primary serves them from its FREE addresses only,
#        the rest wait for 910 and then get the secondary's (BACKUP) addresses
#  1100  the secondary restarts: RECOVER ... RECOVER-DONE, both NORMAL; the secondary's
#        clients come back to it at their T2 rebind (renewals are load-balanced)

CRASH, PD_AT, NEW_AT, RESTART, END = 600.0, 610.0, 620.0, 1100.0, 2600.0


def _outage() -> LBPair:
    pair = settled(50)
    for i in range(10):
        pair.client(f"b{i}", mac(i), SETTLED + i)
    pair.sim.at(CRASH, lambda now: pair.s.crash(now), "crash secondary")
    pair.operator("p", PD_AT, "partner_down")
    for i in range(50):
        pair.client(f"n{i}", mac(100 + i), NEW_AT + i * 0.2)
    pair.sim.at(RESTART, lambda now: pair.s.restart(now), "restart secondary")
    return pair


@pytest.fixture(scope="module")
def outage() -> tuple[LBPair, set[IPv4Address], float]:
    pair = _outage()
    pair.sim.run_until(CRASH - 1)
    backup = pair.backup_set("p")  # the secondary's available addresses at the crash
    pair.sim.run_until(END)
    normal = [r for r in pair.peer("s").m.records if r.to_state is S.NORMAL]
    assert normal, "the secondary never got back to NORMAL"
    return pair, backup, normal[-1].at - pair.sim.start


def test_while_the_partner_is_down_the_survivor_serves_everyone_for_the_mclt(
    outage: tuple[LBPair, set[IPv4Address], float],
) -> None:
    pair, backup, _back = outage
    assert pair.peer("p").m.records[-1].to_state is S.NORMAL
    during = [(c, a) for c in pair.hw for a in pair.acks(c) if CRASH < a[1] < RESTART]
    assert {c for c, _ in during} >= {f"n{i}" for i in range(50)}
    assert any(pair.owner(c) == "s" for c, _ in during)  # the partner's clients too
    assert all(a[0] == "p" and a[2] == MCLT for _c, a in during)  # lease time = MCLT
    # Only its own (FREE) addresses until PARTNER-DOWN + MCLT, then the partner's too.
    usable = PD_AT + MCLT
    early = [a for _c, a in during if a[1] < usable]
    late = [a for _c, a in during if a[1] >= usable and a[3] in backup]
    assert early and not [a for a in early if a[3] in backup]
    assert late, "the BACKUP addresses were never used after PARTNER-DOWN + MCLT"


def test_the_partners_old_clients_rebind_to_the_survivor_and_keep_their_address(
    outage: tuple[LBPair, set[IPv4Address], float],
) -> None:
    pair, _backup, _back = outage
    theirs = [f"b{i}" for i in range(10) if pair.owner(f"b{i}") == "s"]
    assert theirs
    for name in theirs:
        before = [a for a in pair.acks(name) if a[1] < CRASH]
        rescued = [a for a in pair.acks(name) if CRASH < a[1] < RESTART]
        assert before and before[0][0] == "s"
        assert rescued and rescued[0][0] == "p" and rescued[0][3] == before[-1][3]
        rebinds = pair.sim.trace.dhcp("tx", type="REQUEST", src=name, state="REBINDING",
                                      since=CRASH)
        assert rebinds and rebinds[0].t <= rescued[0][1]


def test_after_recovery_the_split_returns(
    outage: tuple[LBPair, set[IPv4Address], float],
) -> None:
    pair, _backup, back = outage
    assert pair.peer("p").state is S.NORMAL and pair.peer("s").state is S.NORMAL
    settle = back + LEASE  # every lease granted before recovery has been renewed or rebound
    assert settle < END - 200
    moved_back = 0
    for name in pair.hw:
        acks = [a for a in pair.acks(name) if a[1] > settle]
        if not acks:
            continue
        assert {a[0] for a in acks} == {pair.owner(name)}, (name, acks)
        if pair.owner(name) == "s" and any(
            a[0] == "p" for a in pair.acks(name) if CRASH < a[1] < RESTART
        ):
            moved_back += 1
    assert moved_back >= 5
    # Nobody lost an address while moving back.
    now = pair.sim.sched.now
    assert sum(1 for c in pair.sim.clients.values() if c.holds(now) is not None) == 60


def test_outage_kept_every_invariant(outage: tuple[LBPair, set[IPv4Address], float]) -> None:
    pair, _b, _back = outage
    assert pair.sim.invariants.checks_run > 1000
    assert pair.mclt_checked == len(pair.sim.trace.dhcp("tx", type="ACK")) > 100


# ------------------------------------------------------------------------------------------
# Rebalancing the FREE/BACKUP split
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("side", ["p", "s"])
def test_one_sides_churn_moves_ownership_until_the_split_is_within_tolerance(side: str) -> None:
    """65 clients of one side's buckets arrive over 5 minutes (10 of them leave again): more
    than the 50 addresses that side owns at the start. No delayed service (max seconds 0), so
    only moving ownership over can serve them all."""
    pair = settled(50, max_seconds=0)
    hws = macs_of(side, 65, 50)
    for i, hw in enumerate(hws):
        pair.client(f"x{i}", hw, SETTLED + i * 5)
    # the peer's plan (counts first) is the full plan, all along: (same, balanced, reclaiming)
    checked: list[tuple[bool, bool, bool]] = []
    for k in range(1500 // 7):
        pair.sim.at(SETTLED + 7 * k, lambda now: checked.append(_plan_is_the_full_plan(pair)),
                    "check plan")
    for i in range(0, 50, 5):
        pair.sim.at(SETTLED + 400 + i, lambda now, n=f"x{i}": pair.sim.clients[n].release(now),
                    "release")
    end = SETTLED + 1500
    pair.sim.run_until(end - 600)
    moved_at_quiet = _moves(pair)
    pair.sim.run_until(end)
    now = pair.sim.sched.now
    held = [c for c in pair.sim.clients.values() if c.holds(now) is not None]
    assert len(held) == 55  # everyone still wanting an address has one (> the 50 at start)
    for i in range(65):
        assert set(pair.replies(f"x{i}")) <= {side}  # and only its owner ever answered
    stats_p = pair.peer("p").stats
    if side == "p":
        assert stats_p.moved_to_free >= 5  # BACKUP -> FREE, accepted by the secondary
    else:
        assert stats_p.moved_to_backup > 50  # beyond the initial 50: more went over
        assert pair.peer("s").stats.pool_requests_sent >= 1  # the secondary asked (POOLREQ)
        got = [e for e in pair.sim.trace.of_kind("peer-rx", "p") if "POOLREQ" in e.detail]
        assert got, "the primary never received a POOLREQ"
        sent = [e for e in pair.sim.trace.of_kind("peer-tx", "p") if "POOLRESP" in e.detail]
        assert sent and sent[0].t >= got[0].t  # and answered it
    plan = pair.peer("p").balance_plan()
    assert plan.balanced, plan
    assert len(checked) > 200 and all(same for same, _, _ in checked)
    assert any(not balanced for _, balanced, _ in checked)  # moves were planned
    # Reclaims in flight (BACKUP -> FREE sent, not yet acknowledged) count as FREE: pretend
    # some are, enough to unbalance the split.
    peer = pair.peer("p")
    get = peer.engine.table.get
    backup = [a for a in peer._pool.ints()
              if (le := get(a)) is not None and le.state is BindingState.BACKUP]
    for n in (1, len(backup) // 2, len(backup)):
        peer._reclaiming.update(IPv4Address(a) for a in backup[:n])
        same, balanced, _ = _plan_is_the_full_plan(pair)
        assert same and (n == 1 or not balanced), n
        peer._reclaiming.clear()
    # Both stores agree on who owns every available address.
    for a in POOL:
        lp, ls = pair.p.store.leases.get(a), pair.s.store.leases.get(a)
        sp = lp.state if lp is not None else BindingState.FREE
        ss = ls.state if ls is not None else BindingState.FREE
        if BindingState.BACKUP in (sp, ss):
            assert sp == ss, (a, sp, ss)
    # No churn: once the clients stopped arriving, nothing more moved.
    assert _moves(pair) == moved_at_quiet


def _plan_is_the_full_plan(pair: LBPair) -> tuple[bool, bool, bool]:
    """FailoverPeer.balance_plan() (count, then plan only when off) against plan_balance over
    every pool address, reclaims in flight included."""
    peer = pair.peer("p")
    assert isinstance(peer.policy, LoadBalancePolicy)
    get = peer.engine.table.get
    full = plan_balance(((a, get(a)) for a in peer._pool.ints()),
                        primary_buckets=peer.policy.primary_buckets,
                        secondary_percent=peer.policy.secondary_percent,
                        pending_free=peer._reclaiming)
    return peer.balance_plan() == full, full.balanced, bool(peer._reclaiming)


def _moves(pair: LBPair) -> int:
    st = pair.peer("p").stats
    return st.moved_to_backup + st.reclaims_sent


def test_primary_down_the_secondary_serves_the_primarys_clients_from_its_backup() -> None:
    pair = settled(70)
    backup = pair.backup_set("s")
    assert len(backup) == 30
    crash = SETTLED + 10
    pair.sim.at(crash, lambda now: pair.p.crash(now), "crash primary")
    hws = macs_of("p", 5, 70)
    for i, hw in enumerate(hws):
        pair.client(f"q{i}", hw, crash + 5 + i)
    pair.sim.run_until(crash + 60)
    assert pair.peer("s").state is S.COMMUNICATIONS_INTERRUPTED
    for i in range(5):
        acks = pair.acks(f"q{i}")
        assert len(acks) == 1 and acks[0][0] == "s" and acks[0][2] == MCLT
        assert acks[0][3] in backup  # its own addresses only (no PARTNER-DOWN)
        assert pair.owner(f"q{i}") == "p"


def test_a_client_identifier_decides_the_bucket_not_the_mac() -> None:
    pair = settled(50)
    # clients whose option 61 (01 + MAC) hashes to the other server than their bare MAC
    chosen: list[tuple[bytes, str]] = []
    i = 500
    while len(chosen) < 6:
        hw = mac(i)
        by_id = owner_of(b"\x01" + hw, 50)
        if by_id != owner_of(hw, 50):
            chosen.append((hw, by_id))
        i += 1
    assert {w for _hw, w in chosen} == {"p", "s"}
    for n, (hw, _w) in enumerate(chosen):
        pair.hw[f"k{n}"] = hw
        pair.sim.add_client(f"k{n}", hwaddr=hw, client_id=b"\x01" + hw, start_at=SETTLED + n)
    pair.sim.run_until(SETTLED + 30)
    for n, (_hw, want) in enumerate(chosen):
        acks = pair.acks(f"k{n}")
        assert acks and {a[0] for a in acks} == {want}, (n, want, acks)
        assert set(pair.replies(f"k{n}")) == {want}


@pytest.mark.parametrize("seed", [21, 22, 23])
def test_rebalancing_under_load_with_a_slow_link_keeps_every_invariant(seed: int) -> None:
    """Both sides' clients come and go (some release, some stop and let the lease expire)
    over a failover link with 1-2 s latency, so ownership moves cross allocations in flight;
    the invariants (no address leased twice, no ACKed lease forgotten, the MCLT bound) hold
    after every step."""
    from tandem.sim import Faults

    pair = LBPair(50, seed=seed, max_seconds=0)
    pair.link.faults = Faults(delay_s=1.0, jitter_s=1.0)
    rng = pair.sim.rng
    pair.sim.run_until(SETTLED)
    assert pair.peer("p").state is S.NORMAL
    for i in range(90):
        name = f"z{i}"
        pair.client(name, mac(1000 + i), SETTLED + rng.uniform(0, 900))
        if rng.random() < 0.5:
            t = SETTLED + rng.uniform(300, 1500)
            what = rng.choice(["release", "stop"])
            pair.sim.at(t, lambda now, n=name, w=what: getattr(pair.sim.clients[n], w)(now), what)
    pair.sim.run_until(SETTLED + 2400)
    st = pair.peer("p").stats
    assert st.moved_to_backup > 50 or st.moved_to_free > 0  # ownership did move
    assert pair.sim.invariants.checks_run > 1000 and pair.mclt_checked > 100
    now = pair.sim.sched.now
    assert sum(1 for c in pair.sim.clients.values() if c.holds(now) is not None) >= 40
