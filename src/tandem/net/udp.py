"""DHCP sockets on the asyncio loop: receive in bursts with IP_PKTINFO, send per RFC 2131 §4.1.

asyncio's ``datagram_received`` hides ancillary data, and we need it (receiving interface,
the local address the datagram reached, broadcast or unicast). So every socket is
non-blocking, registered with ``loop.add_reader`` and drained with ``recvmsg`` until
``EAGAIN`` (at most ``max_burst`` datagrams per wakeup). The whole drained burst goes to one
callback, which lets the service commit a burst's lease changes in one transaction.

Sending:
- relays and clients with an address: ``sendto`` on the UDP socket;
- broadcast: 255.255.255.255 on the socket of the receiving interface (SO_BINDTODEVICE), or,
  with one unbound socket, ``sendmsg`` with IP_PKTINFO naming the interface index;
- ``link_layer`` replies (no address, no broadcast flag): a packet socket addressed to the
  client's hardware address (:mod:`tandem.net.rawsock`), or broadcast when packet sockets are
  unavailable (no CAP_NET_RAW) or disabled (``raw_replies = false``).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import socket
import struct
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from typing import Final

from tandem.dhcp.types import BROADCAST_IP, Reply, RxInfo
from tandem.log import RateLimit, event, get_logger
from tandem.net.rawsock import PacketSender, open_packet_sender

log: Final = get_logger("net")

# Linux constants the socket module may not export.
IP_PKTINFO: Final[int] = getattr(socket, "IP_PKTINFO", 8)
SO_BINDTODEVICE: Final[int] = getattr(socket, "SO_BINDTODEVICE", 25)
SO_RCVBUFFORCE: Final[int] = getattr(socket, "SO_RCVBUFFORCE", 33)
SO_SNDBUFFORCE: Final[int] = getattr(socket, "SO_SNDBUFFORCE", 32)
SIOCGIFADDR: Final = 0x8915

RECV_SIZE: Final = 4096  # larger than any DHCP message we accept; bigger datagrams are malformed
ANC_SIZE: Final = socket.CMSG_SPACE(12)  # struct in_pktinfo
SOCKET_BUFFER_BYTES: Final = 4 * 1024 * 1024
DEFAULT_MAX_BURST: Final = 256
RX_CACHE_SIZE: Final = 4096  # cached RxInfo objects at most (cleared when full)
_MSG_TRUNC: Final = int(socket.MSG_TRUNC)  # a plain int: IntFlag.__and__ runs Python code

_PKTINFO: Final = struct.Struct("=I4s4s")  # ipi_ifindex, ipi_spec_dst, ipi_addr
_BROADCAST_PACKED: Final = b"\xff\xff\xff\xff"
_ZERO_PACKED: Final = b"\x00\x00\x00\x00"

BurstHandler = Callable[[list[tuple[bytes, RxInfo]]], None]


def interface_address(name: str) -> IPv4Address | None:
    """The primary IPv4 address of interface ``name`` (SIOCGIFADDR), or None."""
    if not name:
        return None
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            req = struct.pack("16s16x", name.encode()[:15])
            res = fcntl.ioctl(s.fileno(), SIOCGIFADDR, req)
    except OSError:
        return None
    # struct ifreq: name[16], then struct sockaddr_in (family, port, addr)
    return IPv4Address(res[20:24])


def interface_name(index: int) -> str:
    try:
        return socket.if_indextoname(index)
    except OSError:
        return ""


def _remove_reader(loop: asyncio.AbstractEventLoop, fd: int) -> None:
    """``loop.remove_reader(fd)``, its result unused: typeshed says bool, uvloop returns None,
    and the optional compiled build checks a declared result type at the call."""
    remove: Callable[[int], object] = loop.remove_reader
    remove(fd)


def _set_buffer(sock: socket.socket, force_opt: int, opt: int, size: int) -> None:
    try:
        sock.setsockopt(socket.SOL_SOCKET, force_opt, size)  # root: beyond rmem_max
    except OSError:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, opt, size)


def open_dhcp_socket(
    listen_address: IPv4Address, port: int, interface: str = ""
) -> socket.socket:
    """A non-blocking UDP socket for DHCP: broadcast-capable, IP_PKTINFO on, bound to
    ``listen_address:port`` and, when ``interface`` is given, to that device."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
        _set_buffer(sock, SO_RCVBUFFORCE, socket.SO_RCVBUF, SOCKET_BUFFER_BYTES)
        _set_buffer(sock, SO_SNDBUFFORCE, socket.SO_SNDBUF, SOCKET_BUFFER_BYTES)
        if interface:
            sock.setsockopt(socket.SOL_SOCKET, SO_BINDTODEVICE, interface.encode() + b"\x00")
        sock.bind((str(listen_address), port))
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


@dataclass(slots=True)
class _Endpoint:
    sock: socket.socket
    interface: str  # "" = not bound to a device
    description: str


@dataclass(slots=True)
class _RxCache:
    """Per (ifindex, spec_dst, dst) the derived (interface, local_ip, to_unicast)."""

    entries: dict[tuple[int, bytes, bytes], tuple[str, IPv4Address | None, bool]] = field(
        default_factory=dict
    )
    sources: dict[str, IPv4Address] = field(default_factory=dict)


class DhcpTransport:
    """The server's DHCP sockets. ``open()`` creates them (raises OSError), ``start()``
    registers them with the loop, ``send()`` delivers one encoded reply."""

    def __init__(
        self,
        *,
        interfaces: list[str],
        listen_address: IPv4Address,
        port: int,
        raw_replies: bool,
        stats: Counter[str] | None = None,
        max_burst: int = DEFAULT_MAX_BURST,
    ) -> None:
        self.interfaces = list(interfaces)
        self.listen_address = listen_address
        self.port = port
        self.raw_replies = raw_replies
        self.max_burst = max_burst
        self.stats: Counter[str] = stats if stats is not None else Counter()
        self._endpoints: list[_Endpoint] = []
        self._by_interface: dict[str, _Endpoint] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._on_burst: BurstHandler | None = None
        self._cache = _RxCache()
        self._senders: dict[str, PacketSender] = {}
        self._raw_available = raw_replies
        self._raw_fallback_logged = False
        self._if_addrs: dict[str, IPv4Address | None] = {}
        self._dest_cache: dict[tuple[IPv4Address, int], tuple[str, int]] = {}
        # The last unicast destination (a relay answers many clients): found by identity,
        # since hashing an IPv4Address runs Python code (decode() reuses address objects).
        self._last_dest: tuple[IPv4Address | None, int, tuple[str, int]] = (None, 0, ("", 0))
        # RxInfo per (source address, IP_PKTINFO control message): a relay or a broadcast
        # source sends many datagrams with the same ones (RxInfo is immutable).
        self._rx_cache: dict[tuple[tuple[str, int], tuple[int, int, bytes]], RxInfo] = {}
        self._rx_error_log = RateLimit(1, 10.0)
        self._tx_error_log = RateLimit(1, 10.0)

    # -- lifecycle -------------------------------------------------------------------

    @property
    def listening(self) -> list[str]:
        return [e.description for e in self._endpoints]

    @property
    def raw_available(self) -> bool:
        return self._raw_available

    def open(self) -> None:
        try:
            if self.interfaces:
                for name in self.interfaces:
                    sock = open_dhcp_socket(self.listen_address, self.port, name)
                    ep = _Endpoint(sock, name, f"{self.listen_address}:{self.port}%{name}")
                    self._endpoints.append(ep)
                    self._by_interface[name] = ep
            else:
                sock = open_dhcp_socket(self.listen_address, self.port)
                self._endpoints.append(
                    _Endpoint(sock, "", f"{self.listen_address}:{self.port}")
                )
        except OSError:
            self.close()
            raise
        if self.raw_replies:
            self._probe_raw()
        else:
            event(log, logging.INFO, "RAW_REPLIES_DISABLED",
                  detail="clients without an address get broadcast replies")

    def _probe_raw(self) -> None:
        names = self.interfaces or ["lo"]
        try:
            for name in names:
                self._senders[name] = open_packet_sender(name)
        except PermissionError as exc:
            self._disable_raw(f"no CAP_NET_RAW ({exc.strerror})")
        except OSError as exc:
            self._disable_raw(f"packet socket failed ({exc.strerror})")
        if not self.interfaces:
            # One unbound socket: senders are opened per interface when first needed.
            for s in self._senders.values():
                s.close()
            self._senders.clear()

    def _disable_raw(self, reason: str) -> None:
        self._raw_available = False
        for s in self._senders.values():
            s.close()
        self._senders.clear()
        if not self._raw_fallback_logged:
            self._raw_fallback_logged = True
            event(log, logging.WARNING, "RAW_REPLIES_UNAVAILABLE", reason=reason,
                  fallback="broadcast replies to clients without an address")

    def start(self, loop: asyncio.AbstractEventLoop, on_burst: BurstHandler) -> None:
        self._loop = loop
        self._on_burst = on_burst
        for ep in self._endpoints:
            loop.add_reader(ep.sock.fileno(), self._on_readable, ep)

    def stop_receiving(self) -> None:
        """Stop reading (sending still works): the first step of a graceful stop."""
        if self._loop is not None and not self._loop.is_closed():
            for ep in self._endpoints:
                _remove_reader(self._loop, ep.sock.fileno())

    def close(self) -> None:
        for ep in self._endpoints:
            if self._loop is not None and not self._loop.is_closed():
                _remove_reader(self._loop, ep.sock.fileno())
            ep.sock.close()
        self._endpoints.clear()
        self._by_interface.clear()
        for s in self._senders.values():
            s.close()
        self._senders.clear()
        self._loop = None

    # -- receive ---------------------------------------------------------------------

    def _on_readable(self, ep: _Endpoint) -> None:
        batch: list[tuple[bytes, RxInfo]] = []
        append = batch.append
        recvmsg = ep.sock.recvmsg
        rxinfo = self._rxinfo
        rx_cache = self._rx_cache
        stats = self.stats
        for _ in range(self.max_burst):
            try:
                data, anc, flags, addr = recvmsg(RECV_SIZE, ANC_SIZE)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                stats["rx_errors"] += 1
                if self._loop is not None and self._rx_error_log.allow(self._loop.time()):
                    event(log, logging.WARNING, "RX_ERROR",
                          socket=ep.description, error=exc.strerror)
                break
            if flags & _MSG_TRUNC:
                stats["rx_malformed"] += 1
                continue
            if len(anc) == 1:
                key = (addr, anc[0])
                rx = rx_cache.get(key)
                if rx is None:
                    if len(rx_cache) >= RX_CACHE_SIZE:
                        rx_cache.clear()
                    rx = rx_cache[key] = rxinfo(anc, addr, ep)
                append((data, rx))
            else:
                append((data, rxinfo(anc, addr, ep)))
        if not batch or self._on_burst is None:
            return
        stats["rx_bursts"] += 1
        stats["rx"] += len(batch)
        try:
            self._on_burst(batch)
        except Exception:  # never let a bug reach the loop's exception handler
            stats["internal_errors"] += 1
            log.exception("INTERNAL_ERROR in burst handler")

    def _rxinfo(
        self, anc: list[tuple[int, int, bytes]], addr: tuple[str, int], ep: _Endpoint
    ) -> RxInfo:
        cache = self._cache
        src_ip = cache.sources.get(addr[0])
        if src_ip is None:
            if len(cache.sources) > 4096:
                cache.sources.clear()
            src_ip = cache.sources[addr[0]] = IPv4Address(addr[0])
        key: tuple[int, bytes, bytes] = (0, _ZERO_PACKED, _ZERO_PACKED)
        for level, kind, cdata in anc:
            if level == socket.IPPROTO_IP and kind == IP_PKTINFO and len(cdata) >= 12:
                key = _PKTINFO.unpack_from(cdata)
                break
        derived = cache.entries.get(key)
        if derived is None:
            derived = self._derive(key, ep)
            if len(cache.entries) > 1024:
                cache.entries.clear()
            cache.entries[key] = derived
        return RxInfo(src_ip, addr[1], derived[0], derived[1], derived[2])

    def _derive(
        self, key: tuple[int, bytes, bytes], ep: _Endpoint
    ) -> tuple[str, IPv4Address | None, bool]:
        ifindex, spec_dst, dst = key
        name = interface_name(ifindex) if ifindex else ep.interface
        # For unicast the kernel reports the address the datagram reached, for broadcast
        # the receiving interface's primary address.
        local = IPv4Address(spec_dst) if spec_dst != _ZERO_PACKED else interface_address(name)
        to_unicast = (
            dst != _BROADCAST_PACKED and dst != _ZERO_PACKED and dst == spec_dst and dst[0] < 224
        )
        return name, local, to_unicast

    # -- send ------------------------------------------------------------------------

    def send(self, reply: Reply, data: bytes) -> bool:
        """Deliver one encoded reply. Returns False (and counts) when the kernel refused."""
        try:
            last = self._last_dest
            if reply.dest_ip is last[0] and reply.dest_port == last[1] and not reply.link_layer:
                # the unicast destination of the previous reply (a relay): no address
                # comparison or hashing, which run Python code
                self._endpoint_for(reply.interface).sock.sendto(data, last[2])
            elif reply.link_layer:
                if self._raw_available and self._send_link_layer(reply, data):
                    self.stats["tx_link_layer"] += 1
                    self.stats["tx"] += 1
                    return True
                self._send_broadcast(reply.interface, data, reply.dest_port)
            elif reply.dest_ip == BROADCAST_IP:
                self._send_broadcast(reply.interface, data, reply.dest_port)
            else:
                self._send_unicast(reply.interface, data, reply.dest_ip, reply.dest_port)
        except OSError as exc:
            self.stats["tx_errors"] += 1
            if self._loop is not None and self._tx_error_log.allow(self._loop.time()):
                event(log, logging.WARNING, "TX_ERROR", dest=f"{reply.dest_ip}:{reply.dest_port}",
                      interface=reply.interface, error=exc.strerror or str(exc))
            return False
        self.stats["tx"] += 1
        return True

    def _endpoint_for(self, interface: str) -> _Endpoint:
        ep = self._by_interface.get(interface)
        if ep is None:
            if not self._endpoints:
                raise OSError("transport is closed")
            ep = self._endpoints[0]
        return ep

    def _send_unicast(self, interface: str, data: bytes, ip: IPv4Address, port: int) -> None:
        last_ip, last_port, dest = self._last_dest
        if ip is not last_ip or port != last_port:
            cached = self._dest_cache.get((ip, port))
            if cached is None:
                if len(self._dest_cache) > 4096:
                    self._dest_cache.clear()
                cached = self._dest_cache[(ip, port)] = (str(ip), port)
            dest = cached
            self._last_dest = (ip, port, dest)
        self._endpoint_for(interface).sock.sendto(data, dest)

    def _send_broadcast(self, interface: str, data: bytes, port: int) -> None:
        ep = self._endpoint_for(interface)
        if ep.interface or not interface:
            ep.sock.sendto(data, ("255.255.255.255", port))
            return
        # One unbound socket: choose the outgoing interface with IP_PKTINFO.
        try:
            index = socket.if_nametoindex(interface)
        except OSError:
            index = 0
        if not index:
            ep.sock.sendto(data, ("255.255.255.255", port))
            return
        pktinfo = _PKTINFO.pack(index, _ZERO_PACKED, _ZERO_PACKED)
        ep.sock.sendmsg(
            [data], [(socket.IPPROTO_IP, IP_PKTINFO, pktinfo)], 0, ("255.255.255.255", port)
        )

    def _send_link_layer(self, reply: Reply, data: bytes) -> bool:
        """Send via a packet socket; False when this reply cannot go that way."""
        name = reply.interface
        if not name or len(reply.hwaddr) != 6:
            return False
        src = self._interface_ip(name)
        if src is None:
            return False
        sender = self._senders.get(name)
        if sender is None:
            try:
                sender = self._senders[name] = open_packet_sender(name)
            except PermissionError as exc:
                self._disable_raw(f"no CAP_NET_RAW ({exc.strerror})")
                return False
            except OSError:
                return False
        sender.send(reply.hwaddr, src, reply.dest_ip, self.port, reply.dest_port, data)
        return True

    def refresh(self) -> None:
        """Forget cached interface facts (addresses may change); called periodically."""
        self._if_addrs.clear()
        self._cache.entries.clear()
        self._rx_cache.clear()

    def _interface_ip(self, name: str) -> IPv4Address | None:
        if name not in self._if_addrs:
            self._if_addrs[name] = interface_address(name)
        return self._if_addrs[name]
