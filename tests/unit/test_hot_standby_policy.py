"""HotStandbyPolicy: the answer matrix (failover-protocol.md §8.3, hot-standby.md), ownership
and MCLT through the Policy protocol, and the hot-standby expectations driven through the real
Engine in virtual time (reference configuration: 100 addresses, 20 % reserve, MCLT 300 s,
lease 600 s)."""

from __future__ import annotations

import struct
from ipaddress import IPv4Address, IPv4Network

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tandem.config.schema import Config, LeaseTimes, Pool, ServerSection, Subnet
from tandem.dhcp.engine import Engine, classify_request
from tandem.dhcp.types import Outcome, RxInfo
from tandem.failover.bindings import Role
from tandem.failover.hot_standby import ANSWERS, HotStandbyPolicy, StateView, answers
from tandem.failover.policy import Policy, RequestKind
from tandem.leases.model import BindingState, Lease
from tandem.wire.dhcp import FLAG_BROADCAST, DhcpMessage, MessageType
from tandem.wire.failover import ServerState

IP = IPv4Address
T0 = 1_700_000_000.0
MCLT = 300
LEASE = 600
S = ServerState
K = RequestKind
P, SEC = Role.PRIMARY, Role.SECONDARY

# ---------------------------------------------------------------- answer matrix

# Letters: D DISCOVER, S SELECTING, I INIT-REBOOT, N RENEWING (unicast), B REBINDING
# (broadcast), R RELEASE, X DECLINE, F INFORM. (primary answers, standby answers) per state,
# restated from failover-protocol.md §8.3 / hot-standby.md 1.1, 2.4.
_LETTER = {
    "D": K.DISCOVER,
    "S": K.SELECTING,
    "I": K.INIT_REBOOT,
    "N": K.RENEWING,
    "B": K.REBINDING,
    "R": K.RELEASE,
    "X": K.DECLINE,
    "F": K.INFORM,
}
MATRIX: dict[ServerState, tuple[str, str]] = {
    S.NORMAL: ("DSINBRXF", ""),  # 1.1/1.2: the standby sends nothing
    S.COMMUNICATIONS_INTERRUPTED: ("DSINBRXF", "DSIBRXF"),  # 2.4: no unicast RENEWING
    S.PARTNER_DOWN: ("DSINBRXF", "DSINBRXF"),
    S.RESOLUTION_INTERRUPTED: ("DSINBRXF", "DSIBRXF"),
    S.CONFLICT_DONE: ("DSINBRXF", ""),
    S.RECOVER_DONE: ("NB", "NB"),
    S.STARTUP: ("", ""),
    S.RECOVER: ("", ""),
    S.RECOVER_WAIT: ("", ""),
    S.POTENTIAL_CONFLICT: ("", ""),
    S.PAUSED: ("", ""),
    S.SHUTDOWN: ("", ""),
    S.UNKNOWN: ("", ""),
}
GRID = [
    (state, role, kind, letter in MATRIX[state][0 if role is P else 1])
    for state in ServerState
    for role in (P, SEC)
    for letter, kind in _LETTER.items()
]


def test_matrix_covers_every_state() -> None:
    assert set(MATRIX) == set(ServerState)
    assert {k for _s, _r, k, _e in GRID} == set(RequestKind)


@pytest.mark.parametrize(
    ("state", "role", "kind", "expected"),
    GRID,
    ids=[f"{s.name}-{r.value}-{k.value}" for s, r, k, _e in GRID],
)
def test_answer_matrix(state: ServerState, role: Role, kind: RequestKind, expected: bool) -> None:
    assert answers(state, role, kind) is expected
    policy = HotStandbyPolicy(role, MCLT, lambda: StateView(state, T0))
    assert policy.may_answer(DhcpMessage(), kind, T0) is expected


def test_module_table_has_no_extra_rows() -> None:
    for (state, role), kinds in ANSWERS.items():
        assert kinds == {_LETTER[c] for c in MATRIX[state][0 if role is P else 1]}


# ---------------------------------------------------------------- engine harness

NET = "192.0.2."
PRIMARY_ID = IP("192.0.2.1")
STANDBY_ID = IP("192.0.2.2")
POOL = [IP(NET + str(n)) for n in range(10, 110)]  # 100 addresses
RESERVE = POOL[:20]  # 20 % reserve (BACKUP)


def config(server_id: IPv4Address) -> Config:
    return Config(
        server=ServerSection(server_id=server_id),
        lease=LeaseTimes(
            default_lease_time_s=LEASE,
            max_lease_time_s=LEASE,
            min_lease_time_s=10,
            offer_hold_s=30,
            decline_probation_s=600,
        ),
        subnets=[
            Subnet(
                prefix=IPv4Network("192.0.2.0/24"),
                pools=[Pool(start=POOL[0], end=POOL[-1])],
                lease_time_s=LEASE,
            )
        ],
    )


class World:
    """One server (engine + hot-standby policy) whose failover state the test sets."""

    def __init__(self, role: Role, state: ServerState = S.NORMAL, since: float = T0 - 1e4):
        self.view = StateView(state, since, S.STARTUP)
        self.policy = HotStandbyPolicy(role, MCLT, lambda: self.view)
        self.sid = PRIMARY_ID if role is P else STANDBY_ID
        self.engine = Engine(config(self.sid), self.policy)
        self.rx_bcast = RxInfo(src_ip=IP("0.0.0.0"), src_port=68, interface="e", local_ip=self.sid)

    def set_state(self, state: ServerState, since: float) -> None:
        self.view = StateView(state, since, self.view.state)

    def load_reserve(self) -> None:
        self.engine.load([Lease(a, 1, BindingState.BACKUP) for a in RESERVE], T0)

    def send(self, m: DhcpMessage, now: float, unicast: bool = False) -> Outcome:
        rx = self.rx_bcast
        if unicast:
            rx = RxInfo(
                src_ip=m.ciaddr, src_port=68, interface="e", local_ip=self.sid, to_unicast=True
            )
        return self.engine.handle(m, rx, now)


def mac(n: int) -> bytes:
    return bytes((2, 0, 0, 0, n >> 8, n & 0xFF))


def dmsg(mt: MessageType, hw: bytes, **kw: object) -> DhcpMessage:
    opts: dict[int, bytes] = {53: bytes((mt,))}
    req = kw.pop("requested", None)
    sid = kw.pop("server_id", None)
    if isinstance(req, IPv4Address):
        opts[50] = req.packed
    if isinstance(sid, IPv4Address):
        opts[54] = sid.packed
    return DhcpMessage(chaddr=hw + bytes(10), options=opts, **kw)  # type: ignore[arg-type]


def lease_time(out: Outcome) -> int:
    assert len(out.replies) == 1, out
    return int(struct.unpack("!I", out.replies[0].msg.options[51])[0])


def reply_type(out: Outcome) -> MessageType | None:
    if not out.replies:
        return None
    return out.replies[0].msg.message_type


def dora(w: World, hw: bytes, now: float) -> tuple[IPv4Address | None, int]:
    off = w.send(dmsg(MessageType.DISCOVER, hw), now)
    if not off.replies:
        return None, 0
    addr = off.replies[0].msg.yiaddr
    assert lease_time(off) <= MCLT or w.view.state is S.NORMAL
    ack = w.send(dmsg(MessageType.REQUEST, hw, requested=addr, server_id=w.sid), now)
    assert reply_type(ack) is MessageType.ACK
    return addr, lease_time(ack)


def renew(w: World, hw: bytes, addr: IPv4Address, now: float) -> Outcome:
    return w.send(dmsg(MessageType.REQUEST, hw, ciaddr=addr), now, unicast=True)


def rebind(w: World, hw: bytes, addr: IPv4Address, now: float) -> Outcome:
    return w.send(dmsg(MessageType.REQUEST, hw, ciaddr=addr, flags=FLAG_BROADCAST), now)


def test_policy_satisfies_the_protocol() -> None:
    p: Policy = HotStandbyPolicy(P, MCLT, lambda: S.NORMAL)
    assert p.may_answer(DhcpMessage(), K.DISCOVER, T0)


@pytest.mark.parametrize(
    ("state", "role", "to_unicast", "expected_kind", "answered"),
    [
        (S.COMMUNICATIONS_INTERRUPTED, SEC, True, K.RENEWING, False),  # 2.4
        (S.COMMUNICATIONS_INTERRUPTED, SEC, False, K.REBINDING, True),  # 2.3, 2.4
        (S.COMMUNICATIONS_INTERRUPTED, P, True, K.RENEWING, True),
        (S.NORMAL, SEC, False, K.REBINDING, False),  # Windows: silent even for rebinding
        (S.NORMAL, P, True, K.RENEWING, True),
        (S.PARTNER_DOWN, SEC, True, K.RENEWING, True),
        (S.RECOVER_DONE, P, True, K.RENEWING, True),  # 3.2
        (S.RECOVER_DONE, P, False, K.REBINDING, True),  # 3.3
        (S.RECOVER, P, False, K.REBINDING, False),
    ],
)
def test_unicast_vs_broadcast_through_the_engine(
    state: ServerState, role: Role, to_unicast: bool, expected_kind: RequestKind, answered: bool
) -> None:
    """The engine classifies by the packet's destination; the policy decides on the kind."""
    w = World(role, state)
    hw = mac(1)
    addr = POOL[50]
    w.engine.load(
        [Lease(addr, 1, BindingState.ACTIVE, hwaddr=hw, start=T0, end=T0 + 600, cltt=T0)], T0
    )
    m = dmsg(MessageType.REQUEST, hw, ciaddr=addr)
    assert classify_request(m, to_unicast) is expected_kind
    out = w.send(m, T0 + 300, unicast=to_unicast)
    assert (reply_type(out) is MessageType.ACK) is answered
    assert w.engine.stats["drop_policy"] == (0 if answered else 1)
    if answered:
        assert lease_time(out) == MCLT  # every state here but a settled NORMAL caps at MCLT
        assert out.replies[0].msg.yiaddr == addr  # the SAME address


# ---------------------------------------------------------------- 1. normal operation


def test_1_normal_operation_primary() -> None:
    """1.3 first lease = MCLT; 1.4 the binding is queued for the standby; 1.5 the renewal at
    T1 gets the scope lease once the standby acknowledged."""
    w = World(P)
    w.load_reserve()
    hw = mac(1)
    addr, t = dora(w, hw, T0)
    assert addr is not None and addr not in RESERVE  # the primary never uses the reserve
    assert t == MCLT  # 1.3
    ups = w.policy.drain_updates()
    assert len(ups) == 1 and w.policy.drain_updates() == []
    up = ups[0]
    assert up.lease.state is BindingState.ACTIVE and up.lease.address == addr
    assert up.lease.end == T0 + MCLT
    assert up.pet == T0 + LEASE + MCLT / 2  # 1.4: PET = now + desired + granted / 2
    assert up.lease.tstp == up.pet
    w.policy.acknowledged(addr)  # BNDACK
    t1 = T0 + MCLT / 2
    out = renew(w, hw, addr, t1)
    assert reply_type(out) is MessageType.ACK
    assert lease_time(out) == LEASE  # 1.5
    (up2,) = w.policy.drain_updates()
    assert up2.pet == t1 + LEASE + LEASE / 2
    assert up2.lease.tsfp == T0 + LEASE + MCLT / 2  # the acknowledged base travels along


def test_1_5_without_the_standby_ack_the_renewal_stays_at_mclt() -> None:
    w = World(P)
    hw = mac(1)
    addr, _t = dora(w, hw, T0)
    assert addr is not None
    out = renew(w, hw, addr, T0 + MCLT / 2)
    assert lease_time(out) == MCLT


def test_1_1_standby_silent_in_normal() -> None:
    w = World(SEC)
    w.load_reserve()
    out = w.send(dmsg(MessageType.DISCOVER, mac(1)), T0)
    assert out.replies == [] and w.engine.stats["drop_policy"] == 1


def test_primary_never_allocates_the_reserve() -> None:
    w = World(P)
    w.load_reserve()
    got = [dora(w, mac(i), T0)[0] for i in range(80)]
    assert None not in got and not set(got) & set(RESERVE)
    assert dora(w, mac(999), T0)[0] is None  # the other 20 belong to the standby
    assert w.engine.stats["pool_exhausted"] == 1


# ---------------------------------------------------------------- 2. primary failure


def test_2_standby_in_communications_interrupted() -> None:
    t_fail = T0 + 200
    w = World(SEC)
    w.load_reserve()
    # 1.4: the standby holds the primary's binding (renewed at T1 = T0 + 150 for 600 s)
    a_hw, a_addr = mac(1), POOL[60]
    t1 = T0 + 150
    w.engine.load(
        [Lease(a_addr, 1, BindingState.ACTIVE, hwaddr=a_hw, start=t1, end=t1 + 600, cltt=t1)],
        T0,
    )
    w.policy.received(a_addr, t1 + 900)
    w.set_state(S.COMMUNICATIONS_INTERRUPTED, t_fail)  # 2.1
    # 2.2 a new client gets a reserve address for MCLT
    b_hw = mac(2)
    b_addr, t = dora(w, b_hw, t_fail + 10)
    assert b_addr in RESERVE and t == MCLT
    # 2.3 the primary's client: unicast renewal is not for us (it goes to the primary); at
    # T2 it broadcasts and the standby extends the same address for MCLT
    t2 = t1 + LEASE * 7 / 8
    out = rebind(w, a_hw, a_addr, t2)
    assert reply_type(out) is MessageType.ACK and out.replies[0].msg.yiaddr == a_addr
    assert lease_time(out) == MCLT
    # 2.4 the standby's own client: unicast renewal at T1 ignored, broadcast at T2 answered
    assert b_addr is not None
    assert renew(w, b_hw, b_addr, t_fail + 10 + MCLT / 2).replies == []
    out = rebind(w, b_hw, b_addr, t_fail + 10 + MCLT * 7 / 8)
    assert reply_type(out) is MessageType.ACK and lease_time(out) == MCLT
    # every change was queued for the partner
    ups = w.policy.drain_updates()
    assert [u.lease.address for u in ups] == [b_addr, a_addr, b_addr]
    assert all(u.pet is not None and u.pet >= u.lease.end for u in ups)


def test_2_reserve_runs_dry_then_3_1_partner_down_after_mclt() -> None:
    w = World(SEC, S.COMMUNICATIONS_INTERRUPTED, T0)
    w.load_reserve()
    now = T0 + 10
    got = [dora(w, mac(i), now)[0] for i in range(20)]
    assert sorted(a for a in got if a is not None) == RESERVE
    assert dora(w, mac(100), now)[0] is None  # reserve exhausted: new clients refused
    t_pd = T0 + 1000
    w.set_state(S.PARTNER_DOWN, t_pd)
    assert dora(w, mac(101), t_pd + MCLT - 1)[0] is None  # 3.1: not before MCLT
    addr, t = dora(w, mac(102), t_pd + MCLT)
    assert addr is not None and addr not in RESERVE  # any free address of the scope
    assert t == MCLT  # Windows: MCLT-long leases in PARTNER-DOWN


# ---------------------------------------------------------------- 3./4. recovery


def test_3_and_4_primary_recovery() -> None:
    t_back = T0 + 5000
    w = World(P, S.RECOVER_DONE, t_back)
    hw_own, addr_own = mac(1), POOL[30]  # 3.2: the primary's lease, not renewed in the outage
    hw_sb, addr_sb = mac(2), POOL[5]  # 3.3: a lease the standby gave (known from the bulk update)
    w.engine.load(
        [
            Lease(
                addr_own,
                1,
                BindingState.ACTIVE,
                hwaddr=hw_own,
                start=T0,
                end=t_back + 400,
                cltt=T0,
                tsfp=t_back + 700,
            ),
            Lease(
                addr_sb,
                1,
                BindingState.ACTIVE,
                hwaddr=hw_sb,
                start=t_back - 100,
                end=t_back + 200,
                cltt=t_back - 100,
                tsfp=t_back + 650,
            ),
        ],
        T0,
    )
    assert w.send(dmsg(MessageType.DISCOVER, mac(3)), t_back + 1).replies == []  # RECOVER-DONE
    out = renew(w, hw_own, addr_own, t_back + 10)  # 3.2
    assert reply_type(out) is MessageType.ACK and lease_time(out) == MCLT
    out = rebind(w, hw_sb, addr_sb, t_back + 20)  # 3.3
    assert reply_type(out) is MessageType.ACK and lease_time(out) == MCLT
    # 4.1 / 4.2: NORMAL again; within MCLT renewals still get MCLT, after it the scope lease
    t_normal = t_back + 60
    w.set_state(S.NORMAL, t_normal)
    for u in w.policy.drain_updates():
        w.policy.acknowledged(u.lease.address)
    out = renew(w, hw_own, addr_own, t_normal + 200)  # before the 3.2 lease (300 s) ends
    assert lease_time(out) == MCLT
    for u in w.policy.drain_updates():
        w.policy.acknowledged(u.lease.address)
    out = renew(w, hw_own, addr_own, t_normal + MCLT + 150)
    assert lease_time(out) == LEASE


# ---------------------------------------------------------------- state provider variants


def test_bare_state_provider_times_states_from_first_sight() -> None:
    state = [S.NORMAL]
    p = HotStandbyPolicy(SEC, MCLT, lambda: state[0])
    assert p.view(T0) == StateView(S.NORMAL, T0, None)
    assert p.view(T0 + 5).since == T0  # unchanged state keeps its start
    state[0] = S.PARTNER_DOWN
    assert p.view(T0 + 100) == StateView(S.PARTNER_DOWN, T0 + 100, S.NORMAL)
    free = Lease(POOL[50], 1, BindingState.FREE)
    assert not p.may_allocate(free, T0 + 100 + MCLT - 1)
    assert p.may_allocate(free, T0 + 100 + MCLT)
    backup = Lease(POOL[0], 1, BindingState.BACKUP)
    assert p.may_allocate(backup, T0 + 100)


def test_role_from_string_and_bad_mclt() -> None:
    assert HotStandbyPolicy("secondary", MCLT, lambda: S.NORMAL).role is SEC
    with pytest.raises(ValueError):
        HotStandbyPolicy(P, 0, lambda: S.NORMAL)


def test_partner_down_waits_for_the_acked_pet_of_partner_addresses() -> None:
    p = HotStandbyPolicy(SEC, MCLT, lambda: StateView(S.PARTNER_DOWN, T0))
    free = Lease(POOL[50], 1, BindingState.FREE)
    p.received(free.address, T0 + 1000)  # the primary had told us a PET for it
    assert not p.may_allocate(free, T0 + 1299)
    assert p.may_allocate(free, T0 + 1300)


def test_received_pet_is_the_base_even_when_lower() -> None:
    p = HotStandbyPolicy(P, MCLT, lambda: S.NORMAL)
    a = POOL[1]
    p.received(a, T0 + 5000)
    assert p.base(Lease(a, 1)) == T0 + 5000
    p.received(a, T0 + 100)
    assert p.base(Lease(a, 1)) == T0 + 100
    assert p.base(Lease(a, 1, tsfp=T0 + 200)) == T0 + 200  # the stored lease's value counts


def test_acknowledged_without_a_queued_update_changes_nothing() -> None:
    p = HotStandbyPolicy(P, MCLT, lambda: S.NORMAL)
    p.acknowledged(POOL[1])
    assert p.base(Lease(POOL[1], 1)) == 0.0
    p.acknowledged(POOL[1], T0 + 42)
    assert p.base(Lease(POOL[1], 1)) == T0 + 42


def test_non_active_changes_are_queued_without_pet() -> None:
    p = HotStandbyPolicy(P, MCLT, lambda: S.NORMAL)
    p.lease_changed(Lease(POOL[1], 1, BindingState.EXPIRED, hwaddr=mac(1), end=T0), T0)
    (u,) = p.drain_updates()
    assert u.pet is None and u.lease.state is BindingState.EXPIRED and u.queued_at == T0


# ---------------------------------------------------------------- the invariant, via the policy


@given(
    tsfp=st.one_of(st.just(0.0), st.floats(T0 - 1e5, T0 + 1e5)),
    acked=st.one_of(st.none(), st.floats(T0 - 1e5, T0 + 1e5)),
    now=st.floats(T0 - 1e5, T0 + 1e5),
    desired=st.integers(1, 10 * 86400),
    state=st.sampled_from(list(ServerState)),
    previous=st.one_of(st.none(), st.sampled_from(list(ServerState))),
    since_ago=st.floats(0, 1e5),
    role=st.sampled_from([P, SEC]),
)
def test_policy_never_grants_past_mclt_beyond_the_acknowledged(
    tsfp: float,
    acked: float | None,
    now: float,
    desired: int,
    state: ServerState,
    previous: ServerState | None,
    since_ago: float,
    role: Role,
) -> None:
    p = HotStandbyPolicy(role, MCLT, lambda: StateView(state, now - since_ago, previous))
    le = Lease(POOL[1], 1, BindingState.ACTIVE, tsfp=tsfp, end=now + 10)
    if acked is not None:
        p.received(le.address, acked)
    base = max(tsfp, acked or 0.0)
    granted = p.max_lease_time(le, desired, now)
    assert 1 <= granted <= desired
    assert now + granted <= MCLT + max(now, base)
    le.end = now + granted
    p.lease_changed(le, now)
    (u,) = p.drain_updates()
    assert u.pet is not None and u.pet >= le.end


def test_engine_reply_never_exceeds_invariant_over_a_run() -> None:
    """Many clients, renewals with and without acknowledgements, state changes: every lease
    the engine hands out ends within MCLT of what the partner acknowledged."""
    w = World(P)
    w.load_reserve()
    acked: dict[IPv4Address, float] = {}
    states = [S.NORMAL, S.COMMUNICATIONS_INTERRUPTED, S.PARTNER_DOWN, S.NORMAL]
    now = T0
    bound: dict[int, IPv4Address] = {}
    for step in range(120):
        if step % 30 == 0:
            w.set_state(states[step // 30], now)
        i = step % 17
        hw = mac(i)
        if i in bound:
            out = renew(w, hw, bound[i], now)
        else:
            out = w.send(dmsg(MessageType.DISCOVER, hw), now)
            if out.replies:
                a = out.replies[0].msg.yiaddr
                out = w.send(dmsg(MessageType.REQUEST, hw, requested=a, server_id=w.sid), now)
        if reply_type(out) is MessageType.ACK:
            a = out.replies[0].msg.yiaddr
            bound[i] = a
            assert now + lease_time(out) <= MCLT + max(now, acked.get(a, 0.0))
        for u in w.policy.drain_updates():
            if step % 3:  # the partner acknowledges two updates in three
                w.policy.acknowledged(u.lease.address)
                acked[u.lease.address] = u.pet or acked.get(u.lease.address, 0.0)
        now += 37.0
    assert len(bound) == 17
