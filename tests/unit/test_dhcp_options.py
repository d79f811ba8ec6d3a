"""Option registry: one table of (code, value, hex) run both ways per layout family,
hypothesis round-trips per family, malformed values -> DecodeError only, config parsing."""

from __future__ import annotations

from ipaddress import IPv4Address as A
from ipaddress import IPv4Network as N
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tandem.errors import DecodeError
from tandem.wire.dhcp import MessageType
from tandem.wire.dhcp_options import (
    FAMILIES,
    OPTIONS,
    RAI_LINK_SELECTION,
    RAI_SERVER_ID_OVERRIDE,
    ClientId,
    decode_relay_agent_info,
    decode_value,
    encode_relay_agent_info,
    encode_value,
    option_name,
    parse_config_value,
    relay_suboption,
)

# -- (code, value, hex) both ways --------------------------------------------------------

TABLE: list[tuple[int, Any, str]] = [
    # ip
    (1, A("255.255.255.0"), "ffffff00"),
    (54, A("192.0.2.1"), "c0000201"),
    (118, A("198.51.100.0"), "c6336400"),
    # ip_list
    (3, [A("192.0.2.1")], "c0000201"),
    (6, [A("192.0.2.53"), A("198.51.100.53")], "c0000235c6336435"),
    (150, [A("203.0.113.7")], "cb007107"),
    (68, [], ""),
    # ip_pairs
    (33, [(A("198.51.100.0"), A("192.0.2.1"))], "c6336400c0000201"),
    (
        21,
        [(A("192.0.2.0"), A("255.255.255.0")), (A("203.0.113.0"), A("255.255.255.128"))],
        "c0000200ffffff00cb007100ffffff80",
    ),
    # u8 / u16 / u32 / i32
    (23, 64, "40"),
    (46, 8, "08"),
    (26, 1500, "05dc"),
    (57, 576, "0240"),
    (51, 3600, "00000e10"),
    (58, 0xFFFFFFFF, "ffffffff"),
    (2, -3600, "fffff1f0"),
    (2, 3600, "00000e10"),
    # bool
    (19, True, "01"),
    (39, False, "00"),
    # string (UTF-8; undecodable bytes survive as surrogate escapes)
    (15, "example.net", "6578616d706c652e6e6574"),
    (12, "h\u00e9", "68c3a9"),
    (12, "a\udcff", "61ff"),
    (60, "udhcp 1.35.0", "756468637020312e33352e30"),
    # bytes
    (43, b"\x01\x02\xff", "0102ff"),
    (81, b"\x00\x00\x00host", "000000686f7374"),
    (97, b"\x00" + bytes(range(16)), "00" + bytes(range(16)).hex()),
    # u8_list / u16_list
    (55, [1, 3, 6, 15, 119, 121], "0103060f7779"),
    (94, [1, 2, 1], "010201"),
    (25, [68, 296, 1500], "0044012805dc"),
    (93, [0, 7], "00000007"),
    # client_id
    (61, ClientId(1, bytes.fromhex("020000000c02")), "01020000000c02"),
    (61, ClientId(255, b"\x00\x00\x00\x01\x00\x01"), "ff000000010001"),
    # relay_agent_info (sub-options in order, repeats and unknown ones kept)
    (
        82,
        [(1, b"eth0"), (2, bytes.fromhex("001122334455")), (5, A("192.0.2.0").packed),
         (11, A("192.0.2.1").packed), (151, b"\x00vpn"), (1, b"")],
        "010465746830" "0206001122334455" "0504c0000200" "0b04c0000201" "97040076706e" "0100",
    ),
    # domain_search: the RFC 3397 section 2 example, a root name, a single name
    (
        119,
        ["eng.apple.com", "marketing.apple.com"],
        "03656e67056170706c6503636f6d00" "096d61726b6574696e67c004",
    ),
    (119, ["."], "00"),
    (119, ["example.net", "example.net"], "076578616d706c65036e657400c000"),
    # classless_static_route: the RFC 3442 examples
    (
        121,
        [
            (N("0.0.0.0/0"), A("192.0.2.1")),
            (N("10.0.0.0/8"), A("192.0.2.2")),
            (N("10.17.0.0/16"), A("192.0.2.3")),
            (N("10.27.129.0/24"), A("192.0.2.4")),
            (N("10.229.0.128/25"), A("192.0.2.5")),
            (N("10.198.122.47/32"), A("192.0.2.6")),
        ],
        "00c0000201" "080ac0000202" "100a11c0000203" "180a1b81c0000204" "190ae50080c0000205"
        "200ac67a2fc0000206",
    ),
    (249, [(N("198.51.100.0/24"), A("192.0.2.1"))], "18c63364c0000201"),
    # message_type / overload
    (53, MessageType.ACK, "05"),
    (53, 13, "0d"),  # DHCPLEASEACTIVE: not in the enum, kept as an int
    (52, 3, "03"),
    # unknown codes are raw bytes
    (224, b"\x00\x01", "0001"),
    (80, b"", ""),
]


@pytest.mark.parametrize(("code", "value", "hexed"), TABLE)
def test_decode_table(code: int, value: Any, hexed: str) -> None:
    decoded = decode_value(code, bytes.fromhex(hexed))
    assert decoded == value
    assert type(decoded) is type(value) or isinstance(value, int)


@pytest.mark.parametrize(("code", "value", "hexed"), TABLE)
def test_encode_table(code: int, value: Any, hexed: str) -> None:
    assert encode_value(code, value).hex() == bytes.fromhex(hexed).hex()


def test_domain_search_decodes_any_backward_pointer() -> None:
    # "b.example" then a pointer into the middle of the first name ("example").
    raw = bytes.fromhex("0162076578616d706c6500" "0161c002")
    assert decode_value(119, raw) == ["b.example", "a.example"]
    # A pointer to a pointer is followed too.
    raw2 = raw + bytes.fromhex("c00b")
    assert decode_value(119, raw2) == ["b.example", "a.example", "a.example"]


# -- the registry covers what the brief lists --------------------------------------------

REQUIRED = [*range(1, 78), 81, 82, 90, 93, 94, 97, 118, 119, 121, 150, 249]
FAMILY_OF = {
    1: "ip", 2: "i32", 3: "ip_list", 12: "string", 13: "u16", 19: "bool", 21: "ip_pairs",
    23: "u8", 25: "u16_list", 33: "ip_pairs", 43: "bytes", 50: "ip", 51: "u32",
    52: "overload", 53: "message_type", 54: "ip", 55: "u8_list", 57: "u16", 61: "client_id",
    68: "ip_list", 81: "bytes", 82: "relay_agent_info", 118: "ip", 119: "domain_search",
    121: "classless_static_route", 150: "ip_list", 249: "classless_static_route",
}  # fmt: skip


def test_registry_covers_the_required_codes() -> None:
    missing = [c for c in REQUIRED if c not in OPTIONS]
    assert missing == []
    for code, d in OPTIONS.items():
        assert d.code == code
        assert d.family.name in FAMILIES
    assert {c: OPTIONS[c].family.name for c in FAMILY_OF} == FAMILY_OF
    assert option_name(6) == "domain-name-servers"
    assert option_name(224) == "option-224"


# -- malformed raw values -> DecodeError -------------------------------------------------

BAD: list[tuple[int, str]] = [
    (1, ""), (1, "c00002"), (54, "c000020101"),
    (3, ""), (3, "c00002"), (68, "c0"),
    (33, "c6336400c00002"), (21, ""),
    (23, ""), (23, "0102"), (26, "05"), (51, "000e10"), (2, "0000000e10"),
    (19, "02"), (19, ""), (19, "0001"),
    (25, "004401"), (93, "00"),
    (61, ""), (61, "01"),
    (82, "01"), (82, "0105616263"), (82, "010265746830"),
    (119, "03656e67"),  # label runs past the end
    (119, "03656e67056170706c65"),  # no terminating zero
    (119, "c000"),  # pointer to itself
    (119, "0161c004" "0162c000"),  # forward pointer
    (119, "c0"),  # truncated pointer
    (119, "4161"),  # reserved label type 01
    (119, "03612e6200"),  # a dot inside a label
    (119, "3f" + "61" * 63 + "3f" + "61" * 63 + "3f" + "61" * 63 + "3f" + "61" * 63 + "00"),
    (121, ""), (121, "21c0000201"), (121, "18c63364c00002"), (121, "18c63364"),
    (121, "190ae50081c0000201"),  # host bits set beyond /25
    (249, "20c0000201"),
    (53, ""), (53, "0101"),
    (52, "00"), (52, "04"), (52, "0101"),
]  # fmt: skip


@pytest.mark.parametrize(("code", "hexed"), BAD)
def test_malformed_values_raise_decode_error(code: int, hexed: str) -> None:
    with pytest.raises(DecodeError):
        decode_value(code, bytes.fromhex(hexed))


@settings(max_examples=300, deadline=None)
@given(code=st.sampled_from(sorted(OPTIONS)), raw=st.binary(max_size=300))
def test_random_values_decode_or_raise_decode_error_only(code: int, raw: bytes) -> None:
    try:
        value = decode_value(code, raw)
    except DecodeError:
        return
    if OPTIONS[code].family.name == "domain_search":
        # Re-encoding may compress differently; the names must survive.
        assert decode_value(code, encode_value(code, value)) == value
    else:
        assert encode_value(code, value) == raw


# -- hypothesis round-trip per family ----------------------------------------------------

ips = st.integers(0, 2**32 - 1).map(A)
label = st.text("abcxyzAB09-", min_size=1, max_size=12)
names = st.lists(st.sampled_from(["a", "b", "example", "net"]) | label, min_size=1, max_size=4)


def _network(width: int, addr: int) -> N:
    mask = (0xFFFFFFFF << (32 - width)) & 0xFFFFFFFF
    return N((addr & mask, width))


STRATEGIES: dict[str, st.SearchStrategy[Any]] = {
    "ip": ips,
    "ip_list": st.lists(ips, min_size=1, max_size=20),
    "ip_pairs": st.lists(st.tuples(ips, ips), min_size=1, max_size=10),
    "u8": st.integers(0, 255),
    "u16": st.integers(0, 65535),
    "u32": st.integers(0, 2**32 - 1),
    "i32": st.integers(-(2**31), 2**31 - 1),
    "bool": st.booleans(),
    "string": st.text(st.characters(exclude_categories=["Cs"]), max_size=40)
    | st.binary(max_size=40).map(lambda b: b.decode("utf-8", "surrogateescape")),
    "bytes": st.binary(max_size=300),
    "u8_list": st.lists(st.integers(0, 255), max_size=40),
    "u16_list": st.lists(st.integers(0, 65535), max_size=40),
    "client_id": st.builds(ClientId, st.integers(0, 255), st.binary(min_size=1, max_size=40)),
    "relay_agent_info": st.lists(
        st.tuples(st.integers(0, 255), st.binary(max_size=255)), max_size=6
    ),
    "domain_search": st.lists(names.map(".".join), min_size=1, max_size=8),
    "classless_static_route": st.lists(
        st.builds(_network, st.integers(0, 32), st.integers(0, 2**32 - 1)).flatmap(
            lambda net: st.tuples(st.just(net), ips)
        ),
        min_size=1,
        max_size=10,
    ),
    "message_type": st.integers(1, 255),
    "overload": st.integers(1, 3),
}


def test_every_family_has_a_strategy() -> None:
    assert set(STRATEGIES) == set(FAMILIES)


@settings(max_examples=400, deadline=None)
@given(st.data())
def test_round_trip_per_family(data: st.DataObject) -> None:
    code = data.draw(st.sampled_from(sorted(OPTIONS)))
    family = OPTIONS[code].family.name
    value = data.draw(STRATEGIES[family])
    if code == 68:  # the one list that may be empty
        value = data.draw(st.lists(ips, max_size=3))
    raw = encode_value(code, value)
    assert decode_value(code, raw) == value
    assert encode_value(code, decode_value(code, raw)) == raw


# -- encode errors -----------------------------------------------------------------------

ENCODE_BAD: list[tuple[int, Any, type[Exception]]] = [
    (23, 256, ValueError), (23, -1, ValueError), (26, 65536, ValueError),
    (2, 2**31, ValueError), (51, -1, ValueError), (51, "3600", TypeError),
    (3, [], ValueError), (19, 2, ValueError), (52, 4, ValueError),
    (61, ClientId(1, b""), ValueError), (82, [(1, b"x" * 256)], ValueError),
    (82, [(256, b"")], ValueError), (119, ["a..b"], ValueError),
    (119, ["x" * 64], ValueError), (121, [], ValueError), (55, [256], ValueError),
    (224, "text", TypeError),
]  # fmt: skip


@pytest.mark.parametrize(("code", "value", "exc"), ENCODE_BAD)
def test_encode_rejects_bad_values(code: int, value: Any, exc: type[Exception]) -> None:
    with pytest.raises(exc):
        encode_value(code, value)


# -- relay agent information helpers -----------------------------------------------------


def test_relay_agent_info_helpers() -> None:
    subs = [(1, b"port7"), (RAI_LINK_SELECTION, A("198.51.100.0").packed), (152, b"")]
    raw = encode_relay_agent_info(subs)
    assert raw.hex() == "0105706f72743705" "04c6336400" "9800"
    assert decode_relay_agent_info(raw) == subs
    assert relay_suboption(subs, RAI_LINK_SELECTION) == A("198.51.100.0").packed
    assert relay_suboption(subs, RAI_SERVER_ID_OVERRIDE) is None
    assert decode_value(82, raw) == subs


# -- config values -----------------------------------------------------------------------

CONFIG: list[tuple[int, Any, str]] = [
    (42, ["192.0.2.1"], "c0000201"),
    (42, "192.0.2.1, 192.0.2.2", "c0000201c0000202"),
    (6, ["192.0.2.53", "198.51.100.53"], "c0000235c6336435"),
    (1, "255.255.255.0", "ffffff00"),
    (118, ["192.0.2.0"], "c0000200"),
    (15, "example.net", "6578616d706c652e6e6574"),
    (26, 1500, "05dc"),
    (26, "1500", "05dc"),
    (23, "0x40", "40"),
    (2, -3600, "fffff1f0"),
    (19, "true", "01"),
    (19, 0, "00"),
    (27, "off", "00"),
    (55, [str(c) for c in (1, 3, 6)], "010306"),
    (55, "1 3 6", "010306"),
    (25, "68,1500", "004405dc"),
    (33, ["198.51.100.0 192.0.2.1"], "c6336400c0000201"),
    (121, ["198.51.100.0/24 192.0.2.1"], "18c63364c0000201"),
    (121, ["0.0.0.0/0 192.0.2.1", "198.51.100.0/24,192.0.2.2"], "00c000020118c63364c0000202"),
    (119, ["eng.apple.com", "marketing.apple.com"],
     "03656e67056170706c6503636f6d00096d61726b6574696e67c004"),
    (119, "example.net", "076578616d706c65036e657400"),
    (43, "01:02:0a", "01020a"),
    (61, "01:00:11:22:33:44:55", "01001122334455"),
    (82, "0104706f7274", "0104706f7274"),
    (53, "ack", "05"),
]  # fmt: skip


@pytest.mark.parametrize(("code", "value", "hexed"), CONFIG)
def test_parse_config_value(code: int, value: Any, hexed: str) -> None:
    assert parse_config_value(code, value).hex() == hexed


CONFIG_BAD: list[tuple[int, Any, str]] = [
    (224, "x", "hex"),
    (42, ["192.0.2.300"], "not an IPv4 address"),
    (42, [], "at least 1"),
    (26, 70000, "out of range"),
    (26, "big", "expected an integer"),
    (19, "maybe", "true/false"),
    (15, ["a"], "expected text"),
    (15, "", "cannot be empty"),
    (121, ["198.51.100.1/24 192.0.2.1"], "host bits"),
    (121, ["198.51.100.0/24"], "NETWORK/PREFIX ROUTER"),
    (33, ["198.51.100.0"], "ADDRESS ADDRESS"),
    (43, "zz", "not hex"),
    (61, "01", "type byte and data"),
    (119, ["a..b"], "1 to 63"),
    (55, [256], "expected text items"),
    (55, ["256"], "out of range"),
    (1, ["192.0.2.1", "192.0.2.2"], "exactly one"),
]


@pytest.mark.parametrize(("code", "value", "needle"), CONFIG_BAD)
def test_parse_config_value_rejects_clearly(code: int, value: Any, needle: str) -> None:
    with pytest.raises(ValueError, match=needle) as info:
        parse_config_value(code, value)
    assert (OPTIONS[code].name if code in OPTIONS else f"option {code}") in str(info.value)
