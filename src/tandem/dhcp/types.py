"""What goes into and comes out of the engine."""

from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv4Address
from typing import Final

from tandem.leases.model import Lease
from tandem.wire.dhcp import DhcpMessage

BROADCAST_IP: Final = IPv4Address("255.255.255.255")


@dataclass(slots=True, frozen=True)
class RxInfo:
    """Where a client message came from and arrived."""

    src_ip: IPv4Address
    src_port: int
    interface: str = ""  # receiving interface name ("" when unknown)
    # Address of the receiving interface; selects the subnet of directly attached clients.
    local_ip: IPv4Address | None = None
    # True when the datagram was sent to one of our unicast addresses (RENEWING detection).
    to_unicast: bool = False


# Reply and Outcome (one per message) have their __init__ written out: see DhcpMessage.
@dataclass(slots=True, init=False)  # not frozen: a frozen dataclass builds 4x slower
class Reply:
    """A message to send, and how RFC 2131 §4.1 says to deliver it.

    ``dest_ip``/``dest_port`` is the IP destination. When ``link_layer`` is true the client
    has no address yet and asked for unicast: the datagram must be addressed to ``dest_ip``
    (the offered yiaddr) at hardware address ``hwaddr`` without ARP (packet socket).
    ``interface`` is the interface the request arrived on.
    """

    msg: DhcpMessage
    dest_ip: IPv4Address
    dest_port: int
    interface: str = ""
    link_layer: bool = False
    hwaddr: bytes = b""

    def __init__(
        self,
        msg: DhcpMessage,
        dest_ip: IPv4Address,
        dest_port: int,
        interface: str = "",
        link_layer: bool = False,
        hwaddr: bytes = b"",
    ) -> None:
        self.msg = msg
        self.dest_ip = dest_ip
        self.dest_port = dest_port
        self.interface = interface
        self.link_layer = link_layer
        self.hwaddr = hwaddr


@dataclass(slots=True, init=False)
class Outcome:
    """The result of handling one message: replies to send after ``changed`` is committed.

    ``changed`` holds snapshots: the caller may keep them (the engine keeps its own copies).
    """

    replies: list[Reply] = field(default_factory=list)
    changed: list[Lease] = field(default_factory=list)
    event: str | None = None  # stable event name when something notable happened

    def __init__(
        self,
        replies: list[Reply] | None = None,
        changed: list[Lease] | None = None,
        event: str | None = None,
    ) -> None:
        self.replies = [] if replies is None else replies
        self.changed = [] if changed is None else changed
        self.event = event
