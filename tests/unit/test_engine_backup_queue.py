"""The pool keeps FREE and BACKUP addresses in separate queues and the engine takes only from
the kinds the failover policy may use now (``usable_states``): a primary never pops the
standby's reserve, a standby in COMMUNICATIONS-INTERRUPTED takes only BACKUP, PARTNER-DOWN
after the MCLT takes both, load-balance servers each take their own (docs/performance.md,
"Address choice on a pair's primary")."""

from __future__ import annotations

import itertools
from ipaddress import IPv4Address, IPv4Network

import pytest

from tandem.config.schema import Config, LeaseTimes, Pool, ServerSection, Subnet
from tandem.dhcp.engine import Engine
from tandem.dhcp.types import RxInfo
from tandem.failover import bindings
from tandem.failover.bindings import Role
from tandem.failover.hot_standby import HotStandbyPolicy, StateView
from tandem.failover.load_balance import LoadBalancePolicy
from tandem.failover.policy import ANY_AVAILABLE, StandalonePolicy, usable_states
from tandem.leases.model import BindingState, Lease
from tandem.leases.table import AddressPool
from tandem.wire.dhcp import DhcpMessage, MessageType
from tandem.wire.failover import ServerState

IP = IPv4Address
T0 = 1_700_000_000.0
MCLT = 300
S = ServerState
B = BindingState
P, SEC = Role.PRIMARY, Role.SECONDARY
SID = IP("192.0.2.1")
RX = RxInfo(src_ip=IP("0.0.0.0"), src_port=68, interface="e", local_ip=SID)


def addr(n: int) -> IPv4Address:
    """Pool address n (0-based): 192.0.2.10 + n, up to 200 addresses (.10 - .209)."""
    return IP(int(IP("192.0.2.10")) + n)


def config(pool_size: int) -> Config:
    return Config(
        server=ServerSection(server_id=SID),
        lease=LeaseTimes(
            default_lease_time_s=600,
            max_lease_time_s=600,
            min_lease_time_s=10,
            offer_hold_s=30,
            decline_probation_s=600,
        ),
        subnets=[
            Subnet(
                prefix=IPv4Network("192.0.2.0/24"),
                pools=[Pool(start=addr(0), end=addr(pool_size - 1))],
                lease_time_s=600,
            )
        ],
    )


def mac(n: int) -> bytes:
    return bytes((0x02, 0, 0, 0, (n >> 8) & 0xFF, n & 0xFF))


def message(mt: MessageType, hw: bytes, **opts: bytes) -> DhcpMessage:
    o: dict[int, bytes] = {53: bytes((mt,))}
    for code, value in opts.items():
        o[int(code[1:])] = value
    return DhcpMessage(op=1, htype=1, hlen=6, xid=7, chaddr=hw + bytes(10), options=o)


class Counting:
    """Wraps a policy's may_allocate: every call and every refusal (state of the lease)."""

    def __init__(self, policy: HotStandbyPolicy) -> None:
        self.calls = 0
        self.refused: list[BindingState] = []
        self.allowed: list[BindingState] = []
        inner = policy.may_allocate

        def may_allocate(lease: Lease, now: float) -> bool:
            self.calls += 1
            ok = inner(lease, now)
            (self.allowed if ok else self.refused).append(lease.state)
            return ok

        policy.may_allocate = may_allocate  # type: ignore[method-assign]


class Server:
    """One engine with a hot-standby (or load-balance) policy in a state the test sets."""

    def __init__(
        self,
        role: Role,
        state: ServerState = S.NORMAL,
        *,
        pool_size: int = 200,
        since: float = T0 - 10_000,
        policy: HotStandbyPolicy | None = None,
    ) -> None:
        self.view = StateView(state, since, S.STARTUP)
        self.policy = policy or HotStandbyPolicy(role, MCLT, lambda: self.view)
        self.count = Counting(self.policy)
        self.engine = Engine(config(pool_size), self.policy)
        self.pool = self.engine.subnets.all[0].pool
        self.clients = itertools.count(1)

    def own(self, n: int, state: BindingState, now: float = T0) -> None:
        self.engine.apply(Lease(addr(n), 1, state), now)

    def discover(self, now: float, hw: bytes | None = None) -> IPv4Address | None:
        hw = hw if hw is not None else mac(next(self.clients))
        out = self.engine.handle(message(MessageType.DISCOVER, hw), RX, now)
        if not out.replies:
            return None
        return out.replies[0].msg.yiaddr

    def dora(self, now: float, hw: bytes | None = None) -> IPv4Address | None:
        hw = hw if hw is not None else mac(next(self.clients))
        a = self.discover(now, hw)
        if a is None:
            return None
        req = message(MessageType.REQUEST, hw, o50=a.packed, o54=SID.packed)
        out = self.engine.handle(req, RX, now)
        assert out.replies and out.replies[0].msg.message_type is MessageType.ACK
        return a


# ---------------------------------------------------------------- the pool's queues


def test_pool_keeps_an_address_in_one_queue_only() -> None:
    p = AddressPool([(10, 20)])
    p.push_backup(11)
    p.push_backup(12)
    p.push_free(13)
    assert (p.queued(), p.queued_backup()) == ((1, 0), 2)
    p.push_free(11)  # BACKUP -> FREE moves it
    assert (p.queued(), p.queued_backup()) == ((2, 0), 1)
    p.push_reusable(12)  # and BACKUP -> reusable
    assert (p.queued(), p.queued_backup()) == ((2, 1), 0)
    p.push_backup(13)  # FREE -> BACKUP
    assert (p.queued(), p.queued_backup()) == ((1, 1), 1)
    assert p.pop_backup() == 13 and p.pop_backup() is None
    p.push_backup(14)
    p.discard(14)
    assert p.pop_backup() is None
    assert p.pop_free() == 11 and p.pop_free() is None
    assert p.pop_reusable() == 12


# ---------------------------------------------------------------- (a) no refusals on the primary


def test_primary_with_half_the_pool_backup_at_the_head_allocates_first_try() -> None:
    srv = Server(P)
    for n in range(100):  # the reserve first: the head of the old shared free queue
        srv.own(n, B.BACKUP)
    for n in range(100, 200):
        srv.own(n, B.FREE)
    srv.count.calls = 0
    a = srv.discover(T0 + 1)
    assert a is not None and int(a) >= int(addr(100))  # a FREE one
    assert srv.count.calls == 1 and srv.count.refused == []
    for _ in range(20):
        assert srv.dora(T0 + 2) is not None
    assert srv.count.refused == []  # never asked about a BACKUP address
    assert B.BACKUP not in srv.count.allowed
    assert srv.pool.queued_backup() == 100  # the reserve was never popped


def test_primary_keeps_a_clients_own_address_with_a_reserve_queued() -> None:
    srv = Server(P)
    for n in range(50):
        srv.own(n, B.BACKUP)
    hw = mac(900)
    first = srv.dora(T0, hw)
    assert first is not None
    srv.count.calls = 0
    assert srv.discover(T0 + 60, hw) == first  # its current binding, not a queue address
    assert srv.count.refused == []


# ---------------------------------------------------------------- (b) no false exhaustion


@pytest.mark.parametrize("free_kind", ["records", "never-used"])
def test_primary_leases_every_free_address_behind_a_large_reserve(free_kind: str) -> None:
    srv = Server(P)
    for n in range(150):
        srv.own(n, B.BACKUP)
    if free_kind == "records":  # FREE records queued behind the reserve
        for n in range(150, 200):
            srv.own(n, B.FREE)
    got = [srv.dora(T0 + 1) for _ in range(50)]
    assert None not in got
    assert {int(a) for a in got if a is not None} == {int(addr(n)) for n in range(150, 200)}
    assert srv.engine.stats["pool_exhausted"] == 0
    assert srv.discover(T0 + 2) is None  # now really exhausted: the reserve is not ours
    assert srv.engine.stats["pool_exhausted"] == 1
    assert srv.count.refused == []


# ---------------------------------------------------------------- (c) the standby


def test_standby_in_communications_interrupted_allocates_only_backup() -> None:
    srv = Server(SEC, S.COMMUNICATIONS_INTERRUPTED, pool_size=40)
    reserve = {int(addr(n)) for n in range(30, 38)}
    for n in range(0, 10):
        srv.own(n, B.FREE)  # FREE records queued first
    for a in sorted(reserve):
        srv.own(int(a) - int(addr(0)), B.BACKUP)
    # .10 - .19 FREE records, .20 - .39 never used except the reserve .40 - .47
    got = [srv.dora(T0 + 1) for _ in range(8)]
    assert {int(a) for a in got if a is not None} == reserve
    assert srv.discover(T0 + 2) is None
    assert srv.engine.stats["pool_exhausted"] == 1
    assert srv.count.refused == []  # never touched a FREE address
    assert set(srv.count.allowed) == {B.BACKUP}
    assert srv.pool.queued() == (10, 0)


def test_standby_in_normal_allocates_nothing_and_touches_nothing() -> None:
    srv = Server(SEC, S.NORMAL, pool_size=20)
    for n in range(5):
        srv.own(n, B.BACKUP)
    # hot standby: NORMAL standby does not answer; the allocation query itself says BACKUP
    assert srv.policy.usable_states(T0) == (B.BACKUP,)
    assert srv.discover(T0) is None and srv.count.calls == 0


def test_partner_down_takes_the_partners_addresses_only_after_the_mclt() -> None:
    since = T0
    srv = Server(SEC, S.PARTNER_DOWN, pool_size=10, since=since)
    srv.own(0, B.BACKUP)
    for n in range(1, 4):
        srv.own(n, B.FREE)
    # before STOS + MCLT: its own reserve, then nothing (FREE never popped)
    assert srv.dora(since + 10) == addr(0)
    assert srv.discover(since + 11) is None
    assert srv.count.refused == []
    # after: its own first (none left), then the primary's FREE records, then never used
    got = [srv.dora(since + MCLT + 1) for _ in range(9)]
    assert got == [addr(n) for n in range(1, 10)]
    assert srv.count.refused == []


def test_partner_down_primary_prefers_its_own_then_the_reserve() -> None:
    since = T0
    srv = Server(P, S.PARTNER_DOWN, pool_size=6, since=since)
    for n in range(3):
        srv.own(n, B.BACKUP)
    srv.own(3, B.FREE)
    got = [srv.dora(since + MCLT + 1) for _ in range(6)]
    assert got == [addr(3), addr(4), addr(5), addr(0), addr(1), addr(2)]


@pytest.mark.parametrize("role", [P, SEC])
def test_load_balance_each_server_takes_its_own(role: Role) -> None:
    view = StateView(S.NORMAL, T0 - 10_000, S.STARTUP)
    policy = LoadBalancePolicy(role, MCLT, lambda: view)
    srv = Server(role, pool_size=20, policy=policy)
    for n in range(10):
        srv.own(n, B.BACKUP)
    for n in range(10, 15):
        srv.own(n, B.FREE)
    mine = (h for h in (mac(i) for i in range(1, 5000)) if policy.is_mine(message(1, h)))
    got = [srv.dora(T0 + 1, next(mine)) for _ in range(10)]
    if role is P:  # its FREE records, then never-used addresses (FREE too)
        assert got == [addr(n) for n in range(10, 20)]
    else:
        assert got == [addr(n) for n in range(10)]
    assert srv.count.refused == []
    assert srv.discover(T0 + 2, next(mine)) is None


# ---------------------------------------------------------------- (d) moves between queues


def test_apply_moves_addresses_between_the_free_and_backup_queues() -> None:
    srv = Server(P, pool_size=6)
    for n in range(6):
        srv.own(n, B.FREE)
    assert (srv.pool.queued(), srv.pool.queued_backup()) == ((6, 0), 0)
    for n in (0, 1, 2):  # rebalance: FREE -> BACKUP
        srv.own(n, B.BACKUP)
    assert (srv.pool.queued(), srv.pool.queued_backup()) == ((3, 0), 3)
    srv.own(1, B.FREE)  # and one back: BACKUP -> FREE
    assert (srv.pool.queued(), srv.pool.queued_backup()) == ((4, 0), 2)
    got = {srv.dora(T0 + 1) for _ in range(4)}
    assert got == {addr(1), addr(3), addr(4), addr(5)}
    assert srv.discover(T0 + 2) is None  # .10 and .12 are the standby's
    assert srv.count.refused == []


def test_apply_backup_of_a_lapsed_offer_lands_in_the_backup_queue() -> None:
    srv = Server(P, pool_size=4)
    a = srv.discover(T0)
    assert a is not None
    srv.engine.apply(Lease(a, 1, B.BACKUP), T0 + 1)  # moved to the reserve while offered
    assert srv.pool.queued_backup() == 0  # held: in no queue
    srv.engine.handle_timer(T0 + 100)  # the hold lapses: to the reserve, not the free queue
    assert srv.pool.queued() == (0, 0) and srv.pool.queued_backup() == 1


def test_loaded_backup_records_go_to_the_backup_queue() -> None:
    srv = Server(P, pool_size=4)
    srv.engine.load(
        [Lease(addr(0), 1, B.BACKUP), Lease(addr(1), 1, B.FREE), Lease(addr(2), 1, B.BACKUP)],
        T0,
    )
    assert (srv.pool.queued(), srv.pool.queued_backup()) == ((1, 0), 2)
    assert [srv.dora(T0 + 1) for _ in range(3)] == [addr(1), addr(3), None]


# ---------------------------------------------------------------- standalone and the query


def test_standalone_still_uses_every_kind_without_asking() -> None:
    eng = Engine(config(4))
    assert eng._trusting
    eng.apply(Lease(addr(0), 1, B.BACKUP), T0)
    eng.apply(Lease(addr(1), 1, B.FREE), T0)
    got = []
    for i in range(5):
        out = eng.handle(message(MessageType.DISCOVER, mac(i + 1)), RX, T0 + 1)
        got.append(out.replies[0].msg.yiaddr if out.replies else None)
    # FREE queue, never-used, then BACKUP
    assert got == [addr(1), addr(2), addr(3), addr(0), None]
    assert StandalonePolicy().usable_states(T0) == ANY_AVAILABLE


def test_usable_states_defaults_for_a_policy_without_the_query() -> None:
    class Bare:
        pass

    assert usable_states(Bare(), T0) == ANY_AVAILABLE  # type: ignore[arg-type]


_LEASE_STATES = [B.FREE, B.BACKUP, B.EXPIRED, B.RELEASED, B.RESET, B.ACTIVE, B.ABANDONED]


@pytest.mark.parametrize("role", [P, SEC])
@pytest.mark.parametrize("state", list(ServerState))
def test_usable_states_names_everything_may_allocate_allows(role: Role, state: S) -> None:
    """The query must never hide an address the per-address rule would allow."""
    pd_since = T0
    for dt, lstate, end, pet in itertools.product(
        (0, MCLT - 1, MCLT, 5 * MCLT), _LEASE_STATES, (0.0, T0 + 100), (0.0, T0 + 200)
    ):
        now = T0 + dt
        lease = Lease(IP("192.0.2.9"), 1, lstate, end=end, tstp=pet, tsfp=pet)
        since = pd_since if state is S.PARTNER_DOWN else None
        ok = bindings.may_allocate(lease, role, state, now, MCLT, partner_down_since=since)
        names = bindings.usable_states(role, state, now, MCLT, partner_down_since=since)
        effective = B.EXPIRED if lstate is B.ACTIVE else lstate  # an ended ACTIVE
        if ok:
            assert effective in names, (dt, lstate, end, pet)
        assert set(names) <= set(ANY_AVAILABLE)
        if names:
            assert names[0] is bindings.own_free_state(role)
