"""PeerConnection: handshake, CONNECT/CONNECTACK checks, timers, flow control, digest, hostile
input. Virtual time only: two connections are wired through data_to_send/receive_data."""

from __future__ import annotations

import random
from collections.abc import Callable
from ipaddress import IPv4Address
from typing import Any

import pytest

from tandem.errors import ConfigError
from tandem.failover.connection import (
    HBA_HOT_STANDBY,
    HBA_LOAD_BALANCE,
    ConnectionConfig,
    LinkState,
    PeerConnection,
)
from tandem.failover.events import (
    BindingAcked,
    BindingUpdateReceived,
    CommunicationsLost,
    Connected,
    ConnectionClosed,
    Event,
    PartnerStateChanged,
    PoolRequestReceived,
    PoolResponseReceived,
    SkewWarning,
    UpdateDoneReceived,
    UpdateRequestReceived,
)
from tandem.failover.updates import BindingUpdate, UpdateQueue
from tandem.wire.failover import (
    BindingStatus,
    Dialect,
    DigestType,
    FailoverMessage,
    HardwareAddress,
    MessageDigest,
    MessageType,
    Option,
    OptionCode,
    RejectReason,
    ServerState,
    decode,
    encode,
)
from tandem.wire.framing import FrameBuffer

T = 1_700_000_000.0
OC = OptionCode
RR = RejectReason
MT = MessageType
P_ADDR = IPv4Address("192.0.2.1")
S_ADDR = IPv4Address("192.0.2.2")
SECRET = b"correct horse battery staple"


def cfg(role: str, dialect: Dialect = "isc", **kw: Any) -> ConnectionConfig:
    mine, theirs = (P_ADDR, S_ADDR) if role == "primary" else (S_ADDR, P_ADDR)
    base: dict[str, Any] = dict(
        relationship="dhcp-failover",
        role=role,
        mode="hot-standby",
        dialect=dialect,
        my_address=mine,
        partner_address=theirs,
        mclt_s=3600,
    )
    base.update(kw)
    return ConnectionConfig(**base)


def exchange(
    a: PeerConnection, b: PeerConnection, now: float, rounds: int = 50
) -> tuple[list[Event], list[Event]]:
    """Carry bytes both ways until both are quiet; events seen by a and by b."""
    ev_a: list[Event] = []
    ev_b: list[Event] = []
    for _ in range(rounds):
        da, db = a.data_to_send(), b.data_to_send()
        if not da and not db:
            break
        if da:
            ev_b += b.receive_data(da, now)
        if db:
            ev_a += a.receive_data(db, now)
    return ev_a, ev_b


def messages(data: bytes, dialect: Dialect = "isc") -> list[FailoverMessage]:
    return [decode(f, dialect) for f in FrameBuffer().feed(data)]


def of(events: list[Event], kind: type) -> list[Any]:
    return [e for e in events if isinstance(e, kind)]


def connected_pair(
    dialect: Dialect = "isc", now: float = T, p_kw: Any = None, s_kw: Any = None
) -> tuple[PeerConnection, PeerConnection]:
    p = PeerConnection(cfg("primary", dialect, **(p_kw or {})), now)
    s = PeerConnection(cfg("secondary", dialect, **(s_kw or {})), now)
    p.send_state(ServerState.NORMAL, int(now) - 100, now)
    s.send_state(ServerState.NORMAL, int(now) - 50, now)
    s.initiate(now)
    p.initiate(now)
    ev_p, ev_s = exchange(p, s, now)
    assert p.communications_ok and s.communications_ok, (ev_p, ev_s)
    return p, s


def upd(n: int, dialect: Dialect = "isc") -> BindingUpdate:
    mac = bytes([0, 0x11, 0x22, 0x33, 0x44, n])
    if dialect == "windows":
        return BindingUpdate(
            address=IPv4Address(f"192.0.2.{n}"),
            binding_status=0x01,
            hwaddr=HardwareAddress(1, mac, IPv4Address("192.0.2.0")),
            lease_expiration=int(T) + 3600,
            potential_expiration=int(T) + 5400,
            cltt=int(T),
            ip_flags=0,
            extra=(Option(OC.MS_CLIENT_SUBNET_MASK, IPv4Address("255.255.255.0")),),
        )
    return BindingUpdate(
        address=IPv4Address(f"192.0.2.{n}"),
        binding_status=BindingStatus.ACTIVE,
        hwaddr=HardwareAddress(1, mac),
        lease_expiration=int(T) + 3600,
        potential_expiration=int(T) + 5400,
        start_time_of_state=int(T),
        cltt=int(T),
    )


# ------------------------------------------------------------------------------ handshake


@pytest.mark.parametrize("dialect", ["isc", "windows"])
@pytest.mark.parametrize("secret", [None, SECRET])
def test_handshake_connects_both_sides_and_exchanges_state(
    dialect: Dialect, secret: bytes | None
) -> None:
    p = PeerConnection(cfg("primary", dialect, shared_secret=secret), T)
    s = PeerConnection(cfg("secondary", dialect, shared_secret=secret), T)
    s.initiate(T)
    assert s.data_to_send() == b""  # the secondary never sends CONNECT (spec §2.1)
    p.initiate(T)
    raw_connect = p.data_to_send()
    connect = messages(raw_connect, dialect)
    assert [m.msg_type for m in connect] == [MT.CONNECT]
    assert raw_connect[3] == (12 if dialect == "isc" else 8)  # payload-offset byte
    c = connect[0]
    assert c.text(OC.RELATIONSHIP_NAME) == "dhcp-failover"
    assert c.get(OC.MCLT) == 3600 and c.get(OC.MAX_UNACKED_BNDUPD) == 100
    assert c.get(OC.HASH_BUCKET_ASSIGNMENT) == HBA_HOT_STANDBY
    assert c.has(OC.TLS_REQUEST) == (dialect == "isc")
    assert c.has(OC.MESSAGE_DIGEST) == (secret is not None)
    assert c.get(OC.RECEIVE_TIMER) == (60 if dialect == "isc" else 180)

    ev_s = s.receive_data(raw_connect, T + 0.2)
    conn_s = of(ev_s, Connected)
    assert len(conn_s) == 1 and conn_s[0].mclt_s == 3600
    assert conn_s[0].partner_max_unacked == 100
    assert s.established and not s.communications_ok
    s.send_state(ServerState.RECOVER, int(T) - 7, T + 0.2)
    raw_reply = s.data_to_send()
    reply = messages(raw_reply, dialect)
    assert [m.msg_type for m in reply] == [MT.CONNECTACK, MT.STATE]
    assert reply[0].xid == c.xid
    assert not reply[0].has(OC.MCLT) and not reply[0].has(OC.HASH_BUCKET_ASSIGNMENT)
    assert reply[0].has(OC.TLS_REPLY) == (dialect == "isc")

    assert all(m.has(OC.MESSAGE_DIGEST) == (secret is not None) for m in reply)
    ev_p = p.receive_data(raw_reply, T + 0.3)
    assert [type(e) for e in ev_p] == [Connected, PartnerStateChanged]
    assert ev_p[1] == PartnerStateChanged(ServerState.RECOVER, 0, int(T) - 7)
    assert p.communications_ok and p.partner_state == ev_p[1]


@pytest.mark.parametrize("dialect", ["isc", "windows"])
def test_state_given_before_the_handshake_goes_out_right_after_it(dialect: Dialect) -> None:
    p, s = connected_pair(dialect)
    assert p.partner_state == PartnerStateChanged(ServerState.NORMAL, 0, int(T) - 50)
    assert s.partner_state == PartnerStateChanged(ServerState.NORMAL, 0, int(T) - 100)
    p.send_state(ServerState.COMMUNICATIONS_INTERRUPTED, int(T) + 5, T + 5, flags=1)
    _, ev_s = exchange(p, s, T + 5)
    assert ev_s == [PartnerStateChanged(ServerState.COMMUNICATIONS_INTERRUPTED, 1, int(T) + 5)]
    assert ev_s[0].startup


def test_load_balance_primary_sends_a_split_hba() -> None:
    p = PeerConnection(cfg("primary", mode="load-balance"), T)
    s = PeerConnection(cfg("secondary", mode="load-balance"), T)
    p.initiate(T)
    _, ev_s = exchange(p, s, T)
    assert of(ev_s, Connected)[0].hba == HBA_LOAD_BALANCE
    assert s.hba == HBA_LOAD_BALANCE


# ------------------------------------------------------------------------------ CONNECT checks


def connect_bytes(
    mutate: Callable[[list[Option]], list[Option]] | None = None,
    *,
    time: float = T,
    xid: int = 77,
    dialect: Dialect = "isc",
    secret: bytes | None = None,
) -> bytes:
    opts = [
        Option(OC.RELATIONSHIP_NAME, "dhcp-failover"),
        Option(OC.MAX_UNACKED_BNDUPD, 100),
        Option(OC.RECEIVE_TIMER, 60),
        Option(OC.VENDOR_CLASS_IDENTIFIER, "isc-4.4.3-P1"),
        Option(OC.PROTOCOL_VERSION, 1),
        Option(OC.TLS_REQUEST, 0),
        Option(OC.MCLT, 3600),
        Option(OC.HASH_BUCKET_ASSIGNMENT, HBA_HOT_STANDBY),
    ]
    if mutate is not None:
        opts = mutate(opts)
    msg = FailoverMessage(MT.CONNECT, xid, int(time), opts)
    return encode(msg, dialect, secret=secret)


def drop(code: int) -> Callable[[list[Option]], list[Option]]:
    return lambda opts: [o for o in opts if o.code != code]


def put(code: int, value: Any) -> Callable[[list[Option]], list[Option]]:
    return lambda opts: [Option(code, value) if o.code == code else o for o in opts]


CONNECT_CHECKS: list[
    tuple[str, Callable[[list[Option]], list[Option]] | None, dict[str, Any], int]
] = [
    ("name missing", drop(OC.RELATIONSHIP_NAME), {}, RR.INVALID_PARTNER),
    ("name unknown", put(OC.RELATIONSHIP_NAME, "other"), {}, RR.INVALID_PARTNER),
    ("version 2", put(OC.PROTOCOL_VERSION, 2), {}, RR.PROTOCOL_VERSION_MISMATCH),
    ("version missing", drop(OC.PROTOCOL_VERSION), {}, RR.PROTOCOL_VERSION_MISMATCH),
    ("mclt missing", drop(OC.MCLT), {}, RR.INVALID_MCLT),
    ("mclt zero", put(OC.MCLT, 0), {}, RR.INVALID_MCLT),
    ("mclt differs", put(OC.MCLT, 1800), {}, RR.INVALID_MCLT),
    ("hba missing", drop(OC.HASH_BUCKET_ASSIGNMENT), {}, RR.HBA_CONFLICT),
    ("hba short", put(OC.HASH_BUCKET_ASSIGNMENT, b"\xff" * 31), {}, RR.HBA_CONFLICT),
    (
        "hba differs from configured",
        put(OC.HASH_BUCKET_ASSIGNMENT, b"\x00" * 32),
        {"hba": HBA_HOT_STANDBY},
        RR.HBA_CONFLICT,
    ),
    (
        "mode mismatch: LB hba to hot-standby",
        put(OC.HASH_BUCKET_ASSIGNMENT, HBA_LOAD_BALANCE),
        {},
        RR.HBA_CONFLICT,
    ),
    ("mode mismatch: uniform hba to LB", None, {"mode": "load-balance"}, RR.HBA_CONFLICT),
    ("max-unacked missing", drop(OC.MAX_UNACKED_BNDUPD), {}, RR.UNKNOWN_REASON),
    ("max-unacked zero", put(OC.MAX_UNACKED_BNDUPD, 0), {}, RR.UNKNOWN_REASON),
    ("receive-timer missing", drop(OC.RECEIVE_TIMER), {}, RR.UNKNOWN_REASON),
    ("TLS required", put(OC.TLS_REQUEST, 2), {}, RR.TLS_NOT_SUPPORTED),
]


@pytest.mark.parametrize(
    ("mutate", "s_kw", "reason"),
    [c[1:] for c in CONNECT_CHECKS],
    ids=[c[0] for c in CONNECT_CHECKS],
)
def test_connect_check_refuses_with_its_reject_reason(
    mutate: Callable[[list[Option]], list[Option]] | None, s_kw: dict[str, Any], reason: int
) -> None:
    s = PeerConnection(cfg("secondary", **s_kw), T)
    s.initiate(T)
    events = s.receive_data(connect_bytes(mutate), T)
    assert events == [ConnectionClosed(events[0].reason, reason, False)]
    assert s.closed and s.get_timer() is None
    (ack,) = messages(s.data_to_send())
    assert ack.msg_type == MT.CONNECTACK and ack.xid == 77
    assert ack.get(OC.REJECT_REASON) == reason
    assert ack.text(OC.RELATIONSHIP_NAME) == "dhcp-failover"
    assert not ack.has(OC.MCLT) and not ack.has(OC.HASH_BUCKET_ASSIGNMENT)
    assert ack.has(OC.TLS_REPLY)  # the CONNECT carried TLS-request


@pytest.mark.parametrize("skew", [61.0, -61.0, 3600.0])
def test_connect_with_clock_skew_beyond_tolerance_gets_reason_4(skew: float) -> None:
    s = PeerConnection(cfg("secondary"), T)
    events = s.receive_data(connect_bytes(time=T + skew), T)
    assert of(events, ConnectionClosed)[0].reject_reason == RR.TIME_MISMATCH
    assert messages(s.data_to_send())[0].get(OC.REJECT_REASON) == RR.TIME_MISMATCH


def test_connect_within_skew_tolerance_is_accepted_and_skew_recorded() -> None:
    s = PeerConnection(cfg("secondary"), T)
    events = s.receive_data(connect_bytes(time=T - 40), T)
    (c,) = of(events, Connected)
    assert c.skew_s == -40.0 and s.clock_skew_s == -40.0
    assert of(events, SkewWarning) == [SkewWarning(-40.0, 30.0)]  # warns before the limit


def test_secondary_may_adopt_the_primarys_mclt() -> None:
    s = PeerConnection(cfg("secondary", adopt_partner_mclt=True), T)
    events = s.receive_data(connect_bytes(put(OC.MCLT, 1800)), T)
    assert of(events, Connected)[0].mclt_s == 1800 and s.mclt_s == 1800


def test_windows_dialect_ignores_hba_value_but_requires_32_bytes() -> None:
    s = PeerConnection(cfg("secondary", "windows"), T)
    mutate = put(OC.HASH_BUCKET_ASSIGNMENT, HBA_LOAD_BALANCE)
    ev = s.receive_data(connect_bytes(mutate, dialect="windows"), T)
    assert of(ev, Connected)
    s2 = PeerConnection(cfg("secondary", "windows"), T)
    ev2 = s2.receive_data(connect_bytes(drop(OC.HASH_BUCKET_ASSIGNMENT), dialect="windows"), T)
    assert of(ev2, ConnectionClosed)[0].reject_reason == RR.HBA_CONFLICT


def test_both_sides_primary_refuse_each_other_with_reason_8() -> None:
    a = PeerConnection(cfg("primary"), T)
    b = PeerConnection(cfg("primary", my_address=S_ADDR, partner_address=P_ADDR), T)
    a.initiate(T)
    b.initiate(T)
    ev_a, ev_b = exchange(a, b, T)
    assert of(ev_a, ConnectionClosed)[0].reject_reason == RR.INVALID_PARTNER
    assert of(ev_b, ConnectionClosed)[0].reject_reason == RR.INVALID_PARTNER
    assert a.closed and b.closed


def test_both_sides_secondary_time_out_waiting_for_connect() -> None:
    a = PeerConnection(cfg("secondary"), T)
    b = PeerConnection(cfg("secondary"), T)
    a.initiate(T)
    b.initiate(T)
    assert exchange(a, b, T) == ([], [])
    assert a.get_timer() == T + 15
    assert a.handle_timer(T + 14.9) == []
    (closed,) = a.handle_timer(T + 15)
    assert isinstance(closed, ConnectionClosed) and "no CONNECT" in closed.reason
    assert a.closed


# ------------------------------------------------------------------------------ CONNECTACK checks


def primary_after_connect(**kw: Any) -> tuple[PeerConnection, int]:
    p = PeerConnection(cfg("primary", **kw), T)
    p.initiate(T)
    (c,) = messages(p.data_to_send())
    return p, c.xid


def connectack_bytes(
    xid: int, *extra: Option, time: float = T, name: str = "dhcp-failover"
) -> bytes:
    opts = [
        Option(OC.RELATIONSHIP_NAME, name),
        Option(OC.MAX_UNACKED_BNDUPD, 50),
        Option(OC.RECEIVE_TIMER, 90),
        Option(OC.VENDOR_CLASS_IDENTIFIER, "isc-4.4.3-P1"),
        Option(OC.PROTOCOL_VERSION, 1),
        *extra,
    ]
    return encode(FailoverMessage(MT.CONNECTACK, xid, int(time), opts))


def test_primary_accepts_connectack_and_derives_its_keepalive() -> None:
    p, xid = primary_after_connect()
    (c,) = p.receive_data(connectack_bytes(xid), T)
    assert isinstance(c, Connected)
    assert c.partner_max_unacked == 50 and c.partner_receive_timer_s == 90
    assert c.partner_vendor_class == "isc-4.4.3-P1"
    assert c.tx_interval_s == 30.0 and p.updates.window == 50


def test_rejecting_connectack_closes_without_disconnect() -> None:
    p, xid = primary_after_connect()
    events = p.receive_data(
        connectack_bytes(xid, Option(OC.REJECT_REASON, RR.INVALID_MCLT), Option(OC.MESSAGE, "no")),
        T,
    )
    assert events == [ConnectionClosed("CONNECT refused: no", RR.INVALID_MCLT, True)]
    assert p.data_to_send() == b""


def test_connectack_for_another_xid_is_ignored() -> None:
    p, xid = primary_after_connect()
    assert p.receive_data(connectack_bytes(xid + 1), T) == []
    assert p.link_state is LinkState.AWAITING_CONNECTACK
    assert isinstance(p.receive_data(connectack_bytes(xid), T)[0], Connected)


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"name": "other"}, RR.INVALID_PARTNER),
        ({"time": T + 120}, RR.TIME_MISMATCH),
    ],
)
def test_bad_connectack_gets_a_disconnect(kwargs: dict[str, Any], reason: int) -> None:
    p, xid = primary_after_connect()
    events = p.receive_data(connectack_bytes(xid, **kwargs), T)
    assert of(events, ConnectionClosed)[0].reject_reason == reason
    assert not of(events, Connected)
    (d,) = messages(p.data_to_send())
    assert d.msg_type == MT.DISCONNECT and d.get(OC.REJECT_REASON) == reason


def test_primary_waits_a_limited_time_for_connectack() -> None:
    p, _ = primary_after_connect(connect_timeout_s=5)
    assert p.get_timer() == T + 5
    assert isinstance(p.handle_timer(T + 5)[0], ConnectionClosed)


# ------------------------------------------------------------------------------ timers


@pytest.mark.parametrize("dialect", ["isc", "windows"])
def test_idle_link_sends_contact_and_stays_up_for_an_hour(dialect: Dialect) -> None:
    p, s = connected_pair(dialect)
    now = T
    contacts = 0
    steps = 0
    while now < T + 3600:
        steps += 1
        assert steps < 2000, "timers do not advance"
        now = min(t for t in (p.get_timer(), s.get_timer()) if t is not None)
        for c in (p, s):
            out = c.handle_timer(now)
            assert out == [], out
            sent = c.data_to_send()
            contacts += sum(m.msg_type == MT.CONTACT for m in messages(sent, dialect))
            other = s if c is p else p
            assert other.receive_data(sent, now) == []
    assert p.established and s.established
    interval = 20 if dialect == "isc" else 60  # partner's receive-timer / 3; Windows <= 60
    assert p.tx_interval_s == interval
    assert contacts == pytest.approx(2 * 3600 / interval, abs=2)


def test_silence_for_the_receive_timer_loses_communications() -> None:
    p, _s = connected_pair()
    # The secondary goes silent; the primary keeps sending CONTACT (which does not help it).
    deadline = T + 60
    now = T
    events: list[Event] = []
    for _ in range(10):  # bounded: CONTACT at +20, +40, then tReceive at +60
        if p.closed:
            break
        now = p.get_timer() or now
        events += p.handle_timer(now)
        p.data_to_send()
    assert now == deadline
    assert [type(e) for e in events] == [CommunicationsLost, ConnectionClosed]
    assert events[1].reject_reason == RR.NO_TRAFFIC


def test_receive_timeout_sends_disconnect_17() -> None:
    p, s = connected_pair()
    p.handle_timer(T + 20)  # CONTACT
    p.data_to_send()
    p.handle_timer(T + 40)
    p.data_to_send()
    events = p.handle_timer(T + 60)
    assert isinstance(events[0], CommunicationsLost) and events[0].silent_for_s == 60
    (d,) = messages(p.data_to_send())
    assert d.msg_type == MT.DISCONNECT and d.get(OC.REJECT_REASON) == RR.NO_TRAFFIC
    # ... and the secondary reads it as a disconnect by its partner.
    ev_s = s.receive_data(encode(d), T + 60)
    assert ev_s == [ConnectionClosed(ev_s[0].reason, RR.NO_TRAFFIC, True)]


def test_any_message_resets_the_receive_timer() -> None:
    p, s = connected_pair(p_kw={"keepalive_s": 1000.0})
    for t in (50, 100, 150):
        s.send_state(ServerState.NORMAL, int(T), T + t)
        assert p.receive_data(s.data_to_send(), T + t) != []
        assert p.get_timer() == T + t + 60
        assert p.handle_timer(T + t + 59) == []
    assert p.established


@pytest.mark.parametrize(("dialect", "expected"), [("isc", 200.0), ("windows", 60.0)])
def test_keepalive_is_a_third_of_the_partner_receive_timer(
    dialect: Dialect, expected: float
) -> None:
    p, s = connected_pair(dialect, s_kw={"receive_timer_s": 600})
    assert p.tx_interval_s == expected  # Windows sends CONTACT every 60 s whatever we say
    assert s.tx_interval_s == (20.0 if dialect == "isc" else 60.0)


def test_keepalive_override() -> None:
    p, _ = connected_pair(p_kw={"keepalive_s": 7.5})
    assert p.tx_interval_s == 7.5 and p.get_timer() == T + 7.5


# ------------------------------------------------------------------------------ flow control


def test_max_unacked_window_fills_acks_free_it_and_order_is_kept() -> None:
    p, s = connected_pair(s_kw={"max_unacked": 3})
    assert p.updates.window == 3
    for n in range(1, 11):
        p.queue_binding_update(upd(n), T)
    first = messages(p.data_to_send())
    assert [m.msg_type for m in first] == [MT.BNDUPD] * 3
    assert p.updates.in_flight_count == 3 and p.updates.pending_count == 7
    ev_s = s.receive_data(b"".join(encode(m) for m in first), T)
    got = of(ev_s, BindingUpdateReceived)
    assert [e.update.address for e in got] == [IPv4Address(f"192.0.2.{n}") for n in (1, 2, 3)]
    assert got[0].update == upd(1)
    # One ack frees one slot.
    s.ack_binding_update(got[1].xid)
    ev_p = p.receive_data(s.data_to_send(), T)
    assert ev_p == [BindingAcked(got[1].xid, IPv4Address("192.0.2.2"), upd(2))]
    (nxt,) = messages(p.data_to_send())
    assert nxt.get(OC.ASSIGNED_IP_ADDRESS) == IPv4Address("192.0.2.4")
    s.receive_data(encode(nxt), T)
    # Ack everything as it arrives: all ten go through, in queue order.
    seen = [e.update.address for e in got] + [IPv4Address("192.0.2.4")]
    acked = [IPv4Address("192.0.2.2")]
    for xid in list(s._inbound):
        s.ack_binding_update(xid)
    for _ in range(20):
        ev_p, ev_s = exchange(p, s, T, rounds=1)
        for e in of(ev_s, BindingUpdateReceived):
            seen.append(e.update.address)
            s.ack_binding_update(e.xid)
        acked += [e.address for e in of(ev_p, BindingAcked)]
    assert seen == [IPv4Address(f"192.0.2.{n}") for n in range(1, 11)]
    assert sorted(acked) == sorted(seen)
    assert p.updates.pending_count == 0 and p.updates.in_flight_count == 0


def test_nothing_is_sent_before_the_partner_state_arrives() -> None:
    p = PeerConnection(cfg("primary"), T)
    s = PeerConnection(cfg("secondary"), T)
    p.queue_binding_update(upd(1), T)
    p.initiate(T)
    s.receive_data(p.data_to_send(), T)
    # secondary accepted but has not announced its state yet
    p.receive_data(s.data_to_send(), T)
    assert p.established and not p.communications_ok
    p.queue_binding_update(upd(2), T)  # the window is open now, but no partner STATE yet
    assert p.data_to_send() == b""
    s.send_state(ServerState.NORMAL, int(T), T)
    p.receive_data(s.data_to_send(), T)
    assert [m.msg_type for m in messages(p.data_to_send())] == [MT.BNDUPD, MT.BNDUPD]


def test_bndack_with_reject_reason_surfaces_and_frees_the_slot() -> None:
    p, s = connected_pair(s_kw={"max_unacked": 1})
    p.queue_binding_update(upd(1), T)
    p.queue_binding_update(upd(2), T)
    (e,) = s.receive_data(p.data_to_send(), T)
    s.ack_binding_update(e.xid, RR.OUTDATED_BINDING_INFO, message="older than mine")
    (ack_msg,) = messages(s.data_to_send())
    assert [c for c, _ in ack_msg.options] == [OC.ASSIGNED_IP_ADDRESS, OC.REJECT_REASON, OC.MESSAGE]
    ev = p.receive_data(encode(ack_msg), T)
    assert ev == [
        BindingAcked(
            e.xid, IPv4Address("192.0.2.1"), upd(1), RR.OUTDATED_BINDING_INFO, "older than mine"
        )
    ]
    assert messages(p.data_to_send())[0].get(OC.ASSIGNED_IP_ADDRESS) == IPv4Address("192.0.2.2")


def test_unacked_updates_are_resent_on_the_next_connection() -> None:
    queue = UpdateQueue()
    p = PeerConnection(cfg("primary"), T, updates=queue)
    s = PeerConnection(cfg("secondary"), T)
    p.send_state(ServerState.NORMAL, int(T), T)
    s.send_state(ServerState.NORMAL, int(T), T)
    p.initiate(T)
    exchange(p, s, T)
    for n in (1, 2, 3):
        p.queue_binding_update(upd(n), T)
    _, ev_s = exchange(p, s, T)
    s.ack_binding_update(of(ev_s, BindingUpdateReceived)[0].xid)
    exchange(p, s, T)
    assert queue.in_flight_count == 2
    assert p.connection_lost(T + 1) == [ConnectionClosed("transport closed", None, True)]
    assert queue.in_flight_count == 0 and queue.window == 0
    assert [u.address for u in queue.pending()] == [
        IPv4Address("192.0.2.2"),
        IPv4Address("192.0.2.3"),
    ]
    p2 = PeerConnection(cfg("primary"), T + 5, updates=queue)
    s2 = PeerConnection(cfg("secondary"), T + 5)
    p2.send_state(ServerState.NORMAL, int(T), T + 5)
    s2.send_state(ServerState.NORMAL, int(T), T + 5)
    p2.initiate(T + 5)
    _, ev_s2 = exchange(p2, s2, T + 5)
    assert [e.update.address for e in of(ev_s2, BindingUpdateReceived)] == [
        IPv4Address("192.0.2.2"),
        IPv4Address("192.0.2.3"),
    ]


def test_windows_batched_bndupd_is_acked_in_the_same_order() -> None:
    _p, s = connected_pair("windows")
    opts: list[Option] = []
    for n in (9, 3, 7):
        opts += upd(n, "windows").to_options()
    opts += [Option(OC.ASSIGNED_IP_ADDRESS, IPv4Address("192.0.2.5"))]  # no binding-status
    raw = encode(FailoverMessage(MT.BNDUPD, 500, int(T), opts), "windows")
    events = s.receive_data(raw, T)
    got = of(events, BindingUpdateReceived)
    assert [e.update.address.packed[-1] for e in got] == [9, 3, 7]
    assert got[0].update.hwaddr == HardwareAddress(
        1, bytes([0, 0x11, 0x22, 0x33, 0x44, 9]), IPv4Address("192.0.2.0")
    )
    s.ack_binding_update(500, address=IPv4Address("192.0.2.3"))
    assert s.data_to_send() == b""  # not all answered yet
    s.ack_binding_update(500, RR.FATAL_CONFLICT, address=IPv4Address("192.0.2.7"))
    s.ack_binding_update(500)
    (ack,) = messages(s.data_to_send(), "windows")
    _, groups = ack.address_groups()
    assert [g[0].value.packed[-1] for g in groups] == [9, 3, 7, 5]  # type: ignore[union-attr]
    assert [dict(g).get(OC.REJECT_REASON) for g in groups] == [
        None,
        None,
        RR.FATAL_CONFLICT,
        RR.MISSING_BINDING_INFO,
    ]


def test_isc_batched_bndupd_is_a_protocol_error() -> None:
    _p, s = connected_pair("isc")
    # The isc encoder refuses to build a batch, so splice two single updates by hand.
    one = encode(FailoverMessage(MT.BNDUPD, 500, int(T), upd(1).to_options()))
    two = encode(FailoverMessage(MT.BNDUPD, 500, int(T), upd(2).to_options()))
    body = one[12:] + two[12:]
    raw = (12 + len(body)).to_bytes(2, "big") + one[2:12] + body
    events = s.receive_data(raw, T)
    assert not of(events, BindingUpdateReceived)
    assert of(events, ConnectionClosed)[0].reject_reason == RR.UNKNOWN_REASON


def test_partner_exceeding_our_max_unacked_is_a_protocol_error() -> None:
    _p, s = connected_pair(s_kw={"max_unacked": 2})
    frames = [
        encode(FailoverMessage(MT.BNDUPD, 900 + n, int(T), upd(n).to_options())) for n in (1, 2, 3)
    ]
    events = s.receive_data(b"".join(frames), T)
    assert len(of(events, BindingUpdateReceived)) == 2
    assert of(events, ConnectionClosed)[0].reject_reason == RR.UNKNOWN_REASON


def test_ack_of_unknown_xid_raises_and_after_close_is_silent() -> None:
    p, s = connected_pair()
    with pytest.raises(ValueError):
        s.ack_binding_update(12345)
    p.queue_binding_update(upd(1), T)
    (e,) = s.receive_data(p.data_to_send(), T)
    s.connection_lost(T)
    s.ack_binding_update(e.xid)  # no error, nothing sent
    assert s.data_to_send() == b""


# ------------------------------------------------------------------------------ UPDREQ / POOLREQ


@pytest.mark.parametrize("all_", [True, False])
def test_update_request_done_waits_for_the_acks(all_: bool) -> None:
    p, s = connected_pair()
    xid = s.request_updates(all=all_, now=T)
    (req,) = messages(s.data_to_send())
    assert req.msg_type == (MT.UPDREQALL if all_ else MT.UPDREQ) and req.xid == xid
    (ev,) = p.receive_data(encode(req), T)
    assert ev == UpdateRequestReceived(req.xid, all_)
    p.queue_binding_update(upd(1), T)
    p.queue_binding_update(upd(2), T)
    p.send_update_done(now=T)
    out = messages(p.data_to_send())
    assert [m.msg_type for m in out] == [MT.BNDUPD, MT.BNDUPD]  # UPDDONE held back
    ev_s = s.receive_data(b"".join(encode(m) for m in out), T)
    for e in of(ev_s, BindingUpdateReceived):
        s.ack_binding_update(e.xid)
    ev_p, ev_s = exchange(p, s, T)
    assert len(of(ev_p, BindingAcked)) == 2
    assert ev_s == [UpdateDoneReceived(xid)]


def test_unsolicited_upddone_is_ignored() -> None:
    _p, s = connected_pair()
    raw = encode(FailoverMessage(MT.UPDDONE, 4242, int(T)))
    assert s.receive_data(raw, T) == [] and s.established


def test_pool_request_and_response() -> None:
    p, s = connected_pair()
    xid = s.send_pool_request(T)
    (ev,) = p.receive_data(s.data_to_send(), T)
    assert ev == PoolRequestReceived(xid)
    p.send_pool_response(17, now=T)
    (ev2,) = s.receive_data(p.data_to_send(), T)
    assert ev2 == PoolResponseReceived(xid, 17)


def test_windows_never_uses_poolreq() -> None:
    p, s = connected_pair("windows")
    with pytest.raises(ValueError):
        s.send_pool_request(T)
    raw = encode(FailoverMessage(MT.POOLREQ, 5000, int(T)), "windows")
    assert p.receive_data(raw, T) == [] and p.established


def test_sending_before_the_handshake_is_a_caller_error() -> None:
    p = PeerConnection(cfg("primary"), T)
    with pytest.raises(ValueError):
        p.request_updates(all=True, now=T)


# ------------------------------------------------------------------------------ digest


def test_mismatched_secrets_refuse_the_connect_with_reason_20() -> None:
    p = PeerConnection(cfg("primary", shared_secret=b"one"), T)
    s = PeerConnection(cfg("secondary", shared_secret=b"two"), T)
    p.initiate(T)
    ev_p, ev_s = exchange(p, s, T)
    assert ev_s == [ConnectionClosed(ev_s[0].reason, RR.DIGEST_MISMATCH, False)]
    # The refusal is signed with the other secret, so the primary cannot trust it either:
    # it fails the digest check on its own side.
    assert of(ev_p, ConnectionClosed)[0].reject_reason == RR.DIGEST_MISMATCH
    assert not of(ev_p, Connected)


@pytest.mark.parametrize(
    ("s_secret", "c_secret", "reason"),
    [
        (SECRET, None, RR.MISSING_DIGEST),
        (SECRET, b"wrong", RR.DIGEST_MISMATCH),
        (None, SECRET, RR.DIGEST_NOT_CONFIGURED),
    ],
)
def test_connect_digest_checks(s_secret: bytes | None, c_secret: bytes | None, reason: int) -> None:
    s = PeerConnection(cfg("secondary", shared_secret=s_secret), T)
    events = s.receive_data(connect_bytes(secret=c_secret), T)
    assert [type(e) for e in events] == [ConnectionClosed]
    assert events[0].reject_reason == reason
    (ack,) = messages(s.data_to_send())
    assert ack.msg_type == MT.CONNECTACK and ack.get(OC.REJECT_REASON) == reason


@pytest.mark.parametrize(
    ("secret", "reason"), [(None, RR.MISSING_DIGEST), (b"wrong", RR.DIGEST_MISMATCH)]
)
def test_bad_digest_on_an_established_link_applies_nothing(
    secret: bytes | None, reason: int
) -> None:
    _p, s = connected_pair(p_kw={"shared_secret": SECRET}, s_kw={"shared_secret": SECRET})
    state = FailoverMessage(
        MT.STATE,
        10_000,
        int(T),
        [
            Option(OC.SERVER_STATE, ServerState.PARTNER_DOWN),
            Option(OC.SERVER_FLAGS, 0),
            Option(OC.START_TIME_OF_STATE, int(T)),
        ],
    )
    events = s.receive_data(encode(state, secret=secret), T)
    assert [type(e) for e in events] == [ConnectionClosed]
    assert events[0].reject_reason == reason
    assert s.partner_state is not None and s.partner_state.state == ServerState.NORMAL
    (d,) = messages(s.data_to_send())
    assert d.msg_type == MT.DISCONNECT and d.get(OC.REJECT_REASON) == reason


def test_md5_digest_type_works_too() -> None:
    kw = {"shared_secret": SECRET, "digest_type": DigestType.HMAC_MD5}
    p, s = connected_pair(p_kw=kw, s_kw=kw)
    p.queue_binding_update(upd(1), T)
    raw = p.data_to_send()
    digest = messages(raw)[0].get(OC.MESSAGE_DIGEST)
    assert isinstance(digest, MessageDigest) and digest.algorithm == DigestType.HMAC_MD5
    assert of(s.receive_data(raw, T), BindingUpdateReceived)


def test_replayed_message_with_a_secret_is_refused() -> None:
    p, s = connected_pair(p_kw={"shared_secret": SECRET}, s_kw={"shared_secret": SECRET})
    p.send_state(ServerState.NORMAL, int(T), T + 1)
    raw = p.data_to_send()
    assert of(s.receive_data(raw, T + 1), PartnerStateChanged)
    events = s.receive_data(raw, T + 2)  # byte-identical replay: valid digest, old xid
    assert [type(e) for e in events] == [ConnectionClosed]


# ------------------------------------------------------------------------------ stream handling


def _session_bytes() -> tuple[bytes, list[Event]]:
    """Everything a primary sends a fresh secondary for a short session, and the events the
    secondary sees when it arrives in one piece."""
    p = PeerConnection(cfg("primary"), T)
    p.send_state(ServerState.NORMAL, int(T) - 10, T)
    p.initiate(T)
    connect = p.data_to_send()
    s = PeerConnection(cfg("secondary"), T)
    s.send_state(ServerState.NORMAL, int(T), T)
    s.receive_data(connect, T)
    p.receive_data(s.data_to_send(), T)
    for n in range(1, 6):
        p.queue_binding_update(upd(n), T)
    p.request_updates(all=False, now=T)
    stream = connect + p.data_to_send()
    events = PeerConnection(cfg("secondary"), T).receive_data(stream, T)
    return stream, events


def test_arbitrary_chunking_gives_the_same_events() -> None:
    stream, whole = _session_bytes()
    assert [type(e) for e in whole] == [
        Connected,
        PartnerStateChanged,
        *[BindingUpdateReceived] * 5,
        UpdateRequestReceived,
    ]
    one = PeerConnection(cfg("secondary"), T)
    bytewise: list[Event] = []
    for i in range(len(stream)):
        bytewise += one.receive_data(stream[i : i + 1], T)
    assert bytewise == whole
    rng = random.Random(1234)
    for _ in range(50):
        conn = PeerConnection(cfg("secondary"), T)
        got: list[Event] = []
        pos = 0
        while pos < len(stream):
            step = rng.randint(1, 200)
            got += conn.receive_data(stream[pos : pos + step], T)
            pos += step
        assert got == whole


HOSTILE: list[tuple[str, bytes]] = [
    ("length below header", b"\x00\x05\x0b\x0c" + b"\x00" * 8),
    ("length above limit", b"\xff\xff" + b"\x00" * 10),
    ("option overruns", bytes.fromhex("0014 0a0c 6553f100 00000001 0018 0010 02 000000")),
    ("truncated option header", bytes.fromhex("000e 0a0c 6553f100 00000001 0018")),
    ("bad fixed size", bytes.fromhex("0012 0a0c 6553f100 00000001 0018 0002 0202")),
    ("unknown type 50", bytes.fromhex("000c 320c 6553f100 00000001")),
    ("state without state", bytes.fromhex("000c 0a0c 6553f100 00000001")),
    ("bndupd without address", bytes.fromhex("0011 030c 6553f100 00000001 0003 0001 02")),
]


@pytest.mark.parametrize("raw", [h[1] for h in HOSTILE], ids=[h[0] for h in HOSTILE])
def test_malformed_input_disconnects_without_raising(raw: bytes) -> None:
    _p, s = connected_pair()
    events = s.receive_data(raw, T)
    assert [type(e) for e in events] == [ConnectionClosed]
    assert events[0].reject_reason is not None
    (d,) = messages(s.data_to_send())
    assert d.msg_type == MT.DISCONNECT and d.get(OC.REJECT_REASON) == events[0].reject_reason
    assert s.receive_data(b"\x00\x0c" + b"\x00" * 10, T) == []  # closed: further input ignored
    assert s.get_timer() is None


def test_unknown_type_above_127_is_ignored() -> None:
    _p, s = connected_pair()
    raw = bytes.fromhex("0011 c80c 6553f100 00000001 0003 0001 02")
    assert s.receive_data(raw, T) == [] and s.established


def test_random_garbage_never_raises() -> None:
    rng = random.Random(99)
    stream, _ = _session_bytes()
    for _ in range(300):
        data = bytearray(stream)
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        for role in ("primary", "secondary"):
            conn = PeerConnection(cfg(role), T)
            conn.initiate(T)
            events: list[Event] = []
            pos = 0
            while pos < len(data):
                step = rng.randint(1, 300)
                events += conn.receive_data(bytes(data[pos : pos + step]), T)
                pos += step
            closes = of(events, ConnectionClosed)
            assert len(closes) <= 1
            if closes:
                assert events[-1] is closes[0]
                assert "internal error" not in closes[0].reason


def test_replayed_connect_on_an_established_link_is_a_protocol_error() -> None:
    p = PeerConnection(cfg("primary"), T)
    s = PeerConnection(cfg("secondary"), T)
    p.initiate(T)
    connect = p.data_to_send()
    assert of(s.receive_data(connect, T), Connected)
    events = s.receive_data(connect, T + 1)
    assert [type(e) for e in events] == [ConnectionClosed]
    assert events[0].reject_reason == RR.DUPLICATE_CONNECTION
    (d,) = messages(s.data_to_send())[1:]  # after the CONNECTACK
    assert d.msg_type == MT.DISCONNECT and d.get(OC.REJECT_REASON) == RR.DUPLICATE_CONNECTION


def test_message_before_the_handshake_is_a_protocol_error() -> None:
    s = PeerConnection(cfg("secondary"), T)
    raw = encode(FailoverMessage(MT.BNDUPD, 1, int(T), upd(1).to_options()))
    events = s.receive_data(raw, T)
    assert [type(e) for e in events] == [ConnectionClosed]
    assert messages(s.data_to_send())[0].msg_type == MT.DISCONNECT


def test_events_after_a_breach_in_the_same_chunk_are_dropped() -> None:
    p, s = connected_pair()
    p.queue_binding_update(upd(1), T)
    good = p.data_to_send()
    p.queue_binding_update(upd(2), T)
    later = p.data_to_send()
    events = s.receive_data(good + HOSTILE[6][1] + later, T)
    assert [type(e) for e in events] == [BindingUpdateReceived, ConnectionClosed]


# ------------------------------------------------------------------------------ skew


def test_windows_checks_skew_on_every_message() -> None:
    _p, s = connected_pair("windows")
    msg = FailoverMessage(MT.CONTACT, 9999, int(T) + 120)
    events = s.receive_data(encode(msg, "windows"), T)
    assert of(events, ConnectionClosed)[0].reject_reason == RR.TIME_MISMATCH


def test_isc_only_smooths_skew_after_connect_and_warns_once() -> None:
    _p, s = connected_pair("isc")
    assert s.clock_skew_s == 0.0
    warnings: list[Event] = []
    for i in range(40):
        msg = FailoverMessage(MT.CONTACT, 10_000 + i, int(T) + 120)
        events = s.receive_data(encode(msg), T)
        warnings += of(events, SkewWarning)
        assert not of(events, ConnectionClosed)
    assert s.clock_skew_s is not None and 110 < s.clock_skew_s <= 120
    assert len(warnings) == 1 and isinstance(warnings[0], SkewWarning)
    assert warnings[0].skew_s >= 30


# ------------------------------------------------------------------------------ disconnect


def test_disconnect_reaches_the_partner_with_its_reason() -> None:
    p, s = connected_pair()
    (mine,) = p.disconnect(RR.UNKNOWN_ERROR, T, "operator request")
    assert mine == ConnectionClosed("operator request", RR.UNKNOWN_ERROR, False)
    assert p.disconnect(RR.UNKNOWN_ERROR, T) == []  # exactly once
    (theirs,) = s.receive_data(p.data_to_send(), T)
    assert theirs == ConnectionClosed(
        "partner disconnected: operator request", RR.UNKNOWN_ERROR, True
    )


def test_invalid_config_is_rejected_with_every_problem() -> None:
    with pytest.raises(ConfigError) as exc:
        cfg("primary", mclt_s=0, max_unacked=0, hba=b"\x00")
    assert len(exc.value.problems) == 3


def _pair_without_primary_state(now: float = T) -> tuple[PeerConnection, PeerConnection]:
    """Handshake done, the secondary's STATE delivered, the primary's not (yet) sent."""
    p = PeerConnection(cfg("primary"), now)
    s = PeerConnection(cfg("secondary"), now)
    s.send_state(ServerState.COMMUNICATIONS_INTERRUPTED, int(now) - 50, now)
    s.initiate(now)
    p.initiate(now)
    exchange(p, s, now)
    assert p.communications_ok and s.established and not s.communications_ok
    return p, s


def test_a_link_where_the_partners_state_never_comes_is_closed_with_reason_17() -> None:
    """DST seed 22604: the primary's STATE was lost right after CONNECTACK; CONTACTs kept
    the link up and the standby stayed COMMUNICATIONS-INTERRUPTED for good."""
    _p, s = _pair_without_primary_state()
    assert s.get_timer() == T + 15  # connect_timeout_s, before the first CONTACT (+20)
    assert s.handle_timer(T + 14.9) == []
    events = s.handle_timer(T + 15)
    closed = of(events, ConnectionClosed)
    assert closed and closed[0].reject_reason == RR.NO_TRAFFIC
    sent = messages(s.data_to_send())
    assert [m.msg_type for m in sent] == [MT.DISCONNECT]
    assert sent[0].get_int(OC.REJECT_REASON) == RR.NO_TRAFFIC
    assert s.closed


def test_a_state_arriving_in_time_keeps_the_link() -> None:
    p, s = _pair_without_primary_state()
    p.send_state(ServerState.NORMAL, int(T) - 100, T + 10)
    exchange(p, s, T + 10)
    assert s.communications_ok
    assert s.get_timer() == T + 20  # the CONTACT interval, no STATE deadline any more
    assert s.handle_timer(T + 15) == [] and s.established
