"""DHCPv4 message codec: (message, hex) tables both ways, overload and RFC 3396 splitting,
hypothesis round-trips, malformed input -> DecodeError only, scapy as an independent oracle
in both directions, and every DHCP datagram of the real captures."""

from __future__ import annotations

import logging
import struct
from functools import cache
from ipaddress import IPv4Address as A
from ipaddress import IPv4Network as N
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from tandem.errors import DecodeError
from tandem.wire.addr import ip_int
from tandem.wire.dhcp import (
    BOOTREPLY,
    OPT_OVERLOAD,
    DhcpMessage,
    MessageType,
    decode,
    encode,
)
from tandem.wire.dhcp_options import ClientId, decode_value, encode_value

logging.getLogger("scapy").setLevel(logging.ERROR)
from scapy.layers.dhcp import BOOTP, DHCP, DHCPRevOptions  # noqa: E402
from scapy.layers.inet import UDP  # noqa: E402
from scapy.layers.l2 import Ether  # noqa: E402
from scapy.utils import RawPcapNgReader  # noqa: E402

CAPTURES = Path("/work/shared/captures")
COOKIE = "63825363"
CHADDR = "020000000c01" + "00" * 10


def hdr(
    op: str = "01",
    hops: str = "00",
    xid: str = "00000000",
    secs: str = "0000",
    flags: str = "0000",
    ci: str = "00000000",
    yi: str = "00000000",
    si: str = "00000000",
    gi: str = "00000000",
    chaddr: str = CHADDR,
    sname: str = "",
    file: str = "",
    htype_hlen: str = "0106",
) -> str:
    """The RFC 2131 fixed header as hex, plus the cookie (sname/file zero-padded)."""
    return (
        op + htype_hlen + hops + xid + secs + flags + ci + yi + si + gi + chaddr
        + sname.ljust(128, "0") + file.ljust(256, "0") + COOKIE
    )  # fmt: skip


def pad300(h: str) -> str:
    return h.ljust(600, "0")


X300 = bytes(i % 251 for i in range(300))
V250 = bytes(range(250))
V100 = b"\xaa" * 100
V40 = b"\xbb" * 40

TABLE: list[tuple[str, DhcpMessage, str]] = [
    (
        "dhclient-like DISCOVER, broadcast flag",
        DhcpMessage(
            xid=0x1234ABCD, secs=3, flags=0x8000, chaddr=bytes.fromhex(CHADDR),
            options={53: b"\x01", 55: bytes([1, 3, 28, 6]), 12: b"host"},
        ),
        pad300(hdr(xid="1234abcd", secs="0003", flags="8000")
               + "350101" + "370401031c06" + "0c04686f7374" + "ff"),
    ),
    (
        "relayed ACK with sname/file in use",
        DhcpMessage(
            op=BOOTREPLY, hops=1, xid=7, yiaddr=A("192.0.2.120"), siaddr=A("192.0.2.1"),
            giaddr=A("198.51.100.1"), ciaddr=A("192.0.2.120"), chaddr=bytes.fromhex(CHADDR),
            sname=b"srv".ljust(64, b"\x00"), file=b"boot.bin".ljust(128, b"\x00"),
            options={
                53: b"\x05", 54: A("192.0.2.1").packed, 51: b"\x00\x00\x0e\x10",
                1: A("255.255.255.0").packed, 3: A("192.0.2.1").packed,
            },
        ),
        pad300(hdr(op="02", hops="01", xid="00000007", ci="c0000278", yi="c0000278",
                   si="c0000201", gi="c6336401", sname="737276", file="626f6f742e62696e")
               + "350105" + "3604c0000201" + "330400000e10" + "0104ffffff00" + "0304c0000201"
               + "ff"),
    ),
    (
        "no options at all: cookie, END, padding",
        DhcpMessage(op=BOOTREPLY, htype=6, hlen=16, chaddr=bytes(range(16))),
        pad300(hdr(op="02", htype_hlen="0610", chaddr=bytes(range(16)).hex()) + "ff"),
    ),
    (
        "a 300-byte option is split into 255 + 45 (RFC 3396)",
        DhcpMessage(chaddr=bytes.fromhex(CHADDR), options={53: b"\x03", 200: X300}),
        hdr() + "350103" + "c8ff" + X300[:255].hex() + "c82d" + X300[255:].hex() + "ff",
    ),
    (
        "overload into file then sname (decoded form keeps 52 and the raw fields)",
        DhcpMessage(
            op=BOOTREPLY, chaddr=bytes.fromhex(CHADDR),
            sname=(b"\xcb\x28" + V40 + b"\xff").ljust(64, b"\x00"),
            file=(b"\xca\x64" + V100 + b"\xff").ljust(128, b"\x00"),
            options={53: b"\x05", 52: b"\x03", 201: V250, 202: V100, 203: V40},
        ),
        hdr(op="02", sname="cb28" + V40.hex() + "ff", file="ca64" + V100.hex() + "ff")
        + "350105" + "340103" + "c9fa" + V250.hex() + "ff",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("name", "msg", "hexed"), TABLE, ids=[t[0] for t in TABLE])
def test_decode_table(name: str, msg: DhcpMessage, hexed: str) -> None:
    assert decode(bytes.fromhex(hexed)) == msg


@pytest.mark.parametrize(("name", "msg", "hexed"), TABLE, ids=[t[0] for t in TABLE])
def test_encode_table(name: str, msg: DhcpMessage, hexed: str) -> None:
    assert encode(msg).hex() == hexed


def test_overload_is_chosen_by_encode_for_fresh_messages() -> None:
    _, decoded, hexed = TABLE[-1]
    fresh = DhcpMessage(
        op=BOOTREPLY, chaddr=decoded.chaddr, options={53: b"\x05", 201: V250, 202: V100, 203: V40}
    )
    raw = encode(fresh)
    assert raw.hex() == hexed
    assert len(raw) <= 576 - 28


# -- decode details ----------------------------------------------------------------------


def test_repeated_options_concatenate_in_order_across_areas() -> None:
    raw = bytes.fromhex(
        hdr(sname="cb01cc" + "ff", file="cb01bb" + "00" + "cb01bc" + "ff")
        + "350101" + "cb01aa" + "340103" + "cb01ab" + "ff"
    )  # fmt: skip
    msg = decode(raw)
    assert msg.options[203] == bytes.fromhex("aaabbbbccc")
    assert list(msg.options) == [53, 203, 52]
    assert msg.options[OPT_OVERLOAD] == b"\x03"


def test_file_only_overload_leaves_sname_alone() -> None:
    raw = bytes.fromhex(hdr(sname="cb01cc", file="cb01bb") + "340101" + "ff")
    msg = decode(raw)
    assert msg.options[203] == b"\xbb"
    assert msg.sname[:3] == bytes.fromhex("cb01cc")


def test_missing_end_is_tolerated_and_bytes_after_end_ignored() -> None:
    no_end = bytes.fromhex(hdr() + "350101" + "0000" + "0c0161")
    assert decode(no_end).options == {53: b"\x01", 12: b"a"}
    trailing = bytes.fromhex(hdr() + "350101" + "ff" + "0c05" + "deadbeef")
    assert decode(trailing).options == {53: b"\x01"}


def test_zero_length_options_and_unusual_header_values_are_kept() -> None:
    raw = bytes.fromhex(hdr(op="07", htype_hlen="ff20") + "5000" + "ff")
    msg = decode(raw)
    assert msg.options == {80: b""}
    assert (msg.op, msg.htype, msg.hlen) == (7, 255, 32)
    assert msg.hwaddr == msg.chaddr


def test_decode_accepts_bytearray_and_memoryview() -> None:
    raw = bytes.fromhex(TABLE[0][2])
    assert decode(bytearray(raw)) == decode(memoryview(raw)) == TABLE[0][1]


def test_typed_properties_on_a_decoded_request() -> None:
    raw = bytes.fromhex(
        hdr() + "350103" + "3204c0000278" + "3604c0000201" + "3d0701020000000c01"
        + "39020240" + "0c0568656c6c6f" + "ff"
    )  # fmt: skip
    msg = decode(raw)
    assert msg.message_type is MessageType.REQUEST
    assert msg.requested_ip == A("192.0.2.120")
    assert msg.server_id == A("192.0.2.1")
    assert msg.client_id == bytes.fromhex("01020000000c01")
    assert msg.max_message_size == 576
    assert msg.hostname == "hello"
    assert msg.hwaddr == bytes.fromhex("020000000c01")


# -- encode details ----------------------------------------------------------------------


def test_message_type_goes_first_and_order_is_kept() -> None:
    msg = DhcpMessage(options={12: b"a", 61: b"\x01\x02", 53: b"\x03", 55: b"\x01"})
    raw = encode(msg)
    assert raw[240:].startswith(bytes.fromhex("350103" "0c0161" "3d020102" "370101" "ff"))
    assert len(raw) == 300
    assert raw[254:] == bytes(46)


def test_large_messages_are_not_padded() -> None:
    msg = DhcpMessage(options={53: b"\x05", 43: b"v" * 200})
    assert len(encode(msg)) == 240 + 3 + 202 + 1


def test_max_size_below_576_is_raised_to_576() -> None:
    msg = DhcpMessage(options={53: b"\x05", 43: b"v" * 250, 60: b"w" * 40})
    small = encode(msg, max_size=300)
    assert small == encode(msg, max_size=576)
    assert decode(small).options == msg.options  # fits without overload at 576


def test_max_size_decides_when_overload_starts() -> None:
    msg = DhcpMessage(options={53: b"\x05", 43: b"v" * 250, 60: b"w" * 250})
    big = encode(msg, max_size=1500)
    assert OPT_OVERLOAD not in decode(big).options
    assert len(big) == 240 + 3 + 252 + 252 + 1
    with pytest.raises(ValueError, match="even with overload"):
        encode(msg, max_size=576)  # 505 bytes: file and sname give only 190 more
    smaller = DhcpMessage(options={53: b"\x05", 43: b"v" * 250, 60: b"w" * 100})
    raw = encode(smaller, max_size=576)
    assert len(raw) <= 548
    d = decode(raw)
    assert d.options[OPT_OVERLOAD] == b"\x01"
    assert d.file[:2] == b"\x3c\x64"
    assert d.sname == bytes(64)
    assert {k: v for k, v in d.options.items() if k != OPT_OVERLOAD} == smaller.options


def test_overload_uses_only_free_fields() -> None:
    opts = {53: b"\x05", 43: b"v" * 250, 60: b"w" * 51}
    msg = DhcpMessage(file=b"pxelinux.0".ljust(128, b"\x00"), options=opts)
    d = decode(encode(msg))
    assert d.options[OPT_OVERLOAD] == b"\x02"
    assert d.file == msg.file
    both_used = DhcpMessage(file=msg.file, sname=b"s".ljust(64, b"\x00"), options=opts)
    with pytest.raises(ValueError, match="no room to overload"):
        encode(both_used)


def test_a_long_option_is_split_across_overload_areas() -> None:
    value = bytes(i % 256 for i in range(420))
    raw = encode(DhcpMessage(options={53: b"\x05", 120: value}))
    # options field: 53, 52, 255 bytes, then the 42 bytes that fill it; the rest in file.
    assert raw[236:].hex() == (
        COOKIE + "350105" + "340101" + "78ff" + value[:255].hex() + "782a"
        + value[255:297].hex() + "ff"
    )  # fmt: skip
    assert raw[108:236].hex() == ("787b" + value[297:].hex() + "ff").ljust(256, "0")
    d = decode(raw)
    assert d.options[120] == value
    assert len(raw) == 548


def test_fields_named_by_option_52_are_cleared_when_options_fit_again() -> None:
    msg = DhcpMessage(
        file=b"\x0c\x01a\xff".ljust(128, b"\x00"), options={53: b"\x05", 52: b"\x01", 12: b"a"}
    )
    d = decode(encode(msg))
    assert d.file == bytes(128)
    assert d.options == {53: b"\x05", 12: b"a"}


@pytest.mark.parametrize(
    ("msg", "match"),
    [
        (DhcpMessage(options={0: b""}), "code 0"),
        (DhcpMessage(options={255: b""}), "code 255"),
        (DhcpMessage(options={256: b""}), "code 256"),
        (DhcpMessage(chaddr=bytes(17)), "chaddr"),
        (DhcpMessage(sname=bytes(65)), "sname"),
        (DhcpMessage(file=bytes(129)), "file"),
        (DhcpMessage(xid=2**32), "out of range"),
        (DhcpMessage(op=256), "out of range"),
    ],
)
def test_encode_rejects_programming_errors(msg: DhcpMessage, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        encode(msg)


def test_short_fixed_fields_are_zero_padded() -> None:
    d = decode(encode(DhcpMessage(chaddr=b"\x01\x02", sname=b"s", file=b"f")))
    assert (d.chaddr, d.sname, d.file) == (
        b"\x01\x02" + bytes(14), b"s" + bytes(63), b"f" + bytes(127)
    )


# -- hypothesis: whole-message round trips -----------------------------------------------

ips = st.integers(0, 2**32 - 1).map(A)
u8 = st.integers(0, 255)
option_codes = st.integers(1, 254).filter(lambda c: c != OPT_OVERLOAD)
zero_or = lambda n: st.just(bytes(n)) | st.binary(min_size=n, max_size=n)  # noqa: E731

messages = st.builds(
    DhcpMessage,
    op=u8, htype=u8, hlen=u8, hops=u8,
    xid=st.integers(0, 2**32 - 1), secs=st.integers(0, 65535), flags=st.integers(0, 65535),
    ciaddr=ips, yiaddr=ips, siaddr=ips, giaddr=ips,
    chaddr=st.binary(min_size=16, max_size=16), sname=zero_or(64), file=zero_or(128),
    options=st.dictionaries(
        option_codes, st.binary(max_size=80) | st.binary(max_size=400), max_size=10
    ),
)  # fmt: skip


def _without_52(options: dict[int, bytes]) -> dict[int, bytes]:
    return {k: v for k, v in options.items() if k != OPT_OVERLOAD}


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages, st.sampled_from([576, 1500]))
def test_round_trip_whole_messages(msg: DhcpMessage, max_size: int) -> None:
    try:
        raw = encode(msg, max_size)
    except ValueError:
        assume(False)
        return
    assert 300 <= len(raw) <= max_size - 28
    d = decode(raw)
    if OPT_OVERLOAD not in d.options:
        assert d == msg
    else:
        flags = d.options[OPT_OVERLOAD][0]
        assert _without_52(d.options) == msg.options
        # Only all-zero fields may carry options; the others are kept as they were.
        if flags & 1:
            assert msg.file == bytes(128)
        else:
            assert d.file == msg.file
        if flags & 2:
            assert msg.sname == bytes(64)
        else:
            assert d.sname == msg.sname
        assert (d.op, d.xid, d.chaddr, d.giaddr) == (msg.op, msg.xid, msg.chaddr, msg.giaddr)
    assert encode(d, max_size) == raw  # encoding is a function of the decoded value


# -- malformed input: DecodeError and nothing else ---------------------------------------

MALFORMED: list[tuple[str, bytes]] = [
    ("empty", b""),
    ("one byte short of header+cookie", bytes.fromhex(hdr())[:-1]),
    ("bad cookie", bytes.fromhex(hdr()[:-8] + "63825364" + "ff")),
    ("BOOTP vendor field without cookie", bytes.fromhex(hdr()[:-8]) + bytes(64)),
    ("option length past the end", bytes.fromhex(hdr() + "350101" + "0c05616263")),
    ("option code without a length", bytes.fromhex(hdr() + "350101" + "0c")),
    ("overload value 0", bytes.fromhex(hdr() + "340100ff")),
    ("overload value 4", bytes.fromhex(hdr() + "340104ff")),
    ("overload of two bytes", bytes.fromhex(hdr() + "34020101ff")),
    ("option running out of the file field", bytes.fromhex(hdr(file="00" * 126 + "0c05")
                                                           + "340101ff")),
    ("option running out of the sname field", bytes.fromhex(hdr(sname="00" * 63 + "0c")
                                                            + "340102ff")),
]  # fmt: skip


@pytest.mark.parametrize(("name", "raw"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_raise_decode_error(name: str, raw: bytes) -> None:
    with pytest.raises(DecodeError):
        decode(raw)


@pytest.mark.parametrize("junk", [None, "text", 3.5, [1, 2]])
def test_non_bytes_raise_decode_error(junk: Any) -> None:
    with pytest.raises(DecodeError):
        decode(junk)


def _decode_or_decode_error(raw: bytes) -> DhcpMessage | None:
    try:
        return decode(raw)
    except DecodeError:
        return None


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=700))
def test_random_bytes(raw: bytes) -> None:
    _decode_or_decode_error(raw)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400), st.sampled_from([0, 1, 2, 3]))
def test_random_options_after_a_valid_header(tail: bytes, overload: int) -> None:
    head = hdr(sname="03" * 64 if overload & 2 else "", file="0c" * 128 if overload & 1 else "")
    raw = bytes.fromhex(head) + (bytes((52, 1, overload)) if overload else b"") + tail
    msg = _decode_or_decode_error(raw)
    if msg is not None:
        assert all(0 < code < 255 for code in msg.options)


VALID = [bytes.fromhex(t[2]) for t in TABLE]


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(VALID), st.data())
def test_mutations_of_valid_messages(raw: bytes, data: st.DataObject) -> None:
    mutated = bytearray(raw)
    for _ in range(data.draw(st.integers(1, 4))):
        kind = data.draw(st.sampled_from(["truncate", "flip", "length", "insert"]))
        if not mutated:
            break
        at = data.draw(st.integers(0, len(mutated) - 1))
        if kind == "truncate":
            del mutated[at:]
        elif kind == "flip":
            mutated[at] ^= data.draw(st.integers(1, 255))
        elif kind == "length":  # point somewhere in the options and write a large length
            at = data.draw(st.integers(min(240, len(mutated) - 1), len(mutated) - 1))
            mutated[at] = data.draw(st.sampled_from([0xFF, 0xFE, 0x80, len(mutated) % 256]))
        else:
            mutated[at:at] = data.draw(st.binary(min_size=1, max_size=4))
    _decode_or_decode_error(bytes(mutated))


# -- scapy as an independent oracle ------------------------------------------------------

# code -> (scapy name, kind). Kinds say how scapy represents the value.
SCAPY: dict[int, tuple[str, str]] = {
    1: ("subnet_mask", "ips"),
    2: ("time_zone", "int"),
    3: ("router", "ips"),
    6: ("name_server", "ips"),
    12: ("hostname", "bytes"),
    15: ("domain", "bytes"),
    23: ("default_ttl", "int"),
    26: ("interface-mtu", "int"),
    42: ("NTP_server", "ips"),
    51: ("lease_time", "int"),
    53: ("message-type", "int"),
    54: ("server_id", "ips"),
    55: ("param_req_list", "list"),
    57: ("max_dhcp_size", "int"),
    58: ("renewal_time", "int"),
    59: ("rebinding_time", "int"),
    61: ("client_id", "bytes"),
    121: ("classless_static_routes", "routes"),
    224: ("", "bytes"),  # unknown to scapy: it uses the number
}
SCAPY_NAME_TO_CODE = {name: DHCPRevOptions[name][0] for name, _ in SCAPY.values() if name}


def _to_scapy(code: int, raw: bytes) -> tuple[Any, ...]:
    """Our typed view of ``raw`` written as scapy's option tuple."""
    name, kind = SCAPY[code]
    value = decode_value(code, raw)
    key: Any = name or code
    if kind == "ips":
        return (key, *(str(a) for a in (value if isinstance(value, list) else [value])))
    if kind == "int":
        return (key, int(value) % 2**32)  # scapy's IntField is unsigned, option 2 is not
    if kind == "list":
        return (key, list(value))
    if kind == "routes":
        return (key, [f"{n.network_address}/{n.prefixlen}:{r}" for n, r in value])
    return (key, raw)


def _from_scapy(opt: tuple[Any, ...]) -> tuple[int, object]:
    """scapy's option tuple as (code, our typed value)."""
    key, *args = opt
    code = key if isinstance(key, int) else SCAPY_NAME_TO_CODE[key]
    kind = SCAPY[code][1]
    if kind == "ips":
        addrs = [A(a) for a in args]
        return code, addrs if code in (3, 6, 42) else addrs[0]
    if kind == "int":
        value = args[0]
        if code == 2:  # a signed 32-bit offset in an unsigned scapy field
            value = struct.unpack("!i", struct.pack("!I", value))[0]
        return code, value
    if kind == "list":
        return code, list(args[0])
    if kind == "routes":
        routes = []
        for text in args[0]:
            net, router = text.split(":")
            routes.append((N(net), A(router)))
        return code, routes
    return code, decode_value(code, b"".join(args))


def _scapy_options(pkt: Any) -> dict[int, object]:
    out: dict[int, object] = {}
    for opt in pkt[DHCP].options:
        if opt in ("pad", "end"):
            continue
        assert isinstance(opt, tuple), f"scapy could not parse the options: {opt!r}"
        code, value = _from_scapy(opt)
        assert code not in out
        out[code] = value
    return out


def _assert_same_header(pkt: Any, msg: DhcpMessage) -> None:
    assert (pkt.op, pkt.htype, pkt.hlen, pkt.hops) == (msg.op, msg.htype, msg.hlen, msg.hops)
    assert (pkt.xid, pkt.secs, int(pkt.flags)) == (msg.xid, msg.secs, msg.flags)
    assert [A(pkt.ciaddr), A(pkt.yiaddr), A(pkt.siaddr), A(pkt.giaddr)] == [
        msg.ciaddr, msg.yiaddr, msg.siaddr, msg.giaddr
    ]
    assert (pkt.chaddr, pkt.sname, pkt.file) == (msg.chaddr, msg.sname, msg.file)


header_fields = st.fixed_dictionaries(
    {
        "op": st.sampled_from([1, 2]), "hops": st.integers(0, 16),
        "xid": st.integers(0, 2**32 - 1), "secs": st.integers(0, 65535),
        "flags": st.sampled_from([0, 0x8000]),
        "ciaddr": ips, "yiaddr": ips, "siaddr": ips, "giaddr": ips,
        "chaddr": st.binary(min_size=6, max_size=6).map(lambda b: b + bytes(10)),
        "sname": st.binary(max_size=20).map(lambda b: b.ljust(64, b"\x00")),
        "file": st.binary(max_size=40).map(lambda b: b.ljust(128, b"\x00")),
    }
)  # fmt: skip

typed_values: dict[int, st.SearchStrategy[Any]] = {
    1: ips, 2: st.integers(-(2**31), 2**31 - 1), 3: st.lists(ips, min_size=1, max_size=8),
    6: st.lists(ips, min_size=1, max_size=8), 12: st.text("abcxyz-09", min_size=1, max_size=30),
    15: st.text("abc.xyz", min_size=1, max_size=30), 23: u8, 26: st.integers(68, 65535),
    42: st.lists(ips, min_size=1, max_size=4), 51: st.integers(0, 2**32 - 1),
    53: st.integers(1, 8).map(MessageType), 54: ips,
    55: st.lists(st.integers(1, 254), min_size=1, max_size=30),
    57: st.integers(576, 65535), 58: st.integers(0, 2**32 - 1), 59: st.integers(0, 2**32 - 1),
    61: st.builds(ClientId, u8, st.binary(min_size=1, max_size=20)),
    121: st.lists(
        st.tuples(st.integers(0, 32), st.integers(0, 2**32 - 1), ips).map(
            lambda t: (N((t[1] & ((0xFFFFFFFF << (32 - t[0])) & 0xFFFFFFFF), t[0])), t[2])
        ),
        min_size=1, max_size=5,
    ),
    224: st.binary(max_size=50),
}  # fmt: skip

scapy_options = st.lists(st.sampled_from(sorted(typed_values)), unique=True, max_size=10).flatmap(
    lambda codes: st.fixed_dictionaries(
        {c: typed_values[c].map(lambda v, c=c: encode_value(c, v)) for c in codes}
    )
)


def _scapy_build(fields: dict[str, Any], options: dict[int, bytes]) -> bytes:
    scapy_fields = {k: (str(v) if isinstance(v, A) else v) for k, v in fields.items()}
    opts = [_to_scapy(code, raw) for code, raw in options.items()]
    return bytes(BOOTP(**scapy_fields) / DHCP(options=[*opts, "end"]))


FIXED_SCAPY: list[tuple[dict[str, Any], dict[int, bytes]]] = [
    (
        {"xid": 0xDEADBEEF, "flags": 0x8000, "chaddr": bytes.fromhex(CHADDR)},
        {53: b"\x01", 55: bytes([1, 3, 6, 15, 119, 121]), 12: b"dhclient-host",
         61: bytes.fromhex("01020000000c01"), 57: b"\x05\xc0"},
    ),
    (
        {"op": 2, "xid": 1, "yiaddr": A("192.0.2.50"), "siaddr": A("192.0.2.1"),
         "giaddr": A("198.51.100.1"), "hops": 1, "chaddr": bytes.fromhex(CHADDR),
         "file": b"pxelinux.0".ljust(128, b"\x00")},
        {53: b"\x05", 54: A("192.0.2.1").packed, 51: (86400).to_bytes(4, "big"),
         1: A("255.255.255.0").packed, 3: A("192.0.2.1").packed + A("192.0.2.2").packed,
         6: A("192.0.2.53").packed, 15: b"example.net", 2: struct.pack("!i", -3600),
         121: encode_value(121, [(N("198.51.100.0/24"), A("192.0.2.1")),
                                 (N("0.0.0.0/0"), A("192.0.2.1"))]),
         224: b"\x00\x01\x02"},
    ),
]  # fmt: skip


def _check_scapy_to_us(fields: dict[str, Any], options: dict[int, bytes]) -> None:
    raw = _scapy_build(fields, options)
    msg = decode(raw)
    expected = DhcpMessage(**fields, options=options)
    _assert_same_header(BOOTP(raw), expected)  # scapy reads back what it was given
    assert msg == expected


def _check_us_to_scapy(fields: dict[str, Any], options: dict[int, bytes]) -> None:
    msg = DhcpMessage(**fields, options=options)
    pkt = BOOTP(encode(msg))
    _assert_same_header(pkt, msg)
    assert _scapy_options(pkt) == {c: decode_value(c, raw) for c, raw in options.items()}


@pytest.mark.parametrize("case", FIXED_SCAPY)
def test_scapy_built_packets_decode_the_same(case: tuple[dict[str, Any], dict[int, bytes]]) -> None:
    _check_scapy_to_us(*case)


@pytest.mark.parametrize("case", FIXED_SCAPY)
def test_scapy_parses_what_we_encode(case: tuple[dict[str, Any], dict[int, bytes]]) -> None:
    _check_us_to_scapy(*case)


@settings(max_examples=60, deadline=None)
@given(header_fields, scapy_options)
def test_scapy_oracle_both_ways_generated(fields: dict[str, Any], opts: dict[int, bytes]) -> None:
    _check_scapy_to_us(fields, opts)
    _check_us_to_scapy(fields, opts)


def test_scapy_repeated_options_are_concatenated() -> None:
    raw = bytes(
        BOOTP(chaddr=bytes.fromhex(CHADDR))
        / DHCP(options=[("router", "192.0.2.1"), ("hostname", b"ab"), ("router", "192.0.2.2"),
                        "end"])
    )  # fmt: skip
    msg = decode(raw)
    assert decode_value(3, msg.options[3]) == [A("192.0.2.1"), A("192.0.2.2")]


def test_scapy_reads_our_overloaded_areas() -> None:
    _, msg, _ = TABLE[-1]
    pkt = BOOTP(encode(msg))
    assert ("dhcp-option-overload", 3) in pkt[DHCP].options
    seen: dict[int, bytes] = {}
    for area in (pkt[DHCP].options, DHCP(pkt.file).options, DHCP(pkt.sname).options):
        for opt in area:
            if isinstance(opt, tuple) and isinstance(opt[0], int):
                seen[opt[0]] = seen.get(opt[0], b"") + opt[1]
    assert seen == {201: V250, 202: V100, 203: V40}


# -- real traffic ------------------------------------------------------------------------


@cache
def _payloads(path: Path) -> list[bytes]:
    """UDP payloads between ports 67/68 in one capture (Ethernet + IPv4)."""
    out = []
    with RawPcapNgReader(str(path)) as reader:
        for frame, _meta in reader:
            if frame[12:14] != b"\x08\x00" or frame[23] != 17:
                continue
            ihl = (frame[14] & 0x0F) * 4
            sport, dport, length = struct.unpack_from("!HHH", frame, 14 + ihl)
            if {sport, dport} <= {67, 68}:
                out.append(bytes(frame[14 + ihl + 8 : 14 + ihl + length]))
    return out


def _captured() -> list[bytes]:
    return [d for path in sorted(CAPTURES.glob("*.pcapng")) for d in _payloads(path)]


@pytest.mark.skipif(not CAPTURES.is_dir(), reason="no captures in /work/shared/captures")
def test_real_captures_decode_and_reencode() -> None:
    datagrams = _captured()
    assert len(datagrams) > 300
    kinds: set[object] = set()
    for raw in datagrams:
        msg = decode(raw)
        again = decode(encode(msg))
        assert again == msg
        for code, value in msg.options.items():
            assert decode_value(code, again.options[code]) == decode_value(code, value)
        kinds.add(msg.message_type)
    assert {MessageType.DISCOVER, MessageType.OFFER, MessageType.REQUEST, MessageType.ACK} <= kinds


@pytest.mark.skipif(not CAPTURES.is_dir(), reason="no captures in /work/shared/captures")
def test_real_captures_agree_with_scapy() -> None:
    for raw in _captured()[::4]:
        msg = decode(raw)
        pkt = BOOTP(raw)
        _assert_same_header(pkt, msg)
        raw_opts: dict[int, bytes] = {}
        for opt in pkt[DHCP].options:
            if isinstance(opt, tuple):
                tlv = DHCP(options=[opt]).build()  # scapy's own bytes for its parsed option
                raw_opts[tlv[0]] = raw_opts.get(tlv[0], b"") + tlv[2 : 2 + tlv[1]]
        assert raw_opts == msg.options


def test_udp_frame_filter_sees_ether_udp() -> None:
    """The capture reader above is hand-written: check it against scapy's dissector."""
    if not CAPTURES.is_dir():
        pytest.skip("no captures")
    path = sorted(CAPTURES.glob("*.pcapng"))[0]
    with RawPcapNgReader(str(path)) as reader:
        frames = [f for f, _ in reader]
    pkts = [Ether(f) for f in frames]
    by_scapy = [
        bytes(p[UDP].payload) for p in pkts if UDP in p and {p[UDP].sport, p[UDP].dport} <= {67, 68}
    ]
    assert len(by_scapy) > 10
    assert _payloads(path) == by_scapy


@given(st.integers(min_value=0, max_value=2**32 - 1))
def test_ip_int_equals_int(value: int) -> None:
    # ip_int reads the int an IPv4Address keeps (the hot path's int()), for every address
    address = A(value)
    assert ip_int(address) == int(address) == value
    assert type(ip_int(address)) is int
