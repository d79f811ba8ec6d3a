"""The DHCP engine in virtual time: RFC 2131 §4.1, §4.3, §4.4 behaviour."""

from __future__ import annotations

import struct
import time
from collections.abc import Iterable
from ipaddress import IPv4Address, IPv4Network

import pytest

from tandem.config.schema import (
    Config,
    CustomOption,
    LeaseTimes,
    OptionSet,
    Pool,
    Reservation,
    ServerSection,
    Subnet,
)
from tandem.dhcp.engine import (
    EVENT_ADDRESS_DECLINED,
    EVENT_POOL_EXHAUSTED,
    STATS_NAMES,
    Engine,
    classify_request,
    deliver,
)
from tandem.dhcp.types import BROADCAST_IP, Outcome, RxInfo
from tandem.failover.policy import RequestKind
from tandem.leases.model import BindingState, Lease
from tandem.wire.dhcp import FLAG_BROADCAST, ZERO_IP, DhcpMessage, MessageType

IP = IPv4Address
T0 = 1_700_000_000.0
SID = IP("192.0.2.1")
NET1 = "192.0.2."
NET2 = "198.51.100."
RELAY2 = IP("203.0.113.1")  # a relay listed in subnet 2's relay_addresses
RX1 = RxInfo(src_ip=IP("0.0.0.0"), src_port=68, interface="eth1", local_ip=SID)
RX_NONE = RxInfo(src_ip=IP("0.0.0.0"), src_port=68, interface="eth9", local_ip=IP("203.0.113.77"))


def ip1(last: int) -> IPv4Address:
    return IP(NET1 + str(last))


def ip2(last: int) -> IPv4Address:
    return IP(NET2 + str(last))


def mac(n: int) -> bytes:
    return bytes((0x02, 0, 0, 0, (n >> 8) & 0xFF, n & 0xFF))


RES_MAC = mac(0xAA)
RES_CID = b"\x01" + mac(0xBB)


def make_config(**lease: int) -> Config:
    times = {"offer_hold_s": 30, "decline_probation_s": 600, **lease}
    return Config(
        server=ServerSection(server_id=SID, log_burst_interval_s=10.0),
        lease=LeaseTimes(**times),
        options=OptionSet(
            dns_servers=[IP("192.0.2.53")],
            domain_name="example.test",
            custom=[CustomOption(code=66, hex="74667470")],
        ),
        subnets=[
            Subnet(
                prefix=IPv4Network("192.0.2.0/24"),
                pools=[Pool(start=ip1(10), end=ip1(20))],
                exclusions=[Pool(start=ip1(15), end=ip1(16))],
                reservations=[
                    Reservation(ip_address=ip1(50), hw_address="02:00:00:00:00:aa", hostname="r"),
                    Reservation(
                        ip_address=ip1(12),  # inside the pool
                        client_id="01:02:00:00:00:00:bb",
                        options=OptionSet(domain_name="res.example.test"),
                    ),
                ],
                options=OptionSet(routers=[ip1(1)], custom=[CustomOption(code=15, hex="6f")]),
            ),
            Subnet(
                prefix=IPv4Network("198.51.100.0/24"),
                pools=[Pool(start=ip2(10), end=ip2(12))],
                relay_addresses=[RELAY2],
                lease_time_s=600,
                renew_time_s=100,
                rebind_time_s=400,
                options=OptionSet(routers=[ip2(1)]),
            ),
        ],
    )


POOL1 = {ip1(n) for n in (10, 11, 13, 14, 17, 18, 19, 20)}  # .12 reserved, .15-.16 excluded


def msg(
    mt: MessageType,
    hw: bytes,
    *,
    cid: bytes | None = None,
    requested: IPv4Address | None = None,
    server_id: IPv4Address | None = None,
    ciaddr: IPv4Address = ZERO_IP,
    giaddr: IPv4Address = ZERO_IP,
    flags: int = 0,
    lease_time: int | None = None,
    prl: bytes | None = None,
    extra: dict[int, bytes] | None = None,
    xid: int = 0x1234,
) -> DhcpMessage:
    opts: dict[int, bytes] = {53: bytes((mt,))}
    if cid is not None:
        opts[61] = cid
    if requested is not None:
        opts[50] = requested.packed
    if server_id is not None:
        opts[54] = server_id.packed
    if lease_time is not None:
        opts[51] = struct.pack("!I", lease_time)
    if prl is not None:
        opts[55] = prl
    opts.update(extra or {})
    return DhcpMessage(
        xid=xid,
        flags=flags,
        ciaddr=ciaddr,
        giaddr=giaddr,
        chaddr=hw + b"\x00" * (16 - len(hw)),
        options=opts,
    )


def unicast_rx(src: IPv4Address) -> RxInfo:
    return RxInfo(src_ip=src, src_port=68, interface="eth1", local_ip=SID, to_unicast=True)


class Client:
    """A scripted client: the engine's answers, no RFC client state machine."""

    def __init__(self, eng: Engine, hw: bytes, cid: bytes | None = None) -> None:
        self.eng, self.hw, self.cid = eng, hw, cid

    def send(self, m: DhcpMessage, now: float, rx: RxInfo = RX1) -> Outcome:
        return self.eng.handle(m, rx, now)

    def discover(self, now: float, rx: RxInfo = RX1, **kw: object) -> IPv4Address | None:
        out = self.send(msg(MessageType.DISCOVER, self.hw, cid=self.cid, **kw), now, rx)  # type: ignore[arg-type]
        assert out.changed == []  # an OFFER changes nothing durable
        if not out.replies:
            return None
        reply = out.replies[0].msg
        assert reply.message_type is MessageType.OFFER
        return reply.yiaddr

    def select(self, addr: IPv4Address, now: float, rx: RxInfo = RX1, **kw: object) -> Outcome:
        m = msg(
            MessageType.REQUEST,
            self.hw,
            cid=self.cid,
            requested=addr,
            server_id=SID,
            **kw,  # type: ignore[arg-type]
        )
        return self.send(m, now, rx)

    def dora(self, now: float, rx: RxInfo = RX1, **kw: object) -> IPv4Address:
        addr = self.discover(now, rx, **kw)
        assert addr is not None
        out = self.select(addr, now, rx)
        assert kind(out) is MessageType.ACK, out
        return addr

    def renew(self, addr: IPv4Address, now: float) -> Outcome:
        m = msg(MessageType.REQUEST, self.hw, cid=self.cid, ciaddr=addr)
        return self.send(m, now, unicast_rx(addr))

    def rebind(self, addr: IPv4Address, now: float, rx: RxInfo = RX1) -> Outcome:
        m = msg(MessageType.REQUEST, self.hw, cid=self.cid, ciaddr=addr, flags=FLAG_BROADCAST)
        return self.send(m, now, rx)

    def reboot(self, addr: IPv4Address, now: float, rx: RxInfo = RX1) -> Outcome:
        m = msg(MessageType.REQUEST, self.hw, cid=self.cid, requested=addr)
        return self.send(m, now, rx)

    def release(self, addr: IPv4Address, now: float) -> Outcome:
        m = msg(MessageType.RELEASE, self.hw, cid=self.cid, ciaddr=addr, server_id=SID)
        return self.send(m, now, unicast_rx(addr))

    def decline(self, addr: IPv4Address, now: float) -> Outcome:
        m = msg(MessageType.DECLINE, self.hw, cid=self.cid, requested=addr, server_id=SID)
        return self.send(m, now)


def kind(out: Outcome) -> MessageType | None:
    if not out.replies:
        return None
    assert len(out.replies) == 1
    return out.replies[0].msg.message_type


def opt_u32(m: DhcpMessage, code: int) -> int:
    return int(struct.unpack("!I", m.options[code])[0])


def state_of(eng: Engine, addr: IPv4Address) -> BindingState | None:
    le = eng.table.get(int(addr))
    return le.state if le is not None else None


@pytest.fixture
def eng() -> Engine:
    return Engine(make_config())


# --------------------------------------------------------------------------- basics


def test_stats_names_are_all_present_from_the_start(eng: Engine) -> None:
    assert set(STATS_NAMES) <= set(eng.stats)
    assert all(eng.stats[n] == 0 for n in STATS_NAMES)


def test_discover_offer_shape_and_nothing_durable(eng: Engine) -> None:
    m = msg(MessageType.DISCOVER, mac(1), xid=0xABCDEF01, extra={12: b"laptop"})
    m.hops = 3
    out = eng.handle(m, RX1, T0)
    assert out.changed == [] and out.event is None
    (r,) = out.replies
    o = r.msg
    assert o.op == 2 and o.xid == 0xABCDEF01 and o.hops == 0 and o.chaddr == m.chaddr
    assert o.message_type is MessageType.OFFER
    assert o.yiaddr in POOL1 and o.ciaddr == ZERO_IP
    assert list(o.options)[:6] == [53, 54, 51, 58, 59, 1]
    assert o.options[54] == SID.packed
    assert o.options[1] == IP("255.255.255.0").packed
    assert eng.stats["rx_discover"] == 1 and eng.stats["tx_offer"] == 1
    assert list(eng.leases()) == []  # nothing durable


def test_selecting_ack_records_the_lease(eng: Engine) -> None:
    c = Client(eng, mac(1))
    addr = c.discover(T0, extra={12: b"laptop"})
    assert addr is not None
    m = msg(
        MessageType.REQUEST,
        mac(1),
        requested=addr,
        server_id=SID,
        extra={12: b"laptop", 82: b"\x01\x03abc"},
    )
    out = eng.handle(m, RX1, T0 + 1)
    assert kind(out) is MessageType.ACK
    ack = out.replies[0].msg
    assert ack.yiaddr == addr and opt_u32(ack, 51) == 3600
    (le,) = out.changed
    assert le.address == addr and le.state is BindingState.ACTIVE
    assert (le.start, le.end, le.cltt) == (T0 + 1, T0 + 1 + 3600, T0 + 1)
    assert le.hwaddr == mac(1) and le.hostname == "laptop" and le.relay_info == b"\x01\x03abc"
    assert le.subnet_id == 1
    assert eng.get_timer() == T0 + 1 + 3600
    # changed holds snapshots: mutating them does not touch the engine
    le.state = BindingState.FREE
    assert state_of(eng, addr) is BindingState.ACTIVE


# --------------------------------------------------------------------------- DISCOVER


def test_offer_hold_keeps_address_from_others_until_it_lapses(eng: Engine) -> None:
    a = Client(eng, mac(1)).discover(T0)
    b = Client(eng, mac(2)).discover(T0 + 1)
    assert a is not None and b is not None and a != b
    # retransmitted DISCOVER: same address
    assert Client(eng, mac(1)).discover(T0 + 2) == a
    assert eng.get_timer() == T0 + 1 + 30  # b's hold ends first; a's was renewed
    assert eng.handle_timer(T0 + 40) == []  # holds lapse; no lease changes
    assert eng.stats["offer_expired"] == 2
    # lapsed (never used) addresses come back, in lapse order, before untouched ones
    assert Client(eng, mac(3)).discover(T0 + 41) == b
    assert Client(eng, mac(4)).discover(T0 + 41) == a
    assert Client(eng, mac(5)).discover(T0 + 41) == ip1(13)


def test_discover_prefers_requested_address_when_free(eng: Engine) -> None:
    assert Client(eng, mac(1)).discover(T0, requested=ip1(19)) == ip1(19)
    # requested but excluded / reserved / outside the pool / held: ignored
    for bad in (ip1(15), ip1(12), ip1(50), ip1(99), ip1(19)):
        got = Client(eng, mac(2)).discover(T0, requested=bad)
        assert got != bad and got in POOL1


def test_discover_preference_order(eng: Engine) -> None:
    # previous binding beats the requested address
    c = Client(eng, mac(1))
    addr = c.dora(T0)
    assert c.discover(T0 + 10, requested=ip1(20)) == addr
    # reservation beats everything
    r = Client(eng, RES_MAC)
    assert r.discover(T0, requested=ip1(20)) == ip1(50)


def test_exclusions_and_reservations_never_allocated_dynamically(eng: Engine) -> None:
    got = set()
    for n in range(1, 30):
        a = Client(eng, mac(n)).discover(T0)
        if a is not None:
            got.add(a)
    assert got == POOL1
    assert eng.stats["pool_exhausted"] == 29 - len(POOL1)


def test_exhaustion_event_once_per_burst_interval(eng: Engine) -> None:
    for n in range(1, 9):
        assert Client(eng, mac(n)).dora(T0)
    events = []
    for i in range(20):
        out = eng.handle(msg(MessageType.DISCOVER, mac(100 + i)), RX1, T0 + i)
        assert out.replies == []
        events.append(out.event)
    # t=0 and t=10 (burst interval 10 s)
    assert events.count(EVENT_POOL_EXHAUSTED) == 2
    assert events[0] == EVENT_POOL_EXHAUSTED and events[10] == EVENT_POOL_EXHAUSTED
    assert eng.stats["pool_exhausted"] == 20


def test_pool_exhaustion_is_per_subnet(eng: Engine) -> None:
    rx2 = RxInfo(src_ip=IP("0.0.0.0"), src_port=68, local_ip=ip2(1))
    for n in range(3):
        assert Client(eng, mac(n)).discover(T0, rx2) is not None
    out = eng.handle(msg(MessageType.DISCOVER, mac(50)), rx2, T0)
    assert out.event == EVENT_POOL_EXHAUSTED
    # subnet 1 is not exhausted
    assert Client(eng, mac(60)).discover(T0) in POOL1


# --------------------------------------------------------------------------- REQUEST


def test_selecting_for_another_server_drops_our_offer_silently(eng: Engine) -> None:
    c = Client(eng, mac(1))
    a = c.discover(T0)
    assert a is not None
    m = msg(MessageType.REQUEST, mac(1), requested=a, server_id=IP("192.0.2.2"))
    out = eng.handle(m, RX1, T0 + 1)
    assert out.replies == [] and out.changed == []
    assert eng.stats["drop_not_for_us"] == 1 and eng.stats["offer_withdrawn"] == 1
    # the address is immediately available to others
    assert Client(eng, mac(2)).discover(T0 + 2) == a


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("offered", MessageType.ACK),
        ("other_than_offered", MessageType.NAK),
        ("excluded", MessageType.NAK),
        ("off_network", MessageType.NAK),
        ("no_offer_but_free", MessageType.ACK),  # offer lost (restart): ISC-like ACK
        ("held_for_other", MessageType.NAK),
        ("active_for_other", MessageType.NAK),
        ("reserved_for_other", MessageType.NAK),
    ],
)
def test_selecting_table(eng: Engine, case: str, expected: MessageType) -> None:
    c = Client(eng, mac(1))
    other = Client(eng, mac(2))
    if case == "offered":
        a = c.discover(T0)
    elif case == "other_than_offered":
        c.discover(T0)
        a = ip1(20)
    elif case == "excluded":
        a = ip1(15)
    elif case == "off_network":
        a = ip2(10)
    elif case == "no_offer_but_free":
        a = ip1(19)
    elif case == "held_for_other":
        a = other.discover(T0)
    elif case == "active_for_other":
        a = other.dora(T0)
    else:
        a = ip1(12)
    assert a is not None
    out = c.select(a, T0 + 1)
    assert kind(out) is expected
    if expected is MessageType.NAK:
        assert out.changed == []
        assert eng.table.key_of(int(a)) != b"H\x01" + mac(1)
    else:
        assert out.replies[0].msg.yiaddr == a


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("own_address", MessageType.ACK),
        ("own_expired_address", MessageType.ACK),
        ("other_address_than_record", MessageType.NAK),
        ("not_on_network", MessageType.NAK),
        ("no_record", None),  # RFC 2131: silent
        ("no_record_address_bound_to_other", MessageType.NAK),
        ("own_address_wrong_link", MessageType.NAK),
    ],
)
def test_init_reboot_table(eng: Engine, case: str, expected: MessageType | None) -> None:
    c = Client(eng, mac(1))
    rx = RX1
    now = T0 + 100
    if case in ("own_address", "other_address_than_record", "own_address_wrong_link"):
        mine = c.dora(T0)
        a = mine if case != "other_address_than_record" else ip1(20)
        if case == "own_address_wrong_link":
            rx = RxInfo(src_ip=IP("0.0.0.0"), src_port=68, local_ip=ip2(1))
    elif case == "own_expired_address":
        a = c.dora(T0)
        now = T0 + 5000
        eng.handle_timer(now)
        assert state_of(eng, a) is BindingState.EXPIRED
    elif case == "not_on_network":
        c.dora(T0)
        a = ip2(10)
    elif case == "no_record":
        a = ip1(19)
    else:
        a = Client(eng, mac(2)).dora(T0)
    before = eng.stats["drop_unknown_client"]
    out = c.reboot(a, now, rx)
    assert kind(out) is expected
    if expected is MessageType.ACK:
        assert out.replies[0].msg.yiaddr == a
        assert out.changed[0].end == now + 3600
    if expected is None:
        assert eng.stats["drop_unknown_client"] == before + 1
    assert eng.stats["request_init_reboot"] == 1


@pytest.mark.parametrize("renewing", [True, False])
def test_renew_and_rebind_extend_own_lease(eng: Engine, renewing: bool) -> None:
    c = Client(eng, mac(1))
    a = c.dora(T0)
    out = c.renew(a, T0 + 1800) if renewing else c.rebind(a, T0 + 3200)
    assert kind(out) is MessageType.ACK
    ack = out.replies[0].msg
    assert ack.yiaddr == a and ack.ciaddr == a
    now = T0 + 1800 if renewing else T0 + 3200
    assert out.changed[0].end == now + 3600
    # RFC 2131 §4.1: ciaddr set -> unicast to ciaddr (even when the broadcast bit is set)
    assert out.replies[0].dest_ip == a and out.replies[0].dest_port == 68
    assert not out.replies[0].link_layer
    assert eng.stats["request_renewing" if renewing else "request_rebinding"] == 1


@pytest.mark.parametrize(
    ("case", "renewing", "expected"),
    [
        ("bound_to_other", True, MessageType.NAK),
        ("bound_to_other", False, MessageType.NAK),
        ("unknown_free_in_pool", True, MessageType.ACK),  # reclaim a lease we lost (ISC)
        ("unknown_free_in_pool", False, MessageType.ACK),
        ("outside_every_subnet", True, None),
        ("outside_every_subnet", False, MessageType.NAK),
        ("in_subnet_outside_pool", True, MessageType.NAK),
        ("declined_in_probation", True, MessageType.NAK),
    ],
)
def test_renew_rebind_table(
    eng: Engine, case: str, renewing: bool, expected: MessageType | None
) -> None:
    c = Client(eng, mac(1))
    if case == "bound_to_other":
        a = Client(eng, mac(2)).dora(T0)
    elif case == "unknown_free_in_pool":
        a = ip1(19)
    elif case == "outside_every_subnet":
        a = IP("203.0.113.50")
    elif case == "in_subnet_outside_pool":
        a = ip1(100)
    else:
        d = Client(eng, mac(3))
        a = d.dora(T0)
        d.decline(a, T0 + 1)
    out = c.renew(a, T0 + 10) if renewing else c.rebind(a, T0 + 10)
    assert kind(out) is expected
    if expected is MessageType.ACK:
        assert eng.stats["reclaimed"] == 1
        assert state_of(eng, a) is BindingState.ACTIVE
    if expected is None:
        assert eng.stats["drop_not_on_network"] == 1


def test_rebinding_on_another_link_is_naked(eng: Engine) -> None:
    """A client that moved to subnet 2's link and rebinds its subnet-1 address."""
    c = Client(eng, mac(1))
    a = c.dora(T0)
    rx2 = RxInfo(src_ip=IP("0.0.0.0"), src_port=68, local_ip=ip2(1))
    assert kind(c.rebind(a, T0 + 10, rx2)) is MessageType.NAK


def test_request_classification() -> None:
    sel = msg(MessageType.REQUEST, mac(1), requested=ip1(10), server_id=SID)
    reb = msg(MessageType.REQUEST, mac(1), requested=ip1(10))
    ren = msg(MessageType.REQUEST, mac(1), ciaddr=ip1(10))
    bad = msg(MessageType.REQUEST, mac(1))
    assert classify_request(sel, False) is RequestKind.SELECTING
    assert classify_request(reb, False) is RequestKind.INIT_REBOOT
    assert classify_request(ren, True) is RequestKind.RENEWING
    assert classify_request(ren, False) is RequestKind.REBINDING
    assert classify_request(bad, False) is None
    # relayed: the client broadcast it (relays forward broadcasts only), the relay unicast it
    relayed = msg(MessageType.REQUEST, mac(1), ciaddr=ip2(10), giaddr=RELAY2)
    assert classify_request(relayed, True) is RequestKind.REBINDING


def test_request_without_ciaddr_or_requested_ip_is_dropped(eng: Engine) -> None:
    out = eng.handle(msg(MessageType.REQUEST, mac(1)), RX1, T0)
    assert out.replies == [] and eng.stats["drop_bad_message"] == 1


def test_nak_shape_direct_and_relayed(eng: Engine) -> None:
    out = Client(eng, mac(1), cid=b"\x01" + mac(1)).select(ip1(15), T0, extra={82: b"\x01\x01x"})
    (r,) = out.replies
    n = r.msg
    assert n.message_type is MessageType.NAK and n.yiaddr == ZERO_IP and n.ciaddr == ZERO_IP
    assert n.options[54] == SID.packed and n.options[56]
    assert list(n.options) == [53, 54, 56, 61, 82]
    assert 51 not in n.options
    assert (r.dest_ip, r.dest_port) == (BROADCAST_IP, 68)
    relayed = msg(MessageType.REQUEST, mac(1), requested=ip2(99), server_id=SID, giaddr=ip2(1))
    (r2,) = eng.handle(relayed, RX1, T0).replies
    assert r2.msg.message_type is MessageType.NAK
    assert (r2.dest_ip, r2.dest_port) == (ip2(1), 67)
    assert r2.msg.flags & FLAG_BROADCAST and r2.msg.giaddr == ip2(1)


# --------------------------------------------------------------------------- DECLINE / RELEASE


def test_decline_abandons_for_probation_then_returns_to_pool() -> None:
    eng = Engine(make_config(decline_probation_s=600))
    c = Client(eng, mac(1))
    a = c.dora(T0)
    out = c.decline(a, T0 + 5)
    assert out.replies == [] and out.event == EVENT_ADDRESS_DECLINED
    (le,) = out.changed
    assert le.state is BindingState.ABANDONED and le.end == T0 + 5 + 600
    assert le.hwaddr == b"" and le.client_id is None  # association cleared
    assert eng.stats["declined"] == 1
    # during probation nobody gets it, not even by asking for it
    seen = {Client(eng, mac(n)).discover(T0 + 10, requested=a) for n in range(10, 30)}
    assert a not in seen
    eng.handle_timer(T0 + 100)  # offer holds lapse
    assert eng.get_timer() == T0 + 5 + 600
    changed = eng.handle_timer(T0 + 605)
    assert [(x.address, x.state) for x in changed] == [(a, BindingState.FREE)]
    assert eng.stats["probation_ended"] == 1
    assert Client(eng, mac(99)).discover(T0 + 606, requested=a) == a
    # and it is back in the dynamic pool, not only reachable by asking for it
    eng.handle_timer(T0 + 700)
    got = {Client(eng, mac(n)).discover(T0 + 700) for n in range(100, 120)}
    assert got - {None} == POOL1


def test_decline_of_someone_elses_address_is_ignored(eng: Engine) -> None:
    a = Client(eng, mac(1)).dora(T0)
    out = Client(eng, mac(2)).decline(a, T0 + 1)
    assert out.changed == [] and eng.stats["drop_decline_mismatch"] == 1
    assert state_of(eng, a) is BindingState.ACTIVE


def test_decline_for_another_server_is_ignored(eng: Engine) -> None:
    a = Client(eng, mac(1)).dora(T0)
    m = msg(MessageType.DECLINE, mac(1), requested=a, server_id=IP("192.0.2.2"))
    assert eng.handle(m, RX1, T0).changed == []
    assert eng.stats["drop_not_for_us"] == 1


def test_release_then_same_client_gets_same_address_others_do_not(eng: Engine) -> None:
    c = Client(eng, mac(1))
    a = c.dora(T0)
    out = c.release(a, T0 + 10)
    assert out.replies == []
    (le,) = out.changed
    assert le.state is BindingState.RELEASED and le.hwaddr == mac(1) and le.end == T0 + 10
    assert eng.stats["released"] == 1
    # other clients get never-used addresses first
    b = Client(eng, mac(2)).dora(T0 + 20)
    assert b != a
    assert c.dora(T0 + 30) == a


def test_release_of_not_own_lease_is_ignored(eng: Engine) -> None:
    a = Client(eng, mac(1)).dora(T0)
    assert Client(eng, mac(2)).release(a, T0 + 1).changed == []
    assert eng.stats["drop_release_mismatch"] == 1
    assert state_of(eng, a) is BindingState.ACTIVE


# --------------------------------------------------------------------------- expiry


def test_expiry_keeps_association_and_reuse_prefers_never_used() -> None:
    eng = Engine(make_config())
    c = Client(eng, mac(1))
    a = c.dora(T0)
    assert eng.get_timer() == T0 + 3600
    changed = eng.handle_timer(T0 + 3600)
    assert [(x.address, x.state, x.hwaddr) for x in changed] == [(a, BindingState.EXPIRED, mac(1))]
    assert eng.stats["expired"] == 1
    assert eng.get_timer() is None
    # other clients: never-used addresses first, the expired one last
    others = [Client(eng, mac(n)).dora(T0 + 3700) for n in range(2, 2 + len(POOL1) - 1)]
    assert a not in others
    assert Client(eng, mac(50)).dora(T0 + 3700) == a  # now the expired one
    assert Client(eng, mac(51)).discover(T0 + 3700) is None


def test_expired_client_gets_its_previous_address_back(eng: Engine) -> None:
    c = Client(eng, mac(1))
    a = c.dora(T0)
    Client(eng, mac(2)).dora(T0)
    eng.handle_timer(T0 + 9999)
    assert c.dora(T0 + 10000) == a


def test_renewal_moves_the_timer(eng: Engine) -> None:
    c = Client(eng, mac(1))
    a = c.dora(T0)
    c.renew(a, T0 + 1800)
    assert eng.handle_timer(T0 + 3600) == []  # the old deadline is stale
    assert eng.get_timer() == T0 + 1800 + 3600
    assert state_of(eng, a) is BindingState.ACTIVE


# --------------------------------------------------------------------------- reservations


def test_reservation_by_mac_outside_pool(eng: Engine) -> None:
    r = Client(eng, RES_MAC)
    assert r.dora(T0) == ip1(50)
    le = eng.table.get(int(ip1(50)))
    assert le is not None and le.hostname == "r"


def test_reservation_by_client_id_inside_pool_with_its_options(eng: Engine) -> None:
    r = Client(eng, mac(7), cid=RES_CID)
    a = r.discover(T0, prl=bytes([15]))
    assert a == ip1(12)
    out = r.select(a, T0, prl=bytes([15]))
    assert out.replies[0].msg.options[15] == b"res.example.test"
    # the same MAC without the client id is another client: no reservation
    assert Client(eng, mac(7)).discover(T0) != ip1(12)


def test_client_with_reservation_is_naked_for_other_addresses(eng: Engine) -> None:
    r = Client(eng, RES_MAC)
    assert kind(r.select(ip1(19), T0)) is MessageType.NAK
    assert kind(r.reboot(ip1(19), T0)) is MessageType.NAK
    assert kind(r.reboot(ip1(50), T0)) is MessageType.ACK


def test_reserved_address_held_by_other_client_falls_back_to_pool() -> None:
    """A lease from before the reservation existed: Kea-like, the reserved client gets a
    dynamic address until the old lease ends, and the holder is NAKed on renewal."""
    eng = Engine(make_config())
    eng.load(
        [
            Lease(
                ip1(12),
                1,
                BindingState.ACTIVE,
                hwaddr=mac(9),
                start=T0 - 10,
                end=T0 + 1000,
                cltt=T0 - 10,
            )
        ],
        T0,
    )
    r = Client(eng, mac(7), cid=RES_CID)
    got = r.discover(T0)
    assert got in POOL1 and got != ip1(12)
    assert kind(Client(eng, mac(9)).renew(ip1(12), T0 + 1)) is MessageType.NAK


def test_new_reservation_supersedes_active_dynamic_lease() -> None:
    eng = Engine(make_config())
    # client RES_MAC had a dynamic lease before its reservation was configured
    eng.load([Lease(ip1(19), 1, BindingState.ACTIVE, hwaddr=RES_MAC, start=T0, end=T0 + 999)], T0)
    c = Client(eng, RES_MAC)
    assert c.discover(T0 + 1) == ip1(50)
    out = c.select(ip1(50), T0 + 1)
    states = {x.address: x.state for x in out.changed}
    assert states == {ip1(50): BindingState.ACTIVE, ip1(19): BindingState.EXPIRED}
    assert eng.stats["superseded"] == 1


# --------------------------------------------------------------------------- subnet selection


@pytest.mark.parametrize(
    ("how", "expected_net"),
    [
        ("local_ip_1", NET1),
        ("local_ip_2", NET2),
        ("giaddr_in_prefix_2", NET2),
        ("giaddr_relay_address_2", NET2),
        ("giaddr_in_prefix_1", NET1),
        ("link_selection_82_5", NET2),
        ("option_118", NET2),
        ("unknown_link", None),
        ("unknown_giaddr", None),
    ],
)
def test_subnet_selection(eng: Engine, how: str, expected_net: str | None) -> None:
    kw: dict[str, object] = {}
    rx = RX1
    if how == "local_ip_2":
        rx = RxInfo(src_ip=IP("0.0.0.0"), src_port=68, local_ip=ip2(1))
    elif how == "giaddr_in_prefix_2":
        kw["giaddr"] = ip2(1)
    elif how == "giaddr_relay_address_2":
        kw["giaddr"] = RELAY2
    elif how == "giaddr_in_prefix_1":
        kw["giaddr"] = ip1(1)
        rx = RX_NONE
    elif how == "link_selection_82_5":
        kw["giaddr"] = ip1(1)  # relay on subnet 1, but the link is subnet 2's
        kw["extra"] = {82: b"\x01\x02ab\x05\x04" + ip2(0).packed}
    elif how == "option_118":
        kw["extra"] = {118: ip2(0).packed}
    elif how == "unknown_link":
        rx = RX_NONE
    elif how == "unknown_giaddr":
        kw["giaddr"] = IP("203.0.113.9")
    got = Client(eng, mac(1)).discover(T0, rx, **kw)
    if expected_net is None:
        assert got is None and eng.stats["drop_no_subnet"] == 1
    else:
        assert got is not None and str(got).startswith(expected_net)


def test_single_subnet_serves_unknown_link() -> None:
    cfg = make_config().model_copy(update={"subnets": make_config().subnets[:1]})
    eng = Engine(cfg)
    assert Client(eng, mac(1)).discover(T0, RX_NONE) in POOL1


def test_server_id_defaults_to_receiving_address_and_is_required() -> None:
    cfg = make_config()
    cfg = cfg.model_copy(update={"server": ServerSection()})
    eng = Engine(cfg)
    out = eng.handle(msg(MessageType.DISCOVER, mac(1)), RX1, T0)
    assert out.replies[0].msg.options[54] == SID.packed
    rx = RxInfo(src_ip=IP("0.0.0.0"), src_port=68)
    out = eng.handle(msg(MessageType.DISCOVER, mac(1), giaddr=ip1(1)), rx, T0)
    assert out.replies == [] and eng.stats["drop_no_server_id"] == 1


# --------------------------------------------------------------------------- options


def test_prl_selects_and_orders_options(eng: Engine) -> None:
    out = eng.handle(msg(MessageType.DISCOVER, mac(1), prl=bytes([6, 3, 99, 1, 15])), RX1, T0)
    o = out.replies[0].msg.options
    assert list(o) == [53, 54, 51, 58, 59, 1, 6, 3, 15]
    assert o[3] == ip1(1).packed and o[6] == IP("192.0.2.53").packed
    assert o[15] == b"o"  # subnet custom overrides the global named domain_name


def test_no_prl_sends_every_configured_option(eng: Engine) -> None:
    out = eng.handle(msg(MessageType.DISCOVER, mac(1)), RX1, T0)
    o = out.replies[0].msg.options
    assert {1, 3, 6, 15, 66} <= set(o)
    assert o[66] == b"tftp"  # custom hex option from the global set


def test_client_id_and_option_82_echoed_82_last(eng: Engine) -> None:
    rai = b"\x01\x04eth0\x02\x02id"
    m = msg(
        MessageType.DISCOVER,
        mac(1),
        cid=b"\xff\x00\x01",
        giaddr=ip1(1),
        prl=bytes([1, 3, 82, 61]),
        extra={82: rai},
    )
    o = eng.handle(m, RX1, T0).replies[0].msg.options
    assert o[61] == b"\xff\x00\x01" and o[82] == rai
    assert list(o)[-1] == 82 and list(o)[-2] == 61


def test_t1_t2_defaults_configured_and_requested_lease_time() -> None:
    eng = Engine(make_config(min_lease_time_s=60, max_lease_time_s=7200))
    rx2 = RxInfo(src_ip=IP("0.0.0.0"), src_port=68, local_ip=ip2(1))
    cases = [
        (RX1, None, (3600, 1800, 3150)),
        (RX1, 100000, (7200, 3600, 6300)),  # clamped to max
        (RX1, 5, (60, 30, 52)),  # clamped to min
        (RX1, 1000, (1000, 500, 875)),
        (rx2, None, (600, 100, 400)),  # subnet lease time and T1/T2
        (rx2, 300, (300, 100, 262)),  # rebind_time_s 400 >= lease: T2 = 87.5 %
    ]
    for i, (rx, req, (lt, t1, t2)) in enumerate(cases):
        out = eng.handle(msg(MessageType.DISCOVER, mac(i), lease_time=req), rx, T0)
        o = out.replies[0].msg
        assert (opt_u32(o, 51), opt_u32(o, 58), opt_u32(o, 59)) == (lt, t1, t2), (i, req)


# --------------------------------------------------------------------------- INFORM


def test_inform_gets_options_only(eng: Engine) -> None:
    m = msg(MessageType.INFORM, mac(1), ciaddr=ip1(100), prl=bytes([3, 6]))
    out = eng.handle(m, unicast_rx(ip1(100)), T0)
    assert out.changed == []
    (r,) = out.replies
    a = r.msg
    assert a.message_type is MessageType.ACK and a.yiaddr == ZERO_IP and a.ciaddr == ip1(100)
    assert not {51, 58, 59} & set(a.options)
    assert list(a.options) == [53, 54, 1, 3, 6]
    assert (r.dest_ip, r.dest_port, r.link_layer) == (ip1(100), 68, False)
    assert list(eng.leases()) == []
    relayed = msg(MessageType.INFORM, mac(1), ciaddr=ip2(100), giaddr=ip2(1))
    (r2,) = eng.handle(relayed, RX1, T0).replies
    assert (r2.dest_ip, r2.dest_port) == (ip2(1), 67)
    assert r2.msg.options[3] == ip2(1).packed


# --------------------------------------------------------------------------- delivery


@pytest.mark.parametrize(
    ("giaddr", "ciaddr", "bcast", "nak", "raw", "dest", "port", "link"),
    [
        ("198.51.100.1", "0.0.0.0", False, False, True, "198.51.100.1", 67, False),
        ("198.51.100.1", "192.0.2.9", True, True, True, "198.51.100.1", 67, False),
        ("0.0.0.0", "192.0.2.9", False, True, True, "255.255.255.255", 68, False),
        ("0.0.0.0", "0.0.0.0", False, True, True, "255.255.255.255", 68, False),
        ("0.0.0.0", "192.0.2.9", True, False, True, "192.0.2.9", 68, False),
        ("0.0.0.0", "0.0.0.0", True, False, True, "255.255.255.255", 68, False),
        ("0.0.0.0", "0.0.0.0", False, False, True, "192.0.2.10", 68, True),
        ("0.0.0.0", "0.0.0.0", False, False, False, "255.255.255.255", 68, False),
    ],
)
def test_delivery_rfc2131_4_1(
    giaddr: str, ciaddr: str, bcast: bool, nak: bool, raw: bool, dest: str, port: int, link: bool
) -> None:
    req = msg(
        MessageType.REQUEST,
        mac(1),
        giaddr=IP(giaddr),
        ciaddr=IP(ciaddr),
        flags=FLAG_BROADCAST if bcast else 0,
    )
    reply = DhcpMessage(op=2, yiaddr=ZERO_IP if nak else ip1(10), chaddr=req.chaddr)
    r = deliver(
        req, reply, nak=nak, server_port=67, client_port=68, raw_replies=raw, interface="eth1"
    )
    assert (r.dest_ip, r.dest_port, r.link_layer) == (IP(dest), port, link)
    assert r.interface == "eth1"
    if link:
        assert r.hwaddr == mac(1)


def test_engine_delivery_of_offer_link_layer_and_broadcast(eng: Engine) -> None:
    (r,) = eng.handle(msg(MessageType.DISCOVER, mac(1)), RX1, T0).replies
    assert r.link_layer and r.hwaddr == mac(1) and r.dest_ip == r.msg.yiaddr
    assert r.interface == "eth1"
    (b,) = eng.handle(msg(MessageType.DISCOVER, mac(2), flags=FLAG_BROADCAST), RX1, T0).replies
    assert not b.link_layer and b.dest_ip == BROADCAST_IP and b.msg.flags == FLAG_BROADCAST


# --------------------------------------------------------------------------- policy


class RecordingPolicy:
    def __init__(self, answer: bool = True, allocate: bool = True, cap: int | None = None) -> None:
        self.answer, self.allocate, self.cap = answer, allocate, cap
        self.kinds: list[RequestKind] = []
        self.changed: list[Lease] = []
        self.asked: list[IPv4Address] = []

    def may_answer(self, msg: DhcpMessage, kind: RequestKind, now: float) -> bool:
        self.kinds.append(kind)
        return self.answer

    def may_allocate(self, lease: Lease, now: float) -> bool:
        self.asked.append(lease.address)
        return self.allocate

    def max_lease_time(self, lease: Lease, desired_s: int, now: float) -> int:
        return desired_s if self.cap is None else min(desired_s, self.cap)

    def lease_changed(self, lease: Lease, now: float) -> None:
        self.changed.append(lease)


def test_policy_may_answer_false_means_no_reply_for_every_kind() -> None:
    pol = RecordingPolicy(answer=False)
    eng = Engine(make_config(), pol)
    msgs = [
        msg(MessageType.DISCOVER, mac(1)),
        msg(MessageType.REQUEST, mac(1), requested=ip1(10), server_id=SID),
        msg(MessageType.REQUEST, mac(1), requested=ip1(10)),
        msg(MessageType.REQUEST, mac(1), ciaddr=ip1(10)),
        msg(MessageType.DECLINE, mac(1), requested=ip1(10)),
        msg(MessageType.RELEASE, mac(1), ciaddr=ip1(10)),
        msg(MessageType.INFORM, mac(1), ciaddr=ip1(10)),
    ]
    for m in msgs:
        out = eng.handle(m, RX1, T0)
        assert out.replies == [] and out.changed == []
    assert pol.kinds == [
        RequestKind.DISCOVER,
        RequestKind.SELECTING,
        RequestKind.INIT_REBOOT,
        RequestKind.REBINDING,
        RequestKind.DECLINE,
        RequestKind.RELEASE,
        RequestKind.INFORM,
    ]
    assert eng.stats["drop_policy"] == len(msgs)


def test_policy_caps_lease_time_and_sees_changes() -> None:
    pol = RecordingPolicy(cap=120)
    eng = Engine(make_config(), pol)
    c = Client(eng, mac(1))
    a = c.discover(T0)
    assert a is not None
    out = c.select(a, T0)
    ack = out.replies[0].msg
    assert (opt_u32(ack, 51), opt_u32(ack, 58), opt_u32(ack, 59)) == (120, 60, 105)
    assert out.changed[0].end == T0 + 120
    assert [x.address for x in pol.changed] == [a]
    assert a in pol.asked


def test_policy_refusing_allocation_means_no_offer_and_no_ack() -> None:
    pol = RecordingPolicy(allocate=False)
    eng = Engine(make_config(), pol)
    c = Client(eng, mac(1))
    assert c.discover(T0) is None
    assert eng.stats["pool_exhausted"] == 1
    out = c.select(ip1(10), T0)
    assert out.replies == [] and out.changed == []  # never an ACK (nor a NAK) it refused
    assert eng.stats["drop_policy_allocate"] == 1
    assert kind(c.renew(ip1(11), T0)) is None
    # but it is never asked about the client's own unexpired lease
    pol.allocate = True
    a = c.dora(T0)
    pol.allocate = False
    pol.asked.clear()
    assert kind(c.renew(a, T0 + 10)) is MessageType.ACK
    assert pol.asked == []


def test_policy_refusing_some_addresses_skips_them() -> None:
    class Odd(RecordingPolicy):
        def may_allocate(self, lease: Lease, now: float) -> bool:
            return int(lease.address) % 2 == 1

    eng = Engine(make_config(), Odd())
    got = {Client(eng, mac(n)).discover(T0) for n in range(10)}
    assert got - {None} == {a for a in POOL1 if int(a) % 2 == 1}


# --------------------------------------------------------------------------- load / misc


def test_load_from_store_timers_and_cursor_skip_known() -> None:
    eng = Engine(make_config())
    leases = [
        Lease(ip1(10), 1, BindingState.ACTIVE, hwaddr=mac(1), end=T0 - 5),  # ran out while down
        Lease(ip1(11), 1, BindingState.ACTIVE, hwaddr=mac(2), end=T0 + 50),
        Lease(ip1(13), 1, BindingState.FREE),
        Lease(ip1(14), 1, BindingState.EXPIRED, hwaddr=mac(3), end=T0 - 100),
        Lease(ip1(17), 1, BindingState.ABANDONED, end=T0 + 20),
    ]
    eng.load(leases, T0)
    assert eng.get_timer() == T0 - 5
    changed = eng.handle_timer(T0)
    assert [(x.address, x.state) for x in changed] == [(ip1(10), BindingState.EXPIRED)]
    assert eng.get_timer() == T0 + 20
    # new clients: the FREE one, then never-used (.18 .19 .20), then the expired ones
    got = [Client(eng, mac(100 + n)).dora(T0 + 1) for n in range(6)]
    assert got[0] == ip1(13)
    assert set(got[1:4]) == {ip1(18), ip1(19), ip1(20)}
    assert got[4:] == [ip1(14), ip1(10)]  # least recently freed first
    assert Client(eng, mac(2)).discover(T0 + 1) == ip1(11)  # its own active lease


def test_bad_messages_are_counted_and_dropped(eng: Engine) -> None:
    reply = msg(MessageType.OFFER, mac(1))
    assert eng.handle(reply, RX1, T0).replies == []
    bootp = msg(MessageType.DISCOVER, mac(1))
    del bootp.options[53]
    assert eng.handle(bootp, RX1, T0).replies == []
    op2 = msg(MessageType.DISCOVER, mac(1))
    op2.op = 2
    assert eng.handle(op2, RX1, T0).replies == []
    assert eng.stats["drop_bad_message"] == 2 and eng.stats["drop_bootp"] == 1


def test_big_pool_is_cheap_to_build_and_allocates_uniquely() -> None:
    cfg = Config(
        server=ServerSection(server_id=IP("198.18.0.1")),
        subnets=[
            Subnet(
                prefix=IPv4Network("198.18.0.0/16"),
                pools=[Pool(start=IP("198.18.0.10"), end=IP("198.18.255.250"))],
            )
        ],
    )
    t = time.perf_counter()
    eng = Engine(cfg)
    assert time.perf_counter() - t < 0.5
    rx = RxInfo(src_ip=IP("0.0.0.0"), src_port=68, local_ip=IP("198.18.0.1"))
    msgs = [msg(MessageType.DISCOVER, struct.pack("!HI", 2, i)) for i in range(3000)]
    t = time.perf_counter()
    seen = {eng.handle(m, rx, T0).replies[0].msg.yiaddr for m in msgs}
    # ~30 us each normally; the bound only catches a per-packet scan of the pool
    assert time.perf_counter() - t < 2.0
    assert len(seen) == 3000


def _all_addresses(outs: Iterable[Outcome]) -> list[IPv4Address]:
    return [r.msg.yiaddr for o in outs for r in o.replies]


def test_two_clients_racing_never_share(eng: Engine) -> None:
    a, b = Client(eng, mac(1)), Client(eng, mac(2))
    xa = a.discover(T0)
    xb = b.discover(T0)
    assert xa is not None and xb is not None
    # b asks for a's offered address: NAK
    assert kind(b.select(xa, T0)) is MessageType.NAK
    assert kind(a.select(xa, T0)) is MessageType.ACK
    assert _all_addresses([b.select(xb, T0)]) == [xb]


def test_custom_option_value_goes_through_the_option_registry() -> None:
    pytest.importorskip("tandem.wire.dhcp_options")
    cfg = make_config()
    opts = OptionSet(custom=[CustomOption(code=26, value=1500)])
    cfg = cfg.model_copy(update={"options": opts})
    eng = Engine(cfg)
    out = eng.handle(msg(MessageType.DISCOVER, mac(1), prl=bytes([26])), RX1, T0)
    assert out.replies[0].msg.options[26] == struct.pack("!H", 1500)


# --------------------------------------------------------------------------- apply()
# Bindings decided outside the engine (the failover partner's updates, FREE <-> BACKUP
# moves, acknowledged times) become the engine's record: indexes, pools and timers follow.


def test_apply_partner_binding_is_known_to_the_engine(eng: Engine) -> None:
    addr = ip1(13)
    partner = Lease(addr, 1, BindingState.ACTIVE, hwaddr=mac(7), start=T0, end=T0 + 600,
                    cltt=T0, tsfp=T0 + 900)
    snap = eng.apply(partner, T0)
    assert snap == partner and snap is not partner
    assert eng.stats["applied"] == 1
    # never offered to anyone else while bound
    for n in range(20, 30):
        assert Client(eng, mac(n)).discover(T0 + 1) != addr
    # the bound client's rebinding is answered with the same address (hot-standby 2.3)
    m = msg(MessageType.REQUEST, mac(7), ciaddr=addr)
    out = eng.handle(m, RX1, T0 + 500)
    assert kind(out) is MessageType.ACK and out.replies[0].msg.yiaddr == addr
    # and its expiry is on the engine's timer
    eng2 = Engine(make_config())
    eng2.apply(partner, T0)
    assert eng2.get_timer() == T0 + 600
    assert [le.state for le in eng2.handle_timer(T0 + 600)] == [BindingState.EXPIRED]


def test_apply_withdraws_a_live_offer_on_an_address_now_bound(eng: Engine) -> None:
    c = Client(eng, mac(1))
    addr = c.discover(T0)
    assert addr is not None
    eng.apply(Lease(addr, 1, BindingState.ACTIVE, hwaddr=mac(9), start=T0, end=T0 + 600), T0)
    assert eng.stats["offer_withdrawn"] == 1
    out = c.select(addr, T0 + 1)
    assert kind(out) is MessageType.NAK  # the partner gave it to someone else first


def test_apply_free_returns_an_address_to_the_pool(eng: Engine) -> None:
    # take the whole pool, then the partner frees one address
    holders = {Client(eng, mac(n)).dora(T0) for n in range(1, 9)}
    assert holders == POOL1
    assert Client(eng, mac(50)).discover(T0) is None  # exhausted
    freed = ip1(14)
    eng.apply(Lease(freed, 1, BindingState.FREE), T0 + 1)
    assert Client(eng, mac(51)).discover(T0 + 2) == freed


def test_apply_backup_is_offered_only_as_the_policy_allows() -> None:
    class StandbyOnlyFromBackup:
        def may_answer(self, msg: DhcpMessage, kind: RequestKind, now: float) -> bool:
            return True

        def may_allocate(self, lease: Lease, now: float) -> bool:
            return lease.state is BindingState.BACKUP

        def max_lease_time(self, lease: Lease, desired_s: int, now: float) -> int:
            return desired_s

        def lease_changed(self, lease: Lease, now: float) -> None:
            return None

    e = Engine(make_config(), StandbyOnlyFromBackup())
    assert Client(e, mac(1)).discover(T0) is None  # nothing is BACKUP yet
    e.apply(Lease(ip1(19), 1, BindingState.BACKUP), T0)
    assert Client(e, mac(2)).discover(T0 + 1) == ip1(19)
