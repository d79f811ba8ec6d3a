"""Property test: random client message sequences over virtual time never give one address
to two clients at once, never hand out excluded or someone else's reserved addresses, and
keep the engine's indexes consistent."""

from __future__ import annotations

import struct
from ipaddress import IPv4Address, IPv4Network

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tandem.config.schema import (
    Config,
    LeaseTimes,
    Pool,
    Reservation,
    ServerSection,
    Subnet,
)
from tandem.dhcp.engine import Engine
from tandem.dhcp.types import RxInfo
from tandem.leases.model import BindingState
from tandem.leases.table import client_key, lease_key
from tandem.wire.dhcp import FLAG_BROADCAST, ZERO_IP, DhcpMessage, MessageType

IP = IPv4Address
SID = IP("192.0.2.1")
GI2 = IP("198.51.100.1")
T0 = 1_700_000_000.0

EXCLUDED = {IP("192.0.2.15"), IP("192.0.2.16")}
POOL1_DYNAMIC = {IP(f"192.0.2.{n}") for n in (10, 11, 13, 14, 17, 18, 19, 20)}
RESERVED = {IP("192.0.2.12"): 1, IP("192.0.2.50"): 0}  # address -> client index
CANDIDATES = [IP(f"192.0.2.{n}") for n in (9, 10, 11, 12, 13, 15, 16, 17, 20, 21, 50)] + [
    IP(f"198.51.100.{n}") for n in (9, 10, 11, 12, 13)
]

# (hwaddr, client id) of the simulated clients
CLIENTS: list[tuple[bytes, bytes | None]] = [
    (bytes.fromhex("0200000000aa"), None),  # reserved .50 by MAC
    (bytes.fromhex("020000000001"), b"\x01\x02\x00\x00\x00\x00\xbb"),  # reserved .12 by id
    (bytes.fromhex("020000000002"), None),
    (bytes.fromhex("020000000003"), None),
    (bytes.fromhex("020000000004"), b"\xff\x00\x04"),
    (bytes.fromhex("020000000005"), None),
    (bytes.fromhex("020000000006"), None),
]


def config() -> Config:
    return Config(
        server=ServerSection(server_id=SID),
        lease=LeaseTimes(
            default_lease_time_s=600,
            min_lease_time_s=10,
            max_lease_time_s=1200,
            decline_probation_s=300,
            offer_hold_s=30,
        ),
        subnets=[
            Subnet(
                prefix=IPv4Network("192.0.2.0/24"),
                pools=[Pool(start=IP("192.0.2.10"), end=IP("192.0.2.20"))],
                exclusions=[Pool(start=IP("192.0.2.15"), end=IP("192.0.2.16"))],
                reservations=[
                    Reservation(ip_address=IP("192.0.2.50"), hw_address="02:00:00:00:00:aa"),
                    Reservation(ip_address=IP("192.0.2.12"), client_id="01:02:00:00:00:00:bb"),
                ],
            ),
            Subnet(
                prefix=IPv4Network("198.51.100.0/24"),
                pools=[Pool(start=IP("198.51.100.10"), end=IP("198.51.100.12"))],
            ),
        ],
    )


ACTIONS = (
    "discover",
    "select_offered",
    "select_random",
    "select_other_server",
    "init_reboot",
    "renew",
    "rebind",
    "release",
    "decline",
    "inform",
)

step = st.tuples(
    st.integers(0, len(CLIENTS) - 1),  # client
    st.sampled_from(ACTIONS),
    st.integers(0, 700),  # seconds since the previous step
    st.booleans(),  # run due timers first
    st.integers(0, len(CANDIDATES) - 1),  # a random address
    st.booleans(),  # relayed from subnet 2's link (else directly on subnet 1)
    st.sampled_from([None, 5, 60, 5000]),  # requested lease time
)


def _msg(
    i: int,
    mt: MessageType,
    *,
    relayed: bool,
    requested: IPv4Address | None = None,
    server_id: IPv4Address | None = None,
    ciaddr: IPv4Address = ZERO_IP,
    lease_time: int | None = None,
) -> DhcpMessage:
    hw, cid = CLIENTS[i]
    opts: dict[int, bytes] = {53: bytes((mt,))}
    if cid is not None:
        opts[61] = cid
    if requested is not None:
        opts[50] = requested.packed
    if server_id is not None:
        opts[54] = server_id.packed
    if lease_time is not None:
        opts[51] = struct.pack("!I", lease_time)
    return DhcpMessage(
        chaddr=hw + b"\x00" * 10,
        ciaddr=ciaddr,
        giaddr=GI2 if relayed else ZERO_IP,
        flags=FLAG_BROADCAST,
        options=opts,
    )


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(st.lists(step, min_size=1, max_size=60))
def test_random_client_sequences_keep_the_invariants(
    steps: list[tuple[int, str, int, bool, int, bool, int | None]],
) -> None:
    eng = Engine(config())
    now = T0
    held: dict[int, tuple[IPv4Address, float]] = {}  # client -> (address, end) it believes
    offered: dict[int, IPv4Address] = {}
    recorded: dict[int, tuple[IPv4Address, float]] = {}  # client -> (address, end) recorded
    keys = [client_key(cid, 1, hw) for hw, cid in CLIENTS]
    for i, action, dt, timers, pick, relayed, lt in steps:
        now += dt
        if timers:
            t = eng.get_timer()
            if t is not None and t <= now:
                for le in eng.handle_timer(now):
                    assert le.state in (BindingState.EXPIRED, BindingState.FREE)
            t = eng.get_timer()
            assert t is None or t > now
        rnd = CANDIDATES[pick]
        mine = held.get(i, (rnd, 0.0))[0]
        local = RxInfo(src_ip=IP("0.0.0.0"), src_port=68, local_ip=SID)
        rx = local
        if action == "discover":
            req = rnd if pick % 3 == 0 else None
            m = _msg(i, MessageType.DISCOVER, relayed=relayed, requested=req, lease_time=lt)
        elif action in ("select_offered", "select_random", "select_other_server"):
            addr = offered.get(i, rnd) if action == "select_offered" else rnd
            sid = IP("192.0.2.2") if action == "select_other_server" else SID
            m = _msg(
                i,
                MessageType.REQUEST,
                relayed=relayed,
                requested=addr,
                server_id=sid,
                lease_time=lt,
            )
        elif action == "init_reboot":
            m = _msg(i, MessageType.REQUEST, relayed=relayed, requested=mine if pick % 2 else rnd)
        elif action in ("renew", "rebind"):
            m = _msg(i, MessageType.REQUEST, relayed=False, ciaddr=mine, lease_time=lt)
            if action == "renew":
                rx = RxInfo(src_ip=mine, src_port=68, local_ip=SID, to_unicast=True)
        elif action == "release":
            m = _msg(i, MessageType.RELEASE, relayed=False, ciaddr=mine, server_id=SID)
            rx = RxInfo(src_ip=mine, src_port=68, local_ip=SID, to_unicast=True)
            held.pop(i, None)
        elif action == "decline":
            m = _msg(i, MessageType.DECLINE, relayed=relayed, requested=mine, server_id=SID)
            held.pop(i, None)
        else:
            m = _msg(i, MessageType.INFORM, relayed=False, ciaddr=mine)
            rx = RxInfo(src_ip=mine, src_port=68, local_ip=SID, to_unicast=True)

        out = eng.handle(m, rx, now)

        assert len(out.replies) <= 1
        for r in out.replies:
            reply = r.msg
            mt = reply.message_type
            assert reply.xid == m.xid and reply.chaddr == m.chaddr
            if mt is MessageType.NAK:
                held.pop(i, None)
                offered.pop(i, None)
                continue
            if m.message_type is MessageType.INFORM:
                assert reply.yiaddr == ZERO_IP and 51 not in reply.options
                continue
            y = reply.yiaddr
            # never an excluded address, never someone else's reserved address
            assert y not in EXCLUDED
            assert RESERVED.get(y, i) == i
            if mt is MessageType.OFFER:
                offered[i] = y
                assert out.changed == []
            else:
                assert mt is MessageType.ACK
                granted = struct.unpack("!I", reply.options[51])[0]
                assert 10 <= granted <= 1200
                held[i] = (y, now + granted)
                # the recorded end is the grant, or the client's longer current lease (a
                # shorter grant never shortens it: the ACK may be lost)
                prev = recorded.get(i)
                longest = max(now + granted, prev[1] if prev and prev[0] == y else 0.0)
                ends = [le.end for le in out.changed if le.address == y]
                assert ends and now + granted <= ends[-1] <= longest
                recorded[i] = (y, ends[-1])

        # No address is believed held by two clients at once.
        live = {c: a for c, (a, end) in held.items() if end > now}
        assert len(set(live.values())) == len(live), (live, now)
        # What a client believes it holds, the server has bound to it, at least as long.
        for c, (a, end) in held.items():
            if end <= now:
                continue
            bound = eng.table.get(int(a))
            assert bound is not None
            assert bound.state is BindingState.ACTIVE and bound.end >= end
            assert eng.table.key_of(int(a)) == keys[c]
        # Index consistency: by-client index matches the leases' own fields.
        for le in eng.table:
            k = lease_key(le)
            assert eng.table.key_of(int(le.address)) == k
            if k is not None:
                assert le in eng.table.for_client(k)
            if le.state is BindingState.ACTIVE:
                assert le.address not in EXCLUDED
            if le.state is BindingState.ABANDONED:
                assert k is None
        # Offer holds: the by-address and by-client maps agree.
        for a_int, off in eng._offers.items():
            assert off.addr == a_int and eng._offer_of.get(off.key) is off
        assert all(eng._offers.get(off.addr) is off for off in eng._offer_of.values())

    # Liveness: once every lease and probation has run out, no pool address is lost.
    now += 10**6
    eng.handle_timer(now)
    assert eng.get_timer() is None
    local = RxInfo(src_ip=IP("0.0.0.0"), src_port=68, local_ip=SID)
    got = set()
    for n in range(20):
        hw = bytes((0x06, 0, 0, 0, 0, n))
        d = DhcpMessage(chaddr=hw + b"\x00" * 10, options={53: b"\x01"})
        out = eng.handle(d, local, now)
        if out.replies:
            got.add(out.replies[0].msg.yiaddr)
    assert got == POOL1_DYNAMIC
