"""Link-layer replies: hand-built IPv4/UDP headers checked against scapy (independent
oracle), and (as root) a packet that really leaves a veth with the right destination MAC."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from ipaddress import IPv4Address

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scapy.layers.inet import IP, UDP  # type: ignore[import-untyped]

from tandem.net.rawsock import build_ipv4_udp, inet_checksum

SRC = IPv4Address("192.0.2.1")
DST = IPv4Address("192.0.2.77")


def test_rfc1071_example_checksum() -> None:
    # RFC 1071 §3: the words 0001 f203 f4f5 f6f7 sum to ddf2; the checksum is its complement.
    assert inet_checksum(bytes.fromhex("0001f203f4f5f6f7")) == 0xFFFF - 0xDDF2


def test_odd_length_is_padded_with_zero() -> None:
    assert inet_checksum(b"\x12\x34\x56") == inet_checksum(b"\x12\x34\x56\x00")


def test_header_fields_and_checksums_match_scapy() -> None:
    payload = bytes(range(256)) + b"DHCP" * 20 + b"x"  # odd length on purpose
    pkt = build_ipv4_udp(SRC, DST, 67, 68, payload, ident=0x1234, ttl=64)
    parsed = IP(pkt)
    assert parsed.version == 4 and parsed.ihl == 5
    assert parsed.len == len(pkt) == 20 + 8 + len(payload)
    assert parsed.id == 0x1234 and parsed.ttl == 64 and parsed.proto == 17
    assert parsed.flags == 0 and parsed.frag == 0
    assert parsed.src == str(SRC) and parsed.dst == str(DST)
    udp = parsed[UDP]
    assert (udp.sport, udp.dport, udp.len) == (67, 68, 8 + len(payload))
    assert bytes(udp.payload) == payload
    # scapy recomputes both checksums from scratch when they are deleted
    fresh = IP(pkt)
    del fresh.chksum
    del fresh[UDP].chksum
    rebuilt = IP(bytes(fresh))
    assert parsed.chksum == rebuilt.chksum
    assert udp.chksum == rebuilt[UDP].chksum
    assert udp.chksum != 0


def test_udp_checksum_of_zero_is_sent_as_all_ones() -> None:
    # Choose the first payload word so that the computed checksum is exactly zero.
    rest = b"tandem payload!!"
    probe = build_ipv4_udp(SRC, DST, 67, 68, b"\x00\x00" + rest)
    word = int.from_bytes(probe[26:28], "big")
    pkt = build_ipv4_udp(SRC, DST, 67, 68, word.to_bytes(2, "big") + rest)
    assert pkt[26:28] == b"\xff\xff"
    # and it still verifies: the sum over pseudo header + UDP is all ones
    fresh = IP(pkt)
    del fresh[UDP].chksum
    assert IP(bytes(fresh))[UDP].chksum in (0xFFFF, 0)


@given(
    src=st.integers(0, 2**32 - 1),
    dst=st.integers(0, 2**32 - 1),
    sport=st.integers(0, 65535),
    dport=st.integers(0, 65535),
    payload=st.binary(max_size=1400),
    ident=st.integers(0, 65535),
)
def test_checksums_verify_for_any_packet(
    src: int, dst: int, sport: int, dport: int, payload: bytes, ident: int
) -> None:
    pkt = build_ipv4_udp(IPv4Address(src), IPv4Address(dst), sport, dport, payload, ident=ident)
    assert inet_checksum(pkt[:20]) == 0  # a correct header sums to all ones
    pseudo = pkt[12:20] + b"\x00\x11" + (8 + len(payload)).to_bytes(2, "big")
    assert inet_checksum(pseudo + pkt[20:]) in (0, 0xFFFF)
    assert IP(pkt)[UDP].dport == dport


def test_rejects_oversized_payload() -> None:
    with pytest.raises(ValueError):
        build_ipv4_udp(SRC, DST, 67, 68, b"\x00" * 65536)


# -- root: a link-layer reply really leaves the interface with the client's MAC -------------

_CHILD = r"""
import json, socket
from ipaddress import IPv4Address
from tandem.dhcp.types import Reply
from tandem.net.udp import DhcpTransport
from tandem.wire.dhcp import DhcpMessage
rx = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0800))
rx.bind(("tdm-net-v1", 0))
rx.settimeout(5)
client_mac = bytes.fromhex("020000c0ff42")
out = {"src_mac": open("/sys/class/net/tdm-net-v0/address").read().strip()}
for raw in (True, False):
    t = DhcpTransport(interfaces=["tdm-net-v0"], listen_address=IPv4Address("0.0.0.0"),
                      port=67, raw_replies=raw)
    t.open()
    reply = Reply(DhcpMessage(), IPv4Address("192.0.2.42"), 68, interface="tdm-net-v0",
                  link_layer=True, hwaddr=client_mac)
    payload = b"hello-dhcp-client-" + str(raw).encode()
    assert t.send(reply, payload)
    while True:
        frame = rx.recv(2048)
        if frame[23] == 17 and frame[36:38] == b"\x00\x44" and frame.endswith(payload):
            break
    out[str(raw)] = {"frame": frame.hex(), "stats": dict(t.stats)}
    t.close()
print(json.dumps(out))
"""


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create network namespaces")
@pytest.mark.skipif(shutil.which("ip") is None, reason="needs iproute2")
def test_link_layer_reply_reaches_veth_peer_with_client_mac_else_broadcast() -> None:
    ns = f"tdm-net-{uuid.uuid4().hex[:8]}"
    _ip("netns", "add", ns)
    try:
        _ip("-n", ns, "link", "add", "tdm-net-v0", "type", "veth", "peer", "name", "tdm-net-v1")
        _ip("-n", ns, "addr", "add", "192.0.2.1/24", "dev", "tdm-net-v0")
        _ip("-n", ns, "link", "set", "tdm-net-v0", "up")
        _ip("-n", ns, "link", "set", "tdm-net-v1", "up")
        out = subprocess.run(
            ["ip", "netns", "exec", ns, sys.executable, "-c", _CHILD],
            check=True, capture_output=True, text=True, timeout=20,
        )
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False, capture_output=True)
    result = json.loads(out.stdout)
    src_mac = bytes.fromhex(result["src_mac"].replace(":", ""))

    raw = bytes.fromhex(result["True"]["frame"])
    assert raw[0:6] == bytes.fromhex("020000c0ff42")  # destination: the client's MAC
    assert raw[6:12] == src_mac
    assert raw[12:14] == b"\x08\x00"
    packet = IP(raw[14:])
    # source: the interface's address; destination: the offered address (no ARP)
    assert (packet.src, packet.dst) == ("192.0.2.1", "192.0.2.42")
    assert (packet[UDP].sport, packet[UDP].dport) == (67, 68)
    assert bytes(packet[UDP].payload) == b"hello-dhcp-client-True"
    assert result["True"]["stats"].get("tx_link_layer") == 1
    assert result["True"]["stats"].get("tx") == 1  # link-layer sends count as sent too

    # raw_replies = false: the same reply is broadcast instead
    bcast = bytes.fromhex(result["False"]["frame"])
    assert bcast[0:6] == b"\xff" * 6
    packet = IP(bcast[14:])
    assert packet.dst == "255.255.255.255"
    assert packet[UDP].dport == 68
    assert "tx_link_layer" not in result["False"]["stats"]
