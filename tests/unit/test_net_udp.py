"""The DHCP socket adapter on loopback: ancillary data -> RxInfo, bursts drained per wakeup,
replies delivered, errors kept away from the event loop's exception handler."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from ipaddress import IPv4Address
from typing import Any

import pytest

from tandem.dhcp.types import Reply, RxInfo
from tandem.net.udp import (
    _MSG_TRUNC,
    DhcpTransport,
    _Endpoint,
    interface_address,
    open_dhcp_socket,
)
from tandem.wire.dhcp import DhcpMessage

SERVER = IPv4Address("127.0.0.1")
RELAY = "127.0.0.2"


def run_checked(body: Callable[[], Awaitable[None]]) -> None:
    """Run ``body`` on a fresh loop whose exception handler fails the test."""
    errors: list[dict[str, Any]] = []

    async def main() -> None:
        asyncio.get_running_loop().set_exception_handler(lambda _loop, ctx: errors.append(ctx))
        await asyncio.wait_for(body(), timeout=10)

    asyncio.run(main())
    assert errors == [], errors


@contextmanager
def relay_socket() -> Iterator[socket.socket]:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((RELAY, 0))
    s.setblocking(False)
    try:
        yield s
    finally:
        s.close()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((str(SERVER), 0))
        port: int = s.getsockname()[1]
        return port


class Collector:
    def __init__(self) -> None:
        self.bursts: list[list[tuple[bytes, RxInfo]]] = []
        self.event = asyncio.Event()
        self.total = 0

    def __call__(self, batch: list[tuple[bytes, RxInfo]]) -> None:
        self.bursts.append(list(batch))
        self.total += len(batch)
        self.event.set()

    async def wait_total(self, n: int) -> None:
        while self.total < n:
            self.event.clear()
            await asyncio.wait_for(self.event.wait(), timeout=5)


def make_transport(port: int, **kw: Any) -> DhcpTransport:
    t = DhcpTransport(
        interfaces=kw.pop("interfaces", []), listen_address=SERVER, port=port,
        raw_replies=kw.pop("raw_replies", False), **kw,
    )
    t.open()
    return t


def test_interface_address_of_loopback() -> None:
    assert interface_address("lo") == IPv4Address("127.0.0.1")
    assert interface_address("tdm-no-such-if") is None
    assert interface_address("") is None


def test_rxinfo_from_pktinfo_for_unicast_to_us() -> None:
    async def body() -> None:
        port = free_port()
        t = make_transport(port)
        got = Collector()
        t.start(asyncio.get_running_loop(), got)
        try:
            with relay_socket() as r:
                r.sendto(b"hello", (str(SERVER), port))
                await got.wait_total(1)
                data, rx = got.bursts[0][0]
                assert data == b"hello"
                assert rx.src_ip == IPv4Address(RELAY)
                assert rx.src_port == r.getsockname()[1]
                assert rx.interface == "lo"
                assert rx.local_ip == SERVER
                assert rx.to_unicast is True
                assert t.stats["rx"] == 1
        finally:
            t.close()

    run_checked(body)


def test_broadcast_destination_is_not_unicast() -> None:
    t = DhcpTransport(interfaces=[], listen_address=SERVER, port=1, raw_replies=False)
    ep = _Endpoint(socket.socket(socket.AF_INET, socket.SOCK_DGRAM), "", "x")
    try:
        lo = socket.if_nametoindex("lo")
        ours = IPv4Address("127.0.0.1").packed
        bcast = b"\xff\xff\xff\xff"
        assert t._derive((lo, ours, bcast), ep) == ("lo", SERVER, False)
        assert t._derive((lo, ours, ours), ep) == ("lo", SERVER, True)
        # directed broadcast / multicast: destination differs from the local address
        assert t._derive((lo, ours, IPv4Address("127.255.255.255").packed), ep)[2] is False
        assert t._derive((lo, ours, IPv4Address("224.0.0.1").packed), ep)[2] is False
        # interface without address in pktinfo: the interface's own address is looked up
        assert t._derive((lo, b"\0\0\0\0", bcast), ep) == ("lo", SERVER, False)
    finally:
        ep.sock.close()


def test_socket_is_drained_in_bounded_bursts() -> None:
    async def body() -> None:
        port = free_port()
        t = make_transport(port, max_burst=256)
        got = Collector()
        t.start(asyncio.get_running_loop(), got)
        try:
            with relay_socket() as r:
                # queued before the loop can run the reader: one wakeup sees all of them
                for i in range(300):
                    r.sendto(i.to_bytes(2, "big"), (str(SERVER), port))
                await got.wait_total(300)
            assert [len(b) for b in got.bursts] == [256, 44]
            assert [d for b in got.bursts for d, _ in b] == [
                i.to_bytes(2, "big") for i in range(300)
            ]
            assert t.stats["rx_bursts"] == 2
        finally:
            t.close()

    run_checked(body)


def test_handler_exception_is_counted_not_raised_to_loop() -> None:
    async def body() -> None:
        port = free_port()
        t = make_transport(port)
        got = Collector()
        exploded = asyncio.Event()

        def explode(batch: list[tuple[bytes, RxInfo]]) -> None:
            if not exploded.is_set():
                exploded.set()
                raise RuntimeError("bug in handler")
            got(batch)

        t.start(asyncio.get_running_loop(), explode)
        try:
            with relay_socket() as r:
                r.sendto(b"one", (str(SERVER), port))
                await asyncio.wait_for(exploded.wait(), 5)  # first wakeup raised
                r.sendto(b"two", (str(SERVER), port))
                await got.wait_total(1)
            assert got.bursts[0][0][0] == b"two"
            assert t.stats["internal_errors"] == 1
        finally:
            t.close()

    run_checked(body)


def test_oversized_datagram_is_counted_as_malformed() -> None:
    async def body() -> None:
        port = free_port()
        t = make_transport(port)
        got = Collector()
        t.start(asyncio.get_running_loop(), got)
        try:
            with relay_socket() as r:
                r.sendto(b"x" * 5000, (str(SERVER), port))
                r.sendto(b"ok", (str(SERVER), port))
                await got.wait_total(1)
            assert [d for b in got.bursts for d, _ in b] == [b"ok"]
            assert t.stats["rx_malformed"] == 1
        finally:
            t.close()

    run_checked(body)


def test_unicast_reply_reaches_relay() -> None:
    async def body() -> None:
        port = free_port()
        t = make_transport(port)
        t.start(asyncio.get_running_loop(), Collector())
        loop = asyncio.get_running_loop()
        try:
            with relay_socket() as r:
                rport = r.getsockname()[1]
                reply = Reply(DhcpMessage(), IPv4Address(RELAY), rport, interface="lo")
                assert t.send(reply, b"reply-bytes")
                data, addr = await asyncio.wait_for(loop.sock_recvfrom(r, 2048), 5)
                assert data == b"reply-bytes"
                assert addr == (str(SERVER), port)
                assert t.stats["tx"] == 1
        finally:
            t.close()

    run_checked(body)


def test_send_error_is_counted_not_raised() -> None:
    async def body() -> None:
        t = make_transport(free_port())
        t.start(asyncio.get_running_loop(), Collector())
        try:
            # port 0 is not a valid destination: the kernel refuses
            reply = Reply(DhcpMessage(), IPv4Address(RELAY), 0)
            assert t.send(reply, b"x") is False
            assert t.stats["tx_errors"] == 1
        finally:
            t.close()

    run_checked(body)


@pytest.mark.skipif(os.geteuid() != 0, reason="SO_BINDTODEVICE on old kernels needs root")
def test_socket_per_interface_binds_to_device() -> None:
    async def body() -> None:
        port = free_port()
        t = make_transport(port, interfaces=["lo"])
        got = Collector()
        t.start(asyncio.get_running_loop(), got)
        try:
            assert t.listening == [f"127.0.0.1:{port}%lo"]
            s = t._endpoints[0].sock
            bound = s.getsockopt(socket.SOL_SOCKET, 25, 16).rstrip(b"\0")
            assert bound == b"lo"
            with relay_socket() as r:
                r.sendto(b"via-lo", (str(SERVER), port))
                await got.wait_total(1)
            assert got.bursts[0][0][1].interface == "lo"
        finally:
            t.close()

    run_checked(body)


def test_open_fails_when_port_is_taken() -> None:
    port = free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as holder:
        holder.bind((str(SERVER), port))  # no SO_REUSEADDR: the port is taken
        with pytest.raises(OSError):
            make_transport(port)


def test_open_dhcp_socket_options() -> None:
    s = open_dhcp_socket(SERVER, 0)
    try:
        assert s.getsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST) == 1
        assert s.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR) == 1
        assert s.getsockopt(socket.IPPROTO_IP, 8) == 1  # IP_PKTINFO
        assert s.getblocking() is False
    finally:
        s.close()


def test_raw_replies_unavailable_falls_back_without_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import tandem.net.udp as udp

    def denied(name: str) -> Any:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(udp, "open_packet_sender", denied)
    t = make_transport(free_port(), raw_replies=True)
    try:
        assert t.raw_available is False
    finally:
        t.close()


def test_rxinfo_is_reused_per_source_and_rebuilt_after_refresh() -> None:
    async def body() -> None:
        port = free_port()
        t = make_transport(port)
        got = Collector()
        t.start(asyncio.get_running_loop(), got)
        try:
            with relay_socket() as r1, relay_socket() as r2:
                p1, p2 = r1.getsockname()[1], r2.getsockname()[1]
                r1.sendto(b"a", (str(SERVER), port))
                await got.wait_total(1)
                r1.sendto(b"b", (str(SERVER), port))
                await got.wait_total(2)
                r2.sendto(b"c", (str(SERVER), port))
                await got.wait_total(3)
                t.refresh()  # interface facts may have changed: nothing cached survives
                r1.sendto(b"d", (str(SERVER), port))
                await got.wait_total(4)
            rx = {data: info for burst in got.bursts for data, info in burst}
            assert rx[b"a"] is rx[b"b"]  # same source, same arrival: one object
            assert rx[b"c"] is not rx[b"a"]
            assert (rx[b"a"].src_port, rx[b"c"].src_port) == (p1, p2)
            assert rx[b"d"] is not rx[b"a"] and rx[b"d"] == rx[b"a"]
            for info in rx.values():
                assert info.src_ip == IPv4Address(RELAY)
                assert (info.interface, info.local_ip, info.to_unicast) == ("lo", SERVER, True)
        finally:
            t.close()

    run_checked(body)


def test_unicast_replies_alternating_between_relays_reach_each() -> None:
    async def body() -> None:
        loop = asyncio.get_running_loop()
        port = free_port()
        t = make_transport(port)
        t.start(loop, Collector())
        try:
            with relay_socket() as r1, relay_socket() as r2:
                p1, p2 = r1.getsockname()[1], r2.getsockname()[1]
                relay = IPv4Address(RELAY)
                for i, (sock, rport) in enumerate([(r1, p1), (r2, p2), (r1, p1), (r2, p2)]):
                    # a fresh but equal address object each time, as decode() may give
                    reply = Reply(DhcpMessage(), IPv4Address(int(relay)), rport, interface="lo")
                    assert t.send(reply, b"reply-%d" % i)
                    data, _ = await asyncio.wait_for(loop.sock_recvfrom(sock, 2048), 5)
                    assert data == b"reply-%d" % i
                    same = Reply(DhcpMessage(), relay, rport, interface="lo")
                    assert t.send(same, b"again-%d" % i)  # the identical object again
                    data, _ = await asyncio.wait_for(loop.sock_recvfrom(sock, 2048), 5)
                    assert data == b"again-%d" % i
                assert t.stats["tx"] == 8
        finally:
            t.close()

    run_checked(body)


def test_truncated_datagram_flag_is_a_plain_int() -> None:
    assert type(_MSG_TRUNC) is int and _MSG_TRUNC == socket.MSG_TRUNC
