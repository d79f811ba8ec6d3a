"""The engine's pre-encoded reply options (``DhcpMessage.wire_options``) are byte for byte
what encode() lays out from the options alone, for any option set, PRL, client identifier
and relay agent information; and the shortcut is taken in the plain case, not taken where
the layout differs (a configured 61/82/52 in the tail)."""

from __future__ import annotations

import dataclasses
from ipaddress import IPv4Address, IPv4Network

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tandem.config.schema import (
    Config,
    CustomOption,
    LeaseTimes,
    OptionSet,
    Pool,
    ServerSection,
    Subnet,
)
from tandem.dhcp.engine import Engine
from tandem.dhcp.types import RxInfo
from tandem.wire.dhcp import ZERO_IP, DhcpMessage, MessageType, decode, encode, encode_options

IP = IPv4Address
SID = IP("192.0.2.1")
RX = RxInfo(src_ip=IP("0.0.0.0"), src_port=68, interface="eth1", local_ip=SID)
T0 = 1_700_000_000.0


def engine(custom: list[tuple[int, bytes]], **named: object) -> Engine:
    cfg = Config(
        server=ServerSection(server_id=SID),
        lease=LeaseTimes(offer_hold_s=30),
        options=OptionSet(
            custom=[CustomOption(code=c, hex=v.hex()) for c, v in custom], **named  # type: ignore[arg-type]
        ),
        subnets=[Subnet(prefix=IPv4Network("192.0.2.0/24"),
                        pools=[Pool(start=IP("192.0.2.10"), end=IP("192.0.2.200"))])],
    )
    return Engine(cfg)


def request(
    mt: MessageType, n: int, opts: dict[int, bytes], ciaddr: IPv4Address = ZERO_IP
) -> DhcpMessage:
    hw = bytes((2, 0, 0, 0, 0, n))
    return DhcpMessage(xid=n, ciaddr=ciaddr, chaddr=hw + bytes(10),
                       options={53: bytes((mt,)), **opts})


def replies(eng: Engine, n: int, extra: dict[int, bytes]) -> list[DhcpMessage]:
    """OFFER, ACK and the ACK of an INFORM for client ``n`` sending ``extra``."""
    out = []
    offer = eng.handle(request(MessageType.DISCOVER, n, extra), RX, T0).replies[0].msg
    out.append(offer)
    req = {50: offer.yiaddr.packed, 54: SID.packed, **extra}
    out.append(eng.handle(request(MessageType.REQUEST, n, req), RX, T0).replies[0].msg)
    inform = eng.handle(request(MessageType.INFORM, n, extra, ciaddr=offer.yiaddr), RX, T0)
    out.append(inform.replies[0].msg)
    return out


def plain(m: DhcpMessage) -> bytes:
    return encode(dataclasses.replace(m, wire_options=None))


def test_plain_replies_carry_their_encoding_and_it_is_encodes_own() -> None:
    eng = engine([(66, b"tftp")], dns_servers=[IP("192.0.2.53")], domain_name="example.test")
    extra = {55: bytes((1, 3, 6, 15, 66)), 61: b"\x01\x02\x00\x00\x00\x00\x07",
             82: b"\x01\x04eth0"}
    for m in replies(eng, 7, extra):
        assert m.wire_options is not None
        assert encode(m) == plain(m)
        back = decode(encode(m))
        assert back.options == m.options
        assert list(back.options)[-2:] == [61, 82]  # echoed last, client id first


def test_a_configured_relay_option_in_the_tail_takes_the_generic_path() -> None:
    for custom in ([(82, b"\x01\x01x")], [(61, b"\x00abc")], [(52, b"\x01")]):
        eng = engine(custom)
        code = custom[0][0]
        for m in replies(eng, 8, {55: bytes((code, 1))}):
            assert m.wire_options is None  # the echo would move it: encode lays it out
        sent = {55: bytes((code, 1)), 61: b"\x00cid", 82: b"\x02\x01y"}
        for m in replies(eng, 9, sent):
            assert m.wire_options is None
            assert m.options[82] == b"\x02\x01y"  # the client's, not a configured one
            assert encode(m) == plain(m)


# Half of the codes from those whose place a reply fixes (53 54 51 58 59 first, 61 82
# last, 52 by encode) or that clients ask for; the rest anywhere in 1-254.
_CODES = st.one_of(st.sampled_from([1, 3, 6, 12, 15, 51, 52, 53, 54, 58, 59, 61, 82, 254]),
                   st.integers(min_value=1, max_value=254))
_VALUES = st.binary(min_size=0, max_size=300)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    custom=st.dictionaries(_CODES, _VALUES, max_size=6),
    prl=st.one_of(st.none(), st.lists(_CODES, max_size=12).map(bytes)),
    cid=st.one_of(st.none(), st.binary(min_size=2, max_size=255)),
    rai=st.one_of(st.none(), st.binary(min_size=0, max_size=255)),
    lease_time=st.one_of(st.none(), st.integers(min_value=0, max_value=2**32 - 1)),
)
def test_pre_encoded_options_equal_encodes_layout(
    custom: dict[int, bytes], prl: bytes | None, cid: bytes | None, rai: bytes | None,
    lease_time: int | None,
) -> None:
    eng = engine(sorted(custom.items()))
    extra: dict[int, bytes] = {}
    if prl is not None:
        extra[55] = prl
    if cid is not None:
        extra[61] = cid
    if rai is not None:
        extra[82] = rai
    if lease_time is not None:
        extra[51] = lease_time.to_bytes(4, "big")
    for m in replies(eng, 1, extra):
        for size in (576, 1500):
            assert outcome(m, size) == outcome(dataclasses.replace(m, wire_options=None), size)


def outcome(m: DhcpMessage, size: int) -> bytes | str:
    try:
        return encode(m, size)
    except ValueError:
        return "ValueError"  # too big even with overload: no reply either way


def test_encode_options_refuses_what_encode_places_or_refuses() -> None:
    assert encode_options([(1, b"\xff\xff\xff\x00"), (66, b"x" * 300)]) == (
        b"\x01\x04\xff\xff\xff\x00" + b"\x42\xff" + b"x" * 255 + b"\x42\x2d" + b"x" * 45
    )
    for code in (0, 52, 53, 255):
        try:
            encode_options([(code, b"")])
        except ValueError:
            continue
        raise AssertionError(f"code {code} was pre-encoded")
