"""The per-packet shortcuts of the DHCP codec give the same results as none: decoded
header addresses shared per value, and the option code/length table of encode()
(tests/unit/test_net_udp.py covers the transport's caches)."""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest

from tandem.wire.dhcp import ZERO_IP, DhcpMessage, decode, encode


def test_decoded_addresses_are_shared_and_equal_to_fresh_ones() -> None:
    gi = IPv4Address("192.0.2.1")
    wire = encode(DhcpMessage(giaddr=gi, ciaddr=IPv4Address("198.51.100.7"),
                              options={53: b"\x03"}))
    a, b = decode(wire), decode(wire)
    assert a.giaddr == gi and a.ciaddr == IPv4Address("198.51.100.7")
    assert a.giaddr is b.giaddr and a.ciaddr is b.ciaddr  # one object per value
    assert a.yiaddr is ZERO_IP and a.siaddr is ZERO_IP
    other = decode(encode(DhcpMessage(giaddr=IPv4Address("192.0.2.2"), options={53: b"\x03"})))
    assert other.giaddr == IPv4Address("192.0.2.2") != a.giaddr


def test_option_table_gives_plain_tlvs_and_still_refuses_bad_codes() -> None:
    opts = {53: b"\x05", 1: b"\xff\xff\xff\x00", 54: b"\xc0\x00\x02\x01", 200: b"", 12: b"h"}
    first = encode(DhcpMessage(op=2, options=dict(opts)))
    second = encode(DhcpMessage(op=2, options=dict(opts)))  # now from the table
    assert first == second
    start = 240
    assert first[start:start + 3] == b"\x35\x01\x05"  # 53 first
    assert first[start + 3:start + 24] == (  # the rest in insertion order, END, padding
        b"\x01\x04\xff\xff\xff\x00" b"\x36\x04\xc0\x00\x02\x01" b"\xc8\x00" b"\x0c\x01h" b"\xff"
        + b"\x00" * 3
    )
    assert decode(first).options == opts
    for bad in (0, 255, 256, -1):
        with pytest.raises(ValueError):
            encode(DhcpMessage(op=2, options={bad: b""}))
    with pytest.raises(ValueError):  # too long a chaddr is still refused
        encode(DhcpMessage(op=2, chaddr=b"\x01" * 17, options={1: b"\x00" * 4}))
