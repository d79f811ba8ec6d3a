"""Ownership, the standby reserve, binding transitions and BNDUPD conflict resolution
(failover-protocol.md §1.2, §5.2, §5.4, §9; hot-standby.md 3.1, 4.3)."""

from __future__ import annotations

from dataclasses import replace
from ipaddress import IPv4Address

import pytest

from tandem.failover.bindings import (
    CONFLICT_TABLE,
    ReceivedBinding,
    Role,
    choose_for_backup,
    choose_for_reclaim,
    count_states,
    may_allocate,
    may_rebalance,
    never_leased,
    rebalance_delta,
    reserve_target,
    resolve_update,
    same_client,
    transition_allowed,
)
from tandem.leases.model import BindingState, Lease
from tandem.wire.failover import BindingStatus, RejectReason, ServerState

IP = IPv4Address
T0 = 1_700_000_000.0
MCLT = 300
B = BindingState
S = ServerState
P, SEC = Role.PRIMARY, Role.SECONDARY
ADDR = IP("192.0.2.10")
MAC_A = b"\x02\x00\x00\x00\x00\x0a"
MAC_B = b"\x02\x00\x00\x00\x00\x0b"


def lease(state: BindingState, **kw: object) -> Lease:
    return Lease(ADDR, 1, state, **kw)  # type: ignore[arg-type]


# ---------------------------------------------------------------- ownership (may_allocate)

# (role, server state, lease, partner-down since, now, expected, why)
ALLOC = [
    (P, S.NORMAL, lease(B.FREE), None, T0, True, "FREE is the primary's"),
    (P, S.NORMAL, lease(B.BACKUP), None, T0, False, "BACKUP is the standby's"),
    (SEC, S.NORMAL, lease(B.BACKUP), None, T0, True, "ownership alone (matrix gates NORMAL)"),
    (SEC, S.NORMAL, lease(B.FREE), None, T0, False, "FREE is the primary's"),
    (SEC, S.COMMUNICATIONS_INTERRUPTED, lease(B.BACKUP), None, T0, True, "2.2 reserve"),
    (SEC, S.COMMUNICATIONS_INTERRUPTED, lease(B.FREE), None, T0, False, "never FREE in COMM-INT"),
    (P, S.COMMUNICATIONS_INTERRUPTED, lease(B.FREE), None, T0, True, "own pool"),
    (P, S.COMMUNICATIONS_INTERRUPTED, lease(B.BACKUP), None, T0, False, "partner's pool"),
    (SEC, S.RESOLUTION_INTERRUPTED, lease(B.BACKUP), None, T0, True, "own pool"),
    (SEC, S.RESOLUTION_INTERRUPTED, lease(B.FREE), None, T0, False, "partner's pool"),
    (P, S.CONFLICT_DONE, lease(B.FREE), None, T0, True, "primary fully responsive"),
    (SEC, S.CONFLICT_DONE, lease(B.BACKUP), None, T0, False, "not a secondary state"),
    (SEC, S.PARTNER_DOWN, lease(B.BACKUP), T0, T0, True, "own pool at once"),
    (SEC, S.PARTNER_DOWN, lease(B.FREE), T0, T0 + 299, False, "3.1 before MCLT"),
    (SEC, S.PARTNER_DOWN, lease(B.FREE), T0, T0 + 300, True, "3.1 after MCLT"),
    (SEC, S.PARTNER_DOWN, lease(B.FREE), None, T0 + 9999, False, "unknown start: never"),
    (SEC, S.PARTNER_DOWN, lease(B.FREE, tsfp=T0 + 500), T0, T0 + 700, False, "PET + MCLT"),
    (SEC, S.PARTNER_DOWN, lease(B.FREE, tsfp=T0 + 500), T0, T0 + 800, True, "PET + MCLT"),
    (P, S.PARTNER_DOWN, lease(B.BACKUP), T0, T0 + 299, False, "primary: before MCLT"),
    (P, S.PARTNER_DOWN, lease(B.BACKUP), T0, T0 + 300, True, "primary: after MCLT"),
    (P, S.PARTNER_DOWN, lease(B.FREE), T0, T0, True, "own pool"),
    (P, S.NORMAL, lease(B.EXPIRED, end=T0 - 1), None, T0, False, "EXPIRED awaits ACK"),
    (P, S.NORMAL, lease(B.RELEASED, end=T0 - 1), None, T0, False, "RELEASED awaits ACK"),
    (P, S.NORMAL, lease(B.RESET), None, T0, False, "RESET awaits ACK"),
    (P, S.COMMUNICATIONS_INTERRUPTED, lease(B.EXPIRED), None, T0, False, "no ACK possible"),
    (P, S.NORMAL, lease(B.ACTIVE, end=T0 + 1), None, T0, False, "bound"),
    (P, S.NORMAL, lease(B.ACTIVE, end=T0 - 1), None, T0, False, "ended, not acknowledged"),
    (P, S.NORMAL, lease(B.ABANDONED), None, T0, False, "abandoned"),
    (P, S.PARTNER_DOWN, lease(B.ABANDONED), T0, T0 + 9999, False, "abandoned"),
    (SEC, S.PARTNER_DOWN, lease(B.EXPIRED, end=T0 + 100), T0, T0 + 399, False, "end + MCLT"),
    (SEC, S.PARTNER_DOWN, lease(B.EXPIRED, end=T0 + 100), T0, T0 + 400, True, "end + MCLT"),
    (SEC, S.PARTNER_DOWN, lease(B.RELEASED, tstp=T0 + 900), T0, T0 + 1199, False, "sent PET"),
    (SEC, S.PARTNER_DOWN, lease(B.RELEASED, tstp=T0 + 900), T0, T0 + 1200, True, "sent PET"),
    (P, S.PARTNER_DOWN, lease(B.ACTIVE, end=T0 + 50, tsfp=T0 + 60), T0, T0 + 359, False, "PET"),
    (P, S.PARTNER_DOWN, lease(B.ACTIVE, end=T0 + 50, tsfp=T0 + 60), T0, T0 + 360, True, "PET"),
    (P, S.RECOVER_DONE, lease(B.FREE), None, T0, False, "no new allocations"),
    (SEC, S.RECOVER_DONE, lease(B.BACKUP), None, T0, False, "no new allocations"),
    *[
        (r, s, lease(B.FREE if r is P else B.BACKUP), T0, T0 + 9999, False, "silent state")
        for r in (P, SEC)
        for s in (
            S.STARTUP,
            S.RECOVER,
            S.RECOVER_WAIT,
            S.POTENTIAL_CONFLICT,
            S.PAUSED,
            S.SHUTDOWN,
            S.UNKNOWN,
        )
    ],
]


@pytest.mark.parametrize(
    ("role", "state", "le", "pd_since", "now", "expected", "why"),
    ALLOC,
    ids=[f"{a[0].value}-{a[1].name}-{a[2].state.name}-{a[6]}" for a in ALLOC],
)
def test_may_allocate(
    role: Role,
    state: ServerState,
    le: Lease,
    pd_since: float | None,
    now: float,
    expected: bool,
    why: str,
) -> None:
    assert may_allocate(le, role, state, now, MCLT, partner_down_since=pd_since) is expected


# ---------------------------------------------------------------- reserve

# (FREE, BACKUP, reserve %, expected target)
TARGETS = [
    (80, 20, 20, 20),  # reference: 100 addresses, 20 % -> 20
    (100, 0, 20, 20),
    (80, 10, 20, 18),  # standby leased 10 of its reserve
    (0, 0, 20, 0),
    (99, 0, 5, 4),  # floor(4.95)
    (100, 0, 5, 5),  # Windows default
    (70, 30, 0, 0),  # 0 % allowed: no reserve
    (10, 0, 100, 10),
    (3, 0, 33.4, 1),
]


@pytest.mark.parametrize(("free", "backup", "pct", "expected"), TARGETS)
def test_reserve_target(free: int, backup: int, pct: float, expected: int) -> None:
    assert reserve_target(free, backup, pct) == expected


@pytest.mark.parametrize("pct", [-1, 100.5])
def test_reserve_pct_out_of_range(pct: float) -> None:
    with pytest.raises(ValueError):
        reserve_target(10, 0, pct)


# (FREE, BACKUP, reserve %, tolerance, expected delta)
DELTAS = [
    (100, 0, 20, 0, 20),  # initial push to the standby
    (80, 20, 20, 0, 0),  # balanced
    (80, 10, 20, 0, 8),  # 4.3: top up what the outage used
    (80, 10, 20, 8, 0),  # within tolerance
    (80, 10, 20, 7, 8),  # just outside tolerance
    (50, 30, 20, 0, -14),  # surplus: take back
    (50, 30, 20, 14, 0),
    (50, 30, 20, 13, -14),
    (0, 0, 20, 0, 0),
    (1, 0, 100, 0, 1),
]


@pytest.mark.parametrize(("free", "backup", "pct", "tol", "expected"), DELTAS)
def test_rebalance_delta(free: int, backup: int, pct: float, tol: int, expected: int) -> None:
    assert rebalance_delta(free, backup, pct, tol) == expected


@pytest.mark.parametrize(
    ("role", "state", "expected"),
    [
        (P, S.NORMAL, True),
        (SEC, S.NORMAL, False),
        (P, S.COMMUNICATIONS_INTERRUPTED, False),
        (P, S.PARTNER_DOWN, False),
        (P, S.RECOVER_DONE, False),
    ],
)
def test_may_rebalance(role: Role, state: ServerState, expected: bool) -> None:
    assert may_rebalance(role, state) is expected


def _addr(n: int) -> IPv4Address:
    return IP(int(IP("192.0.2.0")) + n)


def test_never_leased() -> None:
    assert never_leased(None)
    assert never_leased(Lease(ADDR, 1, B.FREE))
    assert not never_leased(Lease(ADDR, 1, B.FREE, hwaddr=MAC_A, cltt=T0))
    assert not never_leased(Lease(ADDR, 1, B.FREE, client_id=b"\x01x"))
    assert not never_leased(Lease(ADDR, 1, B.FREE, cltt=T0))


def test_choose_for_backup_prefers_never_leased_then_oldest() -> None:
    used_new = Lease(_addr(1), 1, B.FREE, hwaddr=MAC_A, cltt=T0, end=T0 + 50)
    used_old = Lease(_addr(2), 1, B.FREE, hwaddr=MAC_B, cltt=T0, end=T0 + 10)
    cands = [
        (_addr(1), used_new),
        (_addr(9), None),
        (_addr(2), used_old),
        (_addr(5), Lease(_addr(5), 1, B.FREE)),
        (_addr(3), Lease(_addr(3), 1, B.BACKUP)),  # already the standby's: skipped
        (_addr(4), Lease(_addr(4), 1, B.ACTIVE, hwaddr=MAC_A, cltt=T0)),  # skipped
    ]
    assert choose_for_backup(cands, 1) == [_addr(5)]
    assert choose_for_backup(cands, 3) == [_addr(5), _addr(9), _addr(2)]
    assert choose_for_backup(cands, 10) == [_addr(5), _addr(9), _addr(2), _addr(1)]
    assert choose_for_backup(cands, 0) == []


def test_choose_for_reclaim_prefers_used_then_highest() -> None:
    used = Lease(_addr(1), 1, B.BACKUP, hwaddr=MAC_A, cltt=T0, end=T0)
    cands = [
        (_addr(1), used),
        (_addr(2), Lease(_addr(2), 1, B.BACKUP)),
        (_addr(7), Lease(_addr(7), 1, B.BACKUP)),
        (_addr(8), Lease(_addr(8), 1, B.FREE)),  # not BACKUP
        (_addr(9), None),  # no record: not BACKUP
    ]
    assert choose_for_reclaim(cands, 2) == [_addr(1), _addr(7)]
    assert choose_for_reclaim(cands, 5) == [_addr(1), _addr(7), _addr(2)]
    assert choose_for_reclaim(cands, -1) == []


def test_reserve_top_up_after_outage_reference_scope() -> None:
    """hot-standby.md 4.3 on the reference scope: 100 addresses, 20 % reserve. The standby
    leased 10 reserve addresses during the outage, the primary 5 FREE ones; the primary's
    top-up takes never-leased FREE addresses until the reserve is at its percentage."""
    leases: dict[IPv4Address, Lease | None] = {_addr(10 + i): None for i in range(100)}
    addrs = sorted(leases)
    for a in addrs[:20]:  # initial reserve
        leases[a] = Lease(a, 1, B.BACKUP)
    for i, a in enumerate(addrs[:10]):  # standby leases during the outage
        leases[a] = Lease(a, 1, B.ACTIVE, hwaddr=bytes([2, 0, 0, 0, 1, i]), cltt=T0, end=T0 + 300)
    for i, a in enumerate(addrs[20:25]):  # primary leases
        leases[a] = Lease(a, 1, B.ACTIVE, hwaddr=bytes([2, 0, 0, 0, 2, i]), cltt=T0, end=T0 + 600)
    # one address released earlier and acknowledged: FREE but previously used
    reused = addrs[25]
    leases[reused] = Lease(reused, 1, B.FREE, hwaddr=MAC_A, cltt=T0 - 900, end=T0 - 800)

    def counts() -> tuple[int, int]:
        states = [le.state if le is not None else B.FREE for le in leases.values()]
        return states.count(B.FREE), states.count(B.BACKUP)

    free, backup = counts()
    assert (free, backup) == (75, 10)
    delta = rebalance_delta(free, backup, 20)
    assert delta == 7  # floor(85 * 20 %) = 17
    chosen = choose_for_backup(
        ((a, le) for a, le in leases.items() if le is None or le.state is B.FREE), delta
    )
    assert reused not in chosen  # never-leased first
    assert all(leases[a] is None for a in chosen)
    for a in chosen:
        leases[a] = Lease(a, 1, B.BACKUP)
    free, backup = counts()
    assert backup == reserve_target(free, backup, 20) == 17
    assert rebalance_delta(free, backup, 20) == 0


def test_count_states() -> None:
    c = count_states([lease(B.FREE), lease(B.FREE), lease(B.BACKUP)])
    assert c[B.FREE] == 2 and c[B.BACKUP] == 1 and c[B.ACTIVE] == 0
    assert set(c) == set(BindingState)


# ---------------------------------------------------------------- transitions (§5.2)

_ALWAYS = {
    (B.FREE, B.ACTIVE),
    (B.FREE, B.BACKUP),
    (B.BACKUP, B.ACTIVE),
    (B.BACKUP, B.FREE),
    (B.ACTIVE, B.EXPIRED),
    (B.ACTIVE, B.RELEASED),
    *{(s, B.ABANDONED) for s in BindingState},
    *{(s, B.RESET) for s in BindingState},
    *{(s, s) for s in BindingState},
}
_AFTER_ACK = {(s, t) for s in (B.EXPIRED, B.RELEASED, B.RESET) for t in (B.FREE, B.BACKUP)}
_REWIND = {(B.EXPIRED, B.ACTIVE), (B.RELEASED, B.ACTIVE)}
_PAIRS = [(s, t) for s in BindingState for t in BindingState]


@pytest.mark.parametrize(("old", "new"), _PAIRS, ids=[f"{s.name}->{t.name}" for s, t in _PAIRS])
def test_transitions(old: BindingState, new: BindingState) -> None:
    plain = transition_allowed(old, new)
    acked = transition_allowed(old, new, partner_acked=True)
    pd = transition_allowed(old, new, partner_down_mclt_passed=True)
    rewind = transition_allowed(old, new, same_client_unreported=True)
    if (old, new) in _ALWAYS:
        assert (plain, acked, pd, rewind) == (True, True, True, True)
    elif (old, new) in _AFTER_ACK:
        assert (plain, acked, pd, rewind) == (False, True, True, False)
    elif (old, new) in _REWIND:
        assert (plain, acked, pd, rewind) == (False, False, False, True)
    else:
        assert (plain, acked, pd, rewind) == (False, False, False, False)


def test_transition_spot_checks() -> None:
    """A few the spec names explicitly, independent of the sets above."""
    assert not transition_allowed(B.ACTIVE, B.FREE)  # must go through EXPIRED/RELEASED
    assert not transition_allowed(B.ACTIVE, B.BACKUP)
    assert not transition_allowed(B.EXPIRED, B.FREE)  # not before the partner's ACK
    assert transition_allowed(B.EXPIRED, B.FREE, partner_acked=True)
    assert not transition_allowed(B.ABANDONED, B.FREE)
    assert transition_allowed(B.ABANDONED, B.RESET)


# ---------------------------------------------------------------- conflict resolution (§5.4)

_ROW_STATE = {
    "ACTIVE": B.ACTIVE,
    "EXPIRED": B.EXPIRED,
    "RELEASED": B.RELEASED,
    "FREE": B.FREE,
    "BACKUP": B.BACKUP,
    "RESET": B.RESET,
    "ABANDONED": B.ABANDONED,
}
_COLS = {
    "ACTIVE": [BindingStatus.ACTIVE],
    "EXPIRED": [BindingStatus.EXPIRED],
    "RELEASED": [BindingStatus.RELEASED],
    "FREE/BACKUP": [BindingStatus.FREE, BindingStatus.BACKUP],
    "RESET/ABANDONED": [BindingStatus.RESET, BindingStatus.ABANDONED],
}

# The §5.4 table restated independently of the module's CONFLICT_TABLE.
SPEC_TABLE = {
    "ACTIVE": ["accept5", "time2", "time1", "time2", "accept"],
    "EXPIRED": ["time1", "accept", "accept", "accept", "accept"],
    "RELEASED": ["time1", "time1", "accept", "accept", "accept"],
    "FREE": ["accept"] * 5,
    "BACKUP": ["accept"] * 5,
    "RESET": ["time3", "accept", "accept", "accept", "accept"],
    "ABANDONED": ["reject4", "reject4", "reject4", "reject4", "accept"],
}
# Tandem's two departures from it (docs/decisions.md, DST seed 119): a RESET/ABANDONED does
# not overwrite a newer local ACTIVE binding, and a newer ACTIVE overwrites a local ABANDONED.
DEPARTURES = {("ACTIVE", "RESET/ABANDONED"): "accept6", ("ABANDONED", "ACTIVE"): "time1"}
OUR_TABLE = {
    row: [DEPARTURES.get((row, col), rule) for col, rule in zip(_COLS, rules, strict=True)]
    for row, rules in SPEC_TABLE.items()
}

LOCAL_CLTT = T0 + 100
LOCAL_END = T0 + 400
LOCAL_STOS = T0 + 200


def _local(row: str) -> Lease:
    return Lease(
        ADDR, 1, _ROW_STATE[row], hwaddr=MAC_A, cltt=LOCAL_CLTT, start=LOCAL_CLTT, end=LOCAL_END
    )


def _received(status: BindingStatus, cltt: float | None, hw: bytes = MAC_A) -> ReceivedBinding:
    return ReceivedBinding(
        ADDR, status, cltt=cltt, lease_end=T0 + 2000, pet=T0 + 3000, hwaddr=hw, htype=1
    )


# Each rule as (case name, received CLTT, now, local stos, expected accept, reject reason)
_CASES: dict[str, list[tuple[str, float | None, float, float | None, bool, RejectReason | None]]]
_CASES = {
    "accept": [("any", None, T0, None, True, None)],
    "reject4": [
        ("newer cltt", T0 + 999, T0 + 9999, None, False, RejectReason.LESS_CRITICAL_BINDING_INFO)
    ],
    "time1": [
        ("later cltt", LOCAL_CLTT + 1, T0, None, True, None),
        ("same cltt", LOCAL_CLTT, T0, None, False, RejectReason.OUTDATED_BINDING_INFO),
        ("no cltt", None, T0 + 9999, None, False, RejectReason.OUTDATED_BINDING_INFO),
    ],
    "time2": [
        ("after local end", None, LOCAL_END + 1, None, True, None),
        ("at local end", T0 + 9999, LOCAL_END, None, False, RejectReason.OUTDATED_BINDING_INFO),
    ],
    "time3": [
        ("after stos", LOCAL_STOS + 1, T0, LOCAL_STOS, True, None),
        ("before stos", LOCAL_STOS - 1, T0, LOCAL_STOS, False, RejectReason.OUTDATED_BINDING_INFO),
        ("no cltt", None, T0, LOCAL_STOS, False, RejectReason.OUTDATED_BINDING_INFO),
        ("stos unknown: local cltt", LOCAL_CLTT + 1, T0, None, True, None),
        (
            "stos unknown, older",
            LOCAL_CLTT - 1,
            T0,
            None,
            False,
            RejectReason.OUTDATED_BINDING_INFO,
        ),
    ],
    "accept5": [("same client", LOCAL_CLTT - 50, T0, None, True, None)],
    "accept6": [
        ("later cltt", LOCAL_CLTT + 1, T0, None, True, None),
        ("same cltt", LOCAL_CLTT, T0, None, True, None),
        ("no cltt", None, T0, None, True, None),
        ("older cltt", LOCAL_CLTT - 1, T0, None, False, RejectReason.OUTDATED_BINDING_INFO),
    ],
}

CONFLICT_ROWS = [
    (row, col, status, rule, case)
    for row, rules in OUR_TABLE.items()
    for col, rule in zip(_COLS, rules, strict=True)
    for status in _COLS[col]
    for case in _CASES[rule]
]


@pytest.mark.parametrize(
    ("row", "col", "status", "rule", "case"),
    CONFLICT_ROWS,
    ids=[f"{r}<-{s.name}:{ru}:{c[0]}" for r, _c, s, ru, c in CONFLICT_ROWS],
)
@pytest.mark.parametrize("role", [P, SEC])
def test_conflict_table(
    row: str,
    col: str,
    status: BindingStatus,
    rule: str,
    case: tuple[str, float | None, float, float | None, bool, RejectReason | None],
    role: Role,
) -> None:
    name, cltt, now, stos, accept, reason = case
    if (row, status, name) == ("ACTIVE", BindingStatus.RELEASED, "same cltt"):
        accept, reason = True, None  # ISC's RELEASED keeps the CLTT (see the ISC tests below)
    local = _local(row)
    d = resolve_update(local, _received(status, cltt), now, role=role, local_stos=stos)
    assert (d.accept, d.reject_reason) == (accept, reason), d.rule
    if accept:
        assert d.lease is not None
        assert d.lease.state is BindingState(int(status))
        assert d.lease.tsfp == T0 + 3000  # the received PET becomes the base
        assert d.lease.end == T0 + 2000
        assert local.state is _ROW_STATE[row]  # the local record is not mutated
    else:
        assert d.lease is None


# ISC interop (tests/e2e/test_isc_interop.py): dhcpd does not refresh the CLTT on
# DHCPRELEASE, so its RELEASED carries the CLTT of the last renewal -- equal to ours.
@pytest.mark.parametrize("role", [P, SEC])
def test_isc_release_with_unchanged_cltt_is_accepted(role: Role) -> None:
    # our CLTT came from our own DHCP exchange (fractional); the wire carries whole seconds
    local = Lease(ADDR, 1, B.ACTIVE, hwaddr=MAC_A, cltt=T0 + 0.7, start=T0, end=T0 + 60)
    received = ReceivedBinding(
        ADDR, BindingStatus.RELEASED, cltt=T0, lease_end=T0 + 1, pet=T0 + 1, hwaddr=MAC_A
    )
    d = resolve_update(local, received, T0 + 1, role=role)
    assert d.accept and d.lease is not None and d.lease.state is B.RELEASED, d.rule


@pytest.mark.parametrize(
    ("cltt", "hw", "why"),
    [(T0 - 1, MAC_A, "older CLTT: the partner missed a renewal"), (T0, MAC_B, "other client")],
)
def test_release_with_older_cltt_or_other_client_still_rejected(
    cltt: float, hw: bytes, why: str
) -> None:
    local = Lease(ADDR, 1, B.ACTIVE, hwaddr=MAC_A, cltt=T0 + 0.7, start=T0, end=T0 + 60)
    received = ReceivedBinding(ADDR, BindingStatus.RELEASED, cltt=cltt, hwaddr=hw)
    d = resolve_update(local, received, T0 + 1, role=SEC)
    assert (d.accept, d.reject_reason) == (False, RejectReason.OUTDATED_BINDING_INFO), why


def test_module_table_matches_spec_table_but_for_the_departures() -> None:
    differ = set()
    for row, rules in SPEC_TABLE.items():
        module_row = "FREE/BACKUP" if row in ("FREE", "BACKUP") else row
        assert [CONFLICT_TABLE[module_row][c] for c in _COLS] == OUR_TABLE[row]
        differ |= {(row, c) for c, r in zip(_COLS, rules, strict=True) if CONFLICT_TABLE[
            module_row][c] != r}
    assert differ == set(DEPARTURES)


@pytest.mark.parametrize("role", [P, SEC])
def test_a_decline_recorded_before_our_newer_lease_does_not_erase_it(role: Role) -> None:
    """DST seed 119: the client declined the address at the partner during a partition
    (ABANDONED, CLTT = the decline) and then leased it from us (ACTIVE, later CLTT). The
    partner's ABANDONED is outdated here, and our ACTIVE wins there."""
    decline, lease_t = T0 + 100, T0 + 130
    ours = Lease(ADDR, 1, B.ACTIVE, hwaddr=MAC_A, cltt=lease_t, start=lease_t, end=lease_t + 60)
    abandoned = ReceivedBinding(ADDR, BindingStatus.ABANDONED, cltt=decline, lease_end=T0 + 700)
    d = resolve_update(ours, abandoned, lease_t + 5, role=role)
    assert (d.accept, d.reject_reason) == (False, RejectReason.OUTDATED_BINDING_INFO), d.rule
    # ... but a decline after our lease (or in the same second) is accepted, as the draft says
    for later in (lease_t, lease_t + 3):
        d = resolve_update(ours, replace(abandoned, cltt=later), lease_t + 5, role=role)
        assert d.accept and d.lease is not None and d.lease.state is B.ABANDONED
    # a start-time-of-state after our lease counts as well (ISC: CLTT may be the old one)
    d = resolve_update(ours, replace(abandoned, stos=lease_t + 2), lease_t + 5, role=role)
    assert d.accept
    # the mirror cell, at the partner: its ABANDONED record takes our newer ACTIVE
    theirs = Lease(ADDR, 1, B.ABANDONED, cltt=decline, start=decline, end=T0 + 700)
    active = ReceivedBinding(
        ADDR, BindingStatus.ACTIVE, cltt=lease_t, lease_end=lease_t + 60, pet=lease_t + 90,
        hwaddr=MAC_A,
    )
    d = resolve_update(theirs, active, lease_t + 5, role=role)
    assert d.accept and d.lease is not None and d.lease.state is B.ACTIVE
    d = resolve_update(theirs, replace(active, cltt=decline - 10), lease_t + 5, role=role)
    assert (d.accept, d.reject_reason) == (False, RejectReason.OUTDATED_BINDING_INFO)


@pytest.mark.parametrize(
    ("role", "expected", "reason"),
    [(SEC, True, None), (P, False, RejectReason.FATAL_CONFLICT)],
)
def test_active_vs_active_different_clients(
    role: Role, expected: bool, reason: RejectReason | None
) -> None:
    """(5): different clients: a secondary accepts, a primary rejects with reason 2."""
    d = resolve_update(
        _local("ACTIVE"), _received(BindingStatus.ACTIVE, T0 + 999, MAC_B), T0, role=role
    )
    assert (d.accept, d.reject_reason) == (expected, reason)
    if expected:
        assert d.lease is not None and d.lease.hwaddr == MAC_B


def test_unknown_address_is_treated_as_available() -> None:
    d = resolve_update(None, _received(BindingStatus.ACTIVE, T0), T0, role=P, subnet_id=7)
    assert d.accept and d.lease is not None
    assert (d.lease.address, d.lease.subnet_id, d.lease.state) == (ADDR, 7, B.ACTIVE)
    assert (d.lease.hwaddr, d.lease.cltt, d.lease.start, d.lease.end) == (
        MAC_A,
        T0,
        T0,
        T0 + 2000,
    )


@pytest.mark.parametrize(
    ("received", "kw", "reason"),
    [
        (
            _received(BindingStatus.ACTIVE, T0),
            {"in_relationship": False},
            RejectReason.ILLEGAL_IP_ADDRESS,
        ),
        (_received(BindingStatus.ACTIVE, T0, b""), {}, RejectReason.MISSING_BINDING_INFO),
        (
            replace(_received(BindingStatus.BACKUP, T0), reserved=True),
            {},
            RejectReason.IP_NOT_RESERVED,
        ),
    ],
)
def test_other_rejections(
    received: ReceivedBinding, kw: dict[str, bool], reason: RejectReason
) -> None:
    d = resolve_update(None, received, T0, role=SEC, **kw)
    assert (d.accept, d.reject_reason, d.lease) == (False, reason, None)


def test_reserved_backup_accepted_when_locally_reserved() -> None:
    r = replace(_received(BindingStatus.BACKUP, T0), reserved=True)
    assert resolve_update(None, r, T0, role=SEC, locally_reserved=True).accept


def test_active_with_client_id_only_is_complete() -> None:
    r = replace(_received(BindingStatus.ACTIVE, T0, b""), client_id=b"\x01abc")
    d = resolve_update(None, r, T0, role=P)
    assert d.accept and d.lease is not None and d.lease.client_id == b"\x01abc"


@pytest.mark.parametrize(
    ("local_cid", "recv_cid", "local_hw", "recv_hw", "expected"),
    [
        (b"\x01a", b"\x01a", MAC_A, MAC_B, True),  # client-ids decide when both present
        (b"\x01a", b"\x01b", MAC_A, MAC_A, False),
        (None, b"\x01a", MAC_A, MAC_A, True),  # else the hardware address
        (None, None, MAC_A, MAC_B, False),
    ],
)
def test_same_client(
    local_cid: bytes | None, recv_cid: bytes | None, local_hw: bytes, recv_hw: bytes, expected: bool
) -> None:
    local = Lease(ADDR, 1, B.ACTIVE, hwaddr=local_hw, client_id=local_cid)
    r = ReceivedBinding(ADDR, BindingStatus.ACTIVE, hwaddr=recv_hw, client_id=recv_cid)
    assert same_client(local, r) is expected
