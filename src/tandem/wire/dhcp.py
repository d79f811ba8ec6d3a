"""DHCPv4 message (RFC 2131 header + RFC 2132 options).

``decode()`` and ``encode()`` live side by side. Options are kept as an ordered mapping
``code -> raw value bytes`` (after RFC 3396 concatenation and option-overload unfolding);
typed views come from :mod:`tandem.wire.dhcp_options`. Unknown options round-trip byte
for byte.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from enum import IntEnum
from ipaddress import IPv4Address

from tandem.errors import DecodeError

BOOTREQUEST = 1
BOOTREPLY = 2
MAGIC_COOKIE = b"\x63\x82\x53\x63"
FLAG_BROADCAST = 0x8000
ZERO_IP = IPv4Address(0)

# Option codes the engine reads or writes by name.
OPT_PAD = 0
OPT_SUBNET_MASK = 1
OPT_ROUTER = 3
OPT_DNS_SERVERS = 6
OPT_HOSTNAME = 12
OPT_DOMAIN_NAME = 15
OPT_BROADCAST_ADDRESS = 28
OPT_NTP_SERVERS = 42
OPT_REQUESTED_IP = 50
OPT_LEASE_TIME = 51
OPT_OVERLOAD = 52
OPT_MESSAGE_TYPE = 53
OPT_SERVER_ID = 54
OPT_PARAMETER_REQUEST_LIST = 55
OPT_MESSAGE = 56
OPT_MAX_MESSAGE_SIZE = 57
OPT_RENEWAL_TIME = 58
OPT_REBINDING_TIME = 59
OPT_VENDOR_CLASS_ID = 60
OPT_CLIENT_ID = 61
OPT_RELAY_AGENT_INFO = 82
OPT_END = 255


class MessageType(IntEnum):
    DISCOVER = 1
    OFFER = 2
    REQUEST = 3
    DECLINE = 4
    ACK = 5
    NAK = 6
    RELEASE = 7
    INFORM = 8


@dataclass(slots=True)
class DhcpMessage:
    """One DHCPv4 message. Addresses are ``IPv4Address``; chaddr is the full 16-byte field."""

    op: int = BOOTREQUEST
    htype: int = 1
    hlen: int = 6
    hops: int = 0
    xid: int = 0
    secs: int = 0
    flags: int = 0
    ciaddr: IPv4Address = ZERO_IP
    yiaddr: IPv4Address = ZERO_IP
    siaddr: IPv4Address = ZERO_IP
    giaddr: IPv4Address = ZERO_IP
    chaddr: bytes = b"\x00" * 16
    sname: bytes = b"\x00" * 64
    file: bytes = b"\x00" * 128
    options: dict[int, bytes] = field(default_factory=dict)

    # -- typed views of the fields the engine needs ------------------------------------

    @property
    def hwaddr(self) -> bytes:
        """The client hardware address (first ``hlen`` bytes of chaddr, at most 16)."""
        return self.chaddr[: min(self.hlen, 16)]

    @property
    def broadcast(self) -> bool:
        return bool(self.flags & FLAG_BROADCAST)

    @property
    def message_type(self) -> MessageType | None:
        v = self.options.get(OPT_MESSAGE_TYPE)
        if v is None or len(v) != 1:
            return None
        try:
            return MessageType(v[0])
        except ValueError:
            return None

    @property
    def client_id(self) -> bytes | None:
        v = self.options.get(OPT_CLIENT_ID)
        return v if v else None

    @property
    def requested_ip(self) -> IPv4Address | None:
        return self._ip_option(OPT_REQUESTED_IP)

    @property
    def server_id(self) -> IPv4Address | None:
        return self._ip_option(OPT_SERVER_ID)

    @property
    def lease_time(self) -> int | None:
        v = self.options.get(OPT_LEASE_TIME)
        if v is None or len(v) != 4:
            return None
        return int(struct.unpack("!I", v)[0])

    @property
    def parameter_request_list(self) -> bytes:
        return self.options.get(OPT_PARAMETER_REQUEST_LIST, b"")

    @property
    def max_message_size(self) -> int | None:
        v = self.options.get(OPT_MAX_MESSAGE_SIZE)
        if v is None or len(v) != 2:
            return None
        return int(struct.unpack("!H", v)[0])

    @property
    def hostname(self) -> str | None:
        v = self.options.get(OPT_HOSTNAME)
        if not v:
            return None
        return v.decode("utf-8", "replace").rstrip("\x00")

    def _ip_option(self, code: int) -> IPv4Address | None:
        v = self.options.get(code)
        if v is None or len(v) != 4:
            return None
        return IPv4Address(v)


def decode(data: bytes) -> DhcpMessage:
    """Parse one DHCPv4/BOOTP datagram. Raises :class:`DecodeError` and nothing else."""
    raise DecodeError("not implemented")  # implemented in the codec work


def encode(msg: DhcpMessage, max_size: int = 576) -> bytes:
    """Serialise ``msg``; long options are split (RFC 3396), overload (52) used if needed."""
    raise NotImplementedError
