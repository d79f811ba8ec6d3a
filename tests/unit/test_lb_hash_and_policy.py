"""Load balancing: the RFC 3074 hash (vectors), bucket shares, the HBA per dialect, the
load-balance answer table, and the FREE/BACKUP split plan (failover-protocol.md §8.2, §8.3,
§9; RFC 3074)."""

from __future__ import annotations

from ipaddress import IPv4Address
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tandem.config.validate import check_partners, load
from tandem.failover.bindings import Role
from tandem.failover.connection import ConnectionConfig, PeerConnection
from tandem.failover.events import Connected, ConnectionClosed
from tandem.failover.lb_hash import (
    MIX_TABLE,
    decode_hba,
    encode_hba,
    hash_key,
    lease_bucket,
    message_bucket,
    primary_buckets,
    rfc3074_hash,
)
from tandem.failover.load_balance import (
    LB_ANSWERS,
    LoadBalancePolicy,
    lb_answers,
    plan_balance,
    tolerance_of,
)
from tandem.failover.peer import connection_config
from tandem.failover.policy import RequestKind
from tandem.failover.updates import UpdateQueue
from tandem.leases.model import BindingState, Lease
from tandem.wire.dhcp import OPT_CLIENT_ID, DhcpMessage
from tandem.wire.failover import RejectReason, ServerState

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
S = ServerState
K = RequestKind
P, SEC = Role.PRIMARY, Role.SECONDARY
MAC = bytes.fromhex("001122334455")

# ---------------------------------------------------------------- the hash


def test_mix_table_is_the_rfc_permutation() -> None:
    assert len(MIX_TABLE) == 256 and sorted(MIX_TABLE) == list(range(256))
    # first and last rows of RFC 3074 §6 as printed
    assert list(MIX_TABLE[:8]) == [251, 175, 119, 215, 81, 14, 79, 191]
    assert list(MIX_TABLE[-8:]) == [149, 80, 170, 68, 6, 169, 234, 151]


@pytest.mark.parametrize(
    ("key", "bucket"),
    [
        ("001122334455", 135),  # the brief's vector: the 6-byte MAC, nothing else
        ("000000000000", 254),
        ("ffffffffffff", 79),
        ("000c29abcdef", 60),
        ("01001122334455", 223),  # option 61 = htype 1 + the same MAC
        ("0e", 232),
    ],
)
def test_hash_vectors(key: str, bucket: int) -> None:
    assert rfc3074_hash(bytes.fromhex(key)) == bucket


def test_the_135_vector_hashes_hlen_bytes_of_chaddr_not_the_field_nor_htype() -> None:
    # What exactly is hashed matters: the padded 16-byte chaddr field or an htype prefix give
    # other buckets, so the engine must hash chaddr[:hlen].
    assert rfc3074_hash(MAC + b"\x00" * 10) == 72
    assert rfc3074_hash(b"\x01" + MAC) == 223
    msg = DhcpMessage(chaddr=MAC + b"\x00" * 10, hlen=6)
    assert message_bucket(msg) == 135


def test_hash_is_seeded_with_the_length_and_runs_backwards() -> None:
    # Re-derive by hand for a 2-byte key: h = len; h = T[h ^ key[1]]; h = T[h ^ key[0]]
    key = b"\x12\x34"
    h = MIX_TABLE[MIX_TABLE[2 ^ 0x34] ^ 0x12]
    assert rfc3074_hash(key) == h
    assert rfc3074_hash(b"") == 0  # len 0, no rounds


def test_client_identifier_wins_over_the_hardware_address() -> None:
    cid = b"\x01" + MAC
    msg = DhcpMessage(chaddr=bytes(16), hlen=6, options={OPT_CLIENT_ID: cid})
    assert message_bucket(msg) == 223
    assert hash_key(cid, MAC) == cid and hash_key(None, MAC) == MAC
    assert hash_key(b"", MAC) == MAC  # an empty option 61 is no identifier
    assert lease_bucket(None, MAC) == 135 and lease_bucket(cid, MAC) == 223
    assert lease_bucket(None, b"") is None


@given(st.binary(min_size=1, max_size=40))
def test_hash_is_a_byte(key: bytes) -> None:
    assert 0 <= rfc3074_hash(key) <= 255


def test_hash_spreads_sequential_macs_evenly() -> None:
    # 2560 sequential MACs: every bucket used, none more than 3x the mean (a sanity check of
    # the table, which a wrong transcription tends to break).
    counts = [0] * 256
    for i in range(2560):
        counts[rfc3074_hash(bytes((0x02, 0, 0, 0, i >> 8, i & 0xFF)))] += 1
    assert min(counts) >= 1 and max(counts) <= 30


# ---------------------------------------------------------------- shares and the HBA


@pytest.mark.parametrize(
    ("pct", "n"), [(0, 0), (50, 128), (70, 179), (30, 77), (100, 256), (1, 3), (99, 253)]
)
def test_primary_share_is_the_first_buckets(pct: int, n: int) -> None:
    assert primary_buckets(pct) == frozenset(range(n))


def test_share_out_of_range_is_refused() -> None:
    with pytest.raises(ValueError, match=r"0\.\.100"):
        primary_buckets(101)


def test_isc_hba_is_iscs_split_bitmap() -> None:
    # ISC `split 128`: hba[i >> 3] |= 1 << (i & 7) for i < 128 -> 16 x 0xff, 16 x 0x00
    assert encode_hba(primary_buckets(50), "isc") == b"\xff" * 16 + b"\x00" * 16
    # split 179 (70 %): 22 full bytes, then bits 0..2 of byte 22 (buckets 176, 177, 178)
    assert encode_hba(primary_buckets(70), "isc") == b"\xff" * 22 + b"\x07" + b"\x00" * 9


def test_bucket_bit_order_is_lsb_first() -> None:
    assert encode_hba({0}, "isc") == b"\x01" + bytes(31)
    assert encode_hba({7}, "isc") == b"\x80" + bytes(31)
    assert encode_hba({8}, "isc") == b"\x00\x01" + bytes(30)
    assert encode_hba({255}, "isc") == bytes(31) + b"\x80"


def test_windows_hba_has_draft_polarity_set_bit_is_the_secondary() -> None:
    hba = encode_hba(primary_buckets(50), "windows")
    assert hba == b"\x00" * 16 + b"\xff" * 16
    assert encode_hba({0}, "windows") == b"\xfe" + b"\xff" * 31


@pytest.mark.parametrize("dialect", ["isc", "windows"])
@given(st.frozensets(st.integers(0, 255)))
def test_hba_round_trips(dialect: str, buckets: frozenset[int]) -> None:
    d = "isc" if dialect == "isc" else "windows"
    data = encode_hba(buckets, d)
    assert len(data) == 32 and decode_hba(data, d) == buckets


def test_decode_hba_checks_the_size() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        decode_hba(bytes(31), "isc")


# ---------------------------------------------------------------- HBA in CONNECT


def _cfg(role: str, pct: int, dialect: str = "isc", hba: bytes | None = None) -> ConnectionConfig:
    return ConnectionConfig(
        relationship="lb",
        role="primary" if role == "primary" else "secondary",
        mode="load-balance",
        dialect="isc" if dialect == "isc" else "windows",
        my_address=IPv4Address("192.0.2.2" if role == "primary" else "192.0.2.3"),
        partner_address=IPv4Address("192.0.2.3" if role == "primary" else "192.0.2.2"),
        mclt_s=300,
        hba=hba if hba is not None else encode_hba(
            primary_buckets(pct), "isc" if dialect == "isc" else "windows"
        ),
    )


def _handshake(pc: ConnectionConfig, sc: ConnectionConfig) -> tuple[list[object], list[object]]:
    now = 1_700_000_000.0
    p = PeerConnection(pc, now, UpdateQueue())
    s = PeerConnection(sc, now, UpdateQueue())
    p.initiate(now)
    ev_s = list(s.receive_data(p.data_to_send(), now))
    ev_p = list(p.receive_data(s.data_to_send(), now))
    return ev_p, ev_s


@pytest.mark.parametrize("pct", [50, 70, 100])
def test_connect_carries_the_primary_hba_and_the_secondary_accepts_its_own_view(pct: int) -> None:
    ev_p, ev_s = _handshake(_cfg("primary", pct), _cfg("secondary", pct))
    conn = [e for e in ev_s if isinstance(e, Connected)]
    assert conn and decode_hba(conn[0].hba, "isc") == primary_buckets(pct)
    assert [e for e in ev_p if isinstance(e, Connected)]


def test_a_secondary_expecting_another_split_rejects_with_reason_18() -> None:
    ev_p, ev_s = _handshake(_cfg("primary", 70), _cfg("secondary", 50))
    closed = [e for e in ev_s if isinstance(e, ConnectionClosed)]
    assert closed and closed[0].reject_reason == RejectReason.HBA_CONFLICT
    assert [e for e in ev_p if isinstance(e, ConnectionClosed)]


def test_windows_secondary_ignores_the_received_hba_value() -> None:
    # Windows uses its own configuration whatever the HBA says (spec §3.3): so do we.
    _ev_p, ev_s = _handshake(_cfg("primary", 70, "windows"), _cfg("secondary", 50, "windows"))
    assert [e for e in ev_s if isinstance(e, Connected)]


def test_connection_config_of_the_examples_carries_the_split_hba() -> None:
    for name in ("load-balance-primary.toml", "load-balance-secondary.toml"):
        cc = connection_config(load(EXAMPLES / name))
        assert cc.mode == "load-balance"
        assert cc.hba == b"\xff" * 16 + b"\x00" * 16  # primary 50 % in isc polarity
    hs = connection_config(load(EXAMPLES / "hot-standby-primary.toml"))
    assert hs.hba is None and hs.connect_hba == b"\xff" * 32  # hot standby unchanged


# ---------------------------------------------------------------- answer table

_ALL = set(K)
_NAMED = {K.SELECTING, K.RELEASE, K.DECLINE}
_DELAYABLE = {K.DISCOVER, K.INIT_REBOOT, K.REBINDING, K.INFORM}


@pytest.mark.parametrize("role", [P, SEC])
@pytest.mark.parametrize("kind", list(K))
def test_normal_answers_own_buckets_only(role: Role, kind: RequestKind) -> None:
    assert lb_answers(S.NORMAL, role, kind, mine=True)
    # a partner's client: only messages that name this server
    assert lb_answers(S.NORMAL, role, kind, mine=False) == (kind in _NAMED)
    # a renewal is load-balanced like Windows (not answered for a partner's client)
    assert not lb_answers(S.NORMAL, role, K.RENEWING, mine=False, secs=60, max_seconds=3)


@pytest.mark.parametrize("kind", list(K))
def test_delayed_service_after_max_seconds(kind: RequestKind) -> None:
    def ans(secs: int, mx: int) -> bool:
        return lb_answers(S.NORMAL, SEC, kind, mine=False, secs=secs, max_seconds=mx)

    delayable = kind in _DELAYABLE
    assert ans(4, 3) == (delayable or kind in _NAMED)
    assert ans(3, 3) == (kind in _NAMED)  # strictly more than the threshold (ISC)
    assert ans(65535, 0) == (kind in _NAMED)  # 0 = never


# (state) -> the kinds each role answers outside NORMAL; both roles can serve.
OUTSIDE_NORMAL: dict[ServerState, tuple[set[RequestKind], set[RequestKind]]] = {
    S.COMMUNICATIONS_INTERRUPTED: (_ALL, _ALL),
    S.PARTNER_DOWN: (_ALL, _ALL),
    S.RESOLUTION_INTERRUPTED: (_ALL, _ALL),
    S.CONFLICT_DONE: (_ALL, set()),
    S.RECOVER_DONE: ({K.RENEWING, K.REBINDING}, {K.RENEWING, K.REBINDING}),
    S.STARTUP: (set(), set()),
    S.RECOVER: (set(), set()),
    S.RECOVER_WAIT: (set(), set()),
    S.POTENTIAL_CONFLICT: (set(), set()),
    S.PAUSED: (set(), set()),
    S.SHUTDOWN: (set(), set()),
}


@pytest.mark.parametrize("state", list(OUTSIDE_NORMAL))
@pytest.mark.parametrize("mine", [True, False])
def test_answer_table_outside_normal_ignores_the_hash(state: ServerState, mine: bool) -> None:
    want_p, want_s = OUTSIDE_NORMAL[state]
    for kind in K:
        assert lb_answers(state, P, kind, mine=mine) == (kind in want_p), (state, kind)
        assert lb_answers(state, SEC, kind, mine=mine) == (kind in want_s), (state, kind)
    assert set(LB_ANSWERS) <= {(st_, r) for st_ in OUTSIDE_NORMAL for r in (P, SEC)}


def _msg(mac: bytes, secs: int = 0) -> DhcpMessage:
    return DhcpMessage(chaddr=mac + bytes(16 - len(mac)), hlen=len(mac), secs=secs)


def _mac_in(bucket_set: frozenset[int]) -> bytes:
    for i in range(10_000):
        mac = bytes((0x02, 0, 0, 0, i >> 8, i & 0xFF))
        if rfc3074_hash(mac) in bucket_set:
            return mac
    raise AssertionError("no MAC found")


@pytest.mark.parametrize("pct", [50, 70])
def test_policy_splits_clients_by_bucket_and_counts(pct: int) -> None:
    state = [S.NORMAL]
    prim = LoadBalancePolicy(P, 300, lambda: state[0], primary_percent=pct, max_seconds=3)
    sec = LoadBalancePolicy(SEC, 300, lambda: state[0], primary_percent=pct, max_seconds=3)
    assert len(prim.my_buckets) == round(2.56 * pct) and prim.my_buckets | sec.my_buckets == set(
        range(256)
    )
    assert not prim.my_buckets & sec.my_buckets
    p_mac, s_mac = _mac_in(prim.primary_buckets), _mac_in(sec.my_buckets)
    assert prim.may_answer(_msg(p_mac), K.DISCOVER, 0) and not sec.may_answer(
        _msg(p_mac), K.DISCOVER, 0
    )
    assert sec.may_answer(_msg(s_mac), K.DISCOVER, 0) and not prim.may_answer(
        _msg(s_mac), K.DISCOVER, 0
    )
    assert prim.may_answer(_msg(s_mac, secs=10), K.DISCOVER, 0)  # delayed service
    assert prim.lb_stats == {"mine": 1, "delayed": 1, "addressed": 0, "ignored": 1}
    state[0] = S.COMMUNICATIONS_INTERRUPTED
    assert prim.may_answer(_msg(s_mac), K.DISCOVER, 0) and sec.may_answer(
        _msg(p_mac), K.RENEWING, 0
    )


# ---------------------------------------------------------------- FREE/BACKUP split plan

A = [IPv4Address(int(IPv4Address("192.0.2.100")) + i) for i in range(100)]


def _ints(cands: list[tuple[IPv4Address, Lease | None]]) -> list[tuple[int, Lease | None]]:
    return [(int(a), lease) for a, lease in cands]


def _lease(addr: IPv4Address, state: BindingState, mac: bytes = b"", end: float = 0.0) -> Lease:
    return Lease(addr, 1, state=state, hwaddr=mac, end=end, cltt=1.0 if mac else 0.0)


def test_fresh_pool_is_split_by_the_percentage() -> None:
    for pct_s, want in ((50, 50), (30, 30), (0, 0)):
        plan = plan_balance(
            [(int(a), None) for a in A], primary_buckets=primary_buckets(100 - pct_s),
            secondary_percent=pct_s,
        )
        assert plan.target_backup == want
        assert plan.to_backup == tuple(A[:want])  # never used, lowest first
        assert plan.to_free == ()


def test_within_tolerance_nothing_moves() -> None:
    # 100 available, 50 % target, tolerance 15: 35..65 BACKUP is balanced
    assert tolerance_of(100) == 15 and tolerance_of(3) == 1
    for n_backup, moves in ((34, 16), (35, 0), (65, 0), (66, -16)):
        cands = [(a, _lease(a, BindingState.BACKUP) if i < n_backup else None)
                 for i, a in enumerate(A)]
        plan = plan_balance(_ints(cands), primary_buckets=primary_buckets(50), secondary_percent=50)
        assert len(plan.to_backup) - len(plan.to_free) == moves, n_backup
        if moves:
            assert plan.backup + moves == plan.target_backup == 50 and not plan.balanced


def test_reclaim_prefers_the_primarys_clients_then_never_used_highest() -> None:
    pb = primary_buckets(50)
    p_mac, s_mac = _mac_in(pb), _mac_in(frozenset(range(256)) - pb)
    # 10 FREE, 50 BACKUP (2 used by a primary client, 2 by a secondary client), 40 ACTIVE
    cands: list[tuple[IPv4Address, Lease | None]] = []
    for i, a in enumerate(A):
        if i < 40:
            cands.append((a, _lease(a, BindingState.ACTIVE, s_mac, end=1e12)))
        elif i < 50:
            cands.append((a, None))
        elif i in (50, 51):
            cands.append((a, _lease(a, BindingState.BACKUP, p_mac, end=5.0)))
        elif i in (52, 53):
            cands.append((a, _lease(a, BindingState.BACKUP, s_mac, end=5.0)))
        else:
            cands.append((a, _lease(a, BindingState.BACKUP)))
    plan = plan_balance(_ints(cands), primary_buckets=pb, secondary_percent=50)
    assert (plan.free, plan.backup, plan.target_backup) == (10, 50, 30)
    assert len(plan.to_free) == 20
    assert plan.to_free[:2] == (A[50], A[51])  # the primary's clients' addresses first
    assert plan.to_free[2:] == tuple(reversed(A[82:]))  # then never used, highest first
    # once those moves are in flight they count as FREE: no second reclaim
    again = plan_balance(_ints(cands), primary_buckets=pb, secondary_percent=50,
                         pending_free=plan.to_free)
    assert again.balanced and again.to_free == () and again.backup == 30


def test_giving_prefers_the_secondarys_clients() -> None:
    pb = primary_buckets(50)
    s_mac = _mac_in(frozenset(range(256)) - pb)
    cands: list[tuple[IPv4Address, Lease | None]] = [(a, None) for a in A]
    cands[99] = (A[99], _lease(A[99], BindingState.FREE, s_mac, end=3.0))
    plan = plan_balance(_ints(cands), primary_buckets=pb, secondary_percent=50)
    assert plan.to_backup[0] == A[99] and len(plan.to_backup) == 50


def _reference_plan(
    cands: list[tuple[IPv4Address, Lease | None]], pb: frozenset[int], pct: float,
    pending: set[IPv4Address],
) -> tuple[int, int, tuple[IPv4Address, ...], tuple[IPv4Address, ...]]:
    """plan_balance as first written (one sort with a key over every candidate, address
    objects throughout): the oracle for the by-int version."""
    free = [(a, le) for a, le in cands if le is None or le.state is BindingState.FREE]
    backup = [(a, le) for a, le in cands
              if le is not None and le.state is BindingState.BACKUP and a not in pending]
    n_pending = sum(1 for a, le in cands
                    if le is not None and le.state is BindingState.BACKUP and a in pending)
    n_free = len(free) + n_pending
    total = n_free + len(backup)
    delta = int(total * pct / 100 + 1e-9) - len(backup)
    if abs(delta) <= tolerance_of(total):
        return n_free, len(backup), (), ()

    def aff(le: Lease | None) -> bool | None:
        b = None if le is None else lease_bucket(le.client_id, le.hwaddr)
        return None if b is None else b in pb

    def never(le: Lease | None) -> bool:
        return le is None or (le.cltt == 0 and not le.hwaddr and le.client_id is None)

    def give(item: tuple[IPv4Address, Lease | None]) -> tuple[int, float, int]:
        a, le = item
        end = le.end if le is not None else 0.0
        return (0, end, int(a)) if aff(le) is False else (
            (1, 0.0, int(a)) if never(le) else (2, end, int(a)))

    def take(item: tuple[IPv4Address, Lease]) -> tuple[int, float, int]:
        a, le = item
        return (0, le.end, int(a)) if aff(le) is True else (
            (1, 0.0, -int(a)) if never(le) else (2, le.end, int(a)))

    if delta > 0:
        return n_free, len(backup), tuple(a for a, _ in sorted(free, key=give)[:delta]), ()
    return n_free, len(backup), (), tuple(a for a, _ in sorted(backup, key=take)[:-delta])


@given(
    st.lists(st.tuples(st.sampled_from(["none", "FREE", "BACKUP", "ACTIVE"]),
                       st.sampled_from(["", "p", "s", "cid"]),
                       st.sampled_from([0.0, 1.0, 5.0, 9.0]), st.booleans()),
             min_size=1, max_size=80),
    st.sampled_from([0, 20, 50, 80, 100]),
    st.sets(st.integers(min_value=0, max_value=79), max_size=10),
)
def test_plan_by_int_matches_the_reference(
    spec: list[tuple[str, str, float, bool]], pct: int, pending_idx: set[int]
) -> None:
    pb = primary_buckets(50)
    p_mac, s_mac = _mac_in(pb), _mac_in(frozenset(range(256)) - pb)
    base = int(IPv4Address("192.0.2.0"))
    cands: list[tuple[IPv4Address, Lease | None]] = []
    for i, (state, who, end, used) in enumerate(spec):
        a = IPv4Address(base + (i * 37) % 256)  # not in address order
        if state == "none":
            cands.append((a, None))
            continue
        le = Lease(a, 1, state=BindingState[state], end=end, cltt=1.0 if used else 0.0,
                   hwaddr={"p": p_mac, "s": s_mac}.get(who, b""),
                   client_id=b"\x01cid" if who == "cid" else None)
        cands.append((a, le))
    pending = {cands[i][0] for i in pending_idx if i < len(cands)}
    plan = plan_balance(_ints(cands), primary_buckets=pb, secondary_percent=pct,
                        pending_free=pending)
    assert (plan.free, plan.backup, plan.to_backup, plan.to_free) == _reference_plan(
        cands, pb, pct, pending)


# ---------------------------------------------------------------- example configs


def test_load_balance_examples_are_partners_and_split_50_50() -> None:
    prim = load(EXAMPLES / "load-balance-primary.toml")
    sec = load(EXAMPLES / "load-balance-secondary.toml")
    assert check_partners(prim, sec) == []
    for cfg, role in ((prim, "primary"), (sec, "secondary")):
        fo = cfg.failover
        assert fo is not None and not isinstance(fo, list)
        assert (fo.mode, fo.role, fo.load_balance_percent) == ("load-balance", role, 50)
        assert fo.load_balance_max_seconds == 3 and fo.mclt_s == 300


# ---------------------------------------------------------------- MCLT for a reused address


@pytest.mark.parametrize("cls", ["hot-standby", "load-balance"])
def test_a_reused_address_gets_the_mclt_not_the_previous_clients_acknowledged_time(
    cls: str,
) -> None:
    """Regression (found by tests/sim/test_load_balance.py's slow-link churn): an address a
    client released keeps that binding's acknowledged PET (tsfp); a NEW client must still get
    only the MCLT, since the partner knows nothing of it."""
    from tandem.failover.hot_standby import HotStandbyPolicy, StateView

    now = 1_700_000_000.0
    view = StateView(S.NORMAL, now - 10_000, S.NORMAL)
    pol = (
        HotStandbyPolicy(P, 300, lambda: view)
        if cls == "hot-standby"
        else LoadBalancePolicy(P, 300, lambda: view)
    )
    addr = A[0]
    freed = Lease(addr, 1, state=BindingState.FREE, hwaddr=MAC, cltt=now - 50,
                  end=now - 50, tsfp=now + 900)
    assert pol.max_lease_time(freed, 600, now) == 300
    pol.acknowledged(addr, now + 900)  # the policy's own record of the old PET too
    assert pol.max_lease_time(freed, 600, now) == 300
    # the same PET under a still-bound lease (a renewal) allows the full lease
    bound = Lease(addr, 1, state=BindingState.ACTIVE, hwaddr=MAC, cltt=now - 150,
                  end=now + 150, tsfp=now + 900)
    assert pol.max_lease_time(bound, 600, now) == 600
