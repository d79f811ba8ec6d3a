"""Link-layer delivery of replies to clients that have no address yet (RFC 2131 §4.1).

A client that has no IP address and did not set the broadcast flag expects its OFFER/ACK
unicast to ``yiaddr`` at its hardware address. The kernel would ARP for ``yiaddr`` (which
nobody answers yet), so the datagram is sent through an ``AF_PACKET``/``SOCK_DGRAM`` socket:
the kernel adds the Ethernet header for the hardware address we give, and we build the IPv4
and UDP headers by hand. Needs ``CAP_NET_RAW``; callers fall back to broadcast without it.
"""

from __future__ import annotations

import socket
import struct
import sys
from array import array
from ipaddress import IPv4Address

ETH_P_IP = 0x0800
IPPROTO_UDP = 17
DEFAULT_TTL = 64

_IP_HEADER = struct.Struct("!BBHHHBBH4s4s")
_UDP_HEADER = struct.Struct("!HHHH")
_PSEUDO = struct.Struct("!4s4sBBH")
_LITTLE = sys.byteorder == "little"


def inet_checksum(data: bytes) -> int:
    """RFC 1071 Internet checksum of ``data`` (the value to put in the header)."""
    if len(data) & 1:
        data += b"\x00"
    # The one's-complement sum is independent of byte order (RFC 1071 §2(B)): sum native
    # 16-bit words in C and swap the folded result on little-endian hosts.
    total = sum(array("H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    if _LITTLE:
        total = ((total & 0xFF) << 8) | (total >> 8)
    return ~total & 0xFFFF


def build_ipv4_udp(
    src_ip: IPv4Address,
    dst_ip: IPv4Address,
    src_port: int,
    dst_port: int,
    payload: bytes,
    *,
    ident: int = 0,
    ttl: int = DEFAULT_TTL,
) -> bytes:
    """An IPv4 packet (20-byte header, no options, DF clear) carrying one UDP datagram."""
    src = src_ip.packed
    dst = dst_ip.packed
    udp_len = 8 + len(payload)
    total_len = 20 + udp_len
    if total_len > 0xFFFF:
        raise ValueError("payload too large for one IPv4 packet")
    pseudo = _PSEUDO.pack(src, dst, 0, IPPROTO_UDP, udp_len)
    udp_csum = inet_checksum(
        pseudo + _UDP_HEADER.pack(src_port, dst_port, udp_len, 0) + payload
    )
    if udp_csum == 0:
        udp_csum = 0xFFFF  # RFC 768: a computed zero is sent as all ones
    ip_header = _IP_HEADER.pack(
        0x45, 0, total_len, ident & 0xFFFF, 0, ttl, IPPROTO_UDP, 0, src, dst
    )
    ip_csum = inet_checksum(ip_header)
    return (
        ip_header[:10]
        + struct.pack("!H", ip_csum)
        + ip_header[12:]
        + _UDP_HEADER.pack(src_port, dst_port, udp_len, udp_csum)
        + payload
    )


class PacketSender:
    """Sends IPv4 packets to a given hardware address on one interface."""

    def __init__(self, interface: str) -> None:
        self.interface = interface
        # Protocol 0: this socket receives nothing, it only sends.
        self._sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, 0)
        try:
            self._sock.setblocking(False)
            self._sock.bind((interface, 0))
        except OSError:
            self._sock.close()
            raise
        self._ident = 0

    def send(
        self,
        hwaddr: bytes,
        src_ip: IPv4Address,
        dst_ip: IPv4Address,
        src_port: int,
        dst_port: int,
        payload: bytes,
    ) -> None:
        """Build and send one IPv4/UDP packet; raises OSError from the kernel."""
        self._ident = (self._ident + 1) & 0xFFFF
        packet = build_ipv4_udp(src_ip, dst_ip, src_port, dst_port, payload, ident=self._ident)
        self._sock.sendto(packet, (self.interface, ETH_P_IP, 0, 0, hwaddr))

    def close(self) -> None:
        self._sock.close()


def open_packet_sender(interface: str) -> PacketSender:
    """Open a :class:`PacketSender`; raises ``PermissionError`` without CAP_NET_RAW and
    ``OSError`` for an unknown interface."""
    return PacketSender(interface)
