"""A hot-standby pair of real services (sockets, SQLite stores, asyncio) on loopback.

No root needed: DHCP on an unprivileged port, the failover link on 127.0.0.x, a relay socket
standing in for the relay agent (it sends every client message to both servers, as relays
configured with two helper addresses do). What the simulator shows in virtual time
(tests/sim/test_hot_standby.py) is shown here through the real service shell: the pair
reaches NORMAL, only the primary answers, the first lease is the MCLT, the standby learns
the binding and its reserve, and when the primary stops the standby answers new clients
from its reserve with MCLT leases.

Waits are for real events on real sockets, each bounded by a deadline.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import pytest

from tandem.config import load_text
from tandem.failover.machine import LogRecord
from tandem.leases.model import BindingState
from tandem.service import Server
from tandem.store import open_store
from tandem.wire.dhcp import (
    OPT_CLIENT_ID,
    OPT_LEASE_TIME,
    OPT_MESSAGE_TYPE,
    OPT_REQUESTED_IP,
    OPT_SERVER_ID,
    DhcpMessage,
    MessageType,
    decode,
    encode,
)
from tandem.wire.failover import ServerState

PRIMARY, STANDBY, RELAY = "127.0.0.1", "127.0.0.5", "127.0.0.2"
MCLT = 300


def free_port(host: str, kind: int = socket.SOCK_DGRAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def pair_config(role: str, me: str, partner: str, dhcp_port: int, fo_ports: dict[str, int],
                tmp: Path) -> str:
    return f"""
[server]
listen_address = "{me}"
port = {dhcp_port}
raw_replies = false
control_socket = "{tmp / role / 'control.sock'}"
[store]
path = "{tmp / role / 'leases.db'}"
[[subnets]]
prefix = "192.0.2.0/24"
relay_addresses = ["{RELAY}"]
pools = [{{ start = "192.0.2.100", end = "192.0.2.199" }}]
lease_time_s = 600
[failover]
name = "loopback-pair"
role = "{role}"
listen_address = "{me}"
listen_port = {fo_ports[me]}
peer_address = "{partner}"
peer_port = {fo_ports[partner]}
mclt_s = {MCLT}
reserve_percent = 20
"""


class Relay:
    def __init__(self, port: int) -> None:
        self.port = port
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((RELAY, port))
        self.sock.setblocking(False)

    def send(self, msg: DhcpMessage, servers: tuple[str, ...] = (PRIMARY, STANDBY)) -> None:
        msg.giaddr = IPv4Address(RELAY)
        msg.hops = 1
        for host in servers:
            self.sock.sendto(encode(msg), (host, self.port))

    async def recv(self, timeout: float = 5.0) -> tuple[str, DhcpMessage]:
        # add_reader rather than loop.sock_recvfrom, which uvloop does not implement
        loop = asyncio.get_running_loop()
        got: asyncio.Future[tuple[bytes, Any]] = loop.create_future()

        def readable() -> None:
            try:
                item = self.sock.recvfrom(4096)
            except BlockingIOError:
                return
            if not got.done():
                got.set_result(item)

        loop.add_reader(self.sock.fileno(), readable)
        try:
            data, addr = await asyncio.wait_for(got, timeout)
        finally:
            loop.remove_reader(self.sock.fileno())
        return addr[0], decode(data)


def client(n: int, mt: MessageType, extra: dict[int, bytes] | None = None) -> DhcpMessage:
    mac = bytes((2, 0, 0, 0, 0, n))
    opts = {OPT_MESSAGE_TYPE: bytes((mt,)), OPT_CLIENT_ID: b"\x01" + mac, **(extra or {})}
    return DhcpMessage(xid=0x5000 + n, chaddr=mac + b"\x00" * 10, options=opts)


async def until(cond: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    """Wait for a condition that real sockets and threads will make true (bounded)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


async def dora(relay: Relay, n: int) -> tuple[str, DhcpMessage]:
    relay.send(client(n, MessageType.DISCOVER))
    src, offer = await relay.recv()
    assert offer.message_type is MessageType.OFFER
    relay.send(client(n, MessageType.REQUEST, {
        OPT_REQUESTED_IP: offer.yiaddr.packed, OPT_SERVER_ID: offer.options[OPT_SERVER_ID]}))
    src2, ack = await relay.recv()
    assert ack.message_type is MessageType.ACK and src2 == src
    return src, ack


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_hot_standby_pair_of_real_services(tmp_path: Path, loop: str) -> None:
    """Both event loops: `tandem serve` runs on uvloop, whose transports differ in type."""
    errors: list[dict[str, Any]] = []
    dhcp_port = free_port(RELAY)
    fo_ports = {PRIMARY: free_port(PRIMARY, socket.SOCK_STREAM),
                STANDBY: free_port(STANDBY, socket.SOCK_STREAM)}
    cfg_p = load_text(pair_config("primary", PRIMARY, STANDBY, dhcp_port, fo_ports, tmp_path))
    cfg_s = load_text(pair_config("secondary", STANDBY, PRIMARY, dhcp_port, fo_ports, tmp_path))

    async def body() -> None:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda _loop, ctx: errors.append(ctx))
        relay = Relay(dhcp_port)
        primary, standby = Server(cfg_p), Server(cfg_s)
        states: dict[str, list[ServerState]] = {"p": [], "s": []}
        primary.on_failover_record(lambda r: _note(states["p"], r))
        standby.on_failover_record(lambda r: _note(states["s"], r))
        await primary.start()
        await standby.start()
        try:
            p_peer, s_peer = primary.failover_peer, standby.failover_peer
            assert p_peer is not None and s_peer is not None
            await until(lambda: p_peer.state is ServerState.NORMAL
                        and s_peer.state is ServerState.NORMAL, "both servers in NORMAL")
            # 4.3: the primary hands the standby its reserve (20 % of 100 free addresses)
            await until(lambda: s_peer.reserve_counts()[1] == 20, "the standby's reserve")

            # 1.1-1.3: only the primary answers; the first lease is the MCLT
            src, ack = await dora(relay, 1)
            assert src == PRIMARY
            assert int.from_bytes(ack.options[OPT_LEASE_TIME], "big") == MCLT
            # 1.4: the standby learns the binding (and stores it)
            addr = ack.yiaddr

            def standby_knows() -> bool:
                lease = s_peer.engine.table.get_ip(addr)
                return lease is not None and lease.state is BindingState.ACTIVE

            await until(standby_knows, "the binding update at the standby")
            assert standby.stats["tx_offer"] == 0 and standby.stats["tx_ack"] == 0
            assert standby.stats["drop_policy"] >= 2  # it saw DISCOVER and REQUEST

            # 2.1: the primary stops; the standby notices
            await primary.stop()
            await until(lambda: s_peer.state is ServerState.COMMUNICATIONS_INTERRUPTED,
                        "COMMUNICATIONS-INTERRUPTED at the standby")
            # 2.2: a new client is served by the standby, from its reserve, for the MCLT
            src, ack2 = await dora(relay, 2)
            assert src == STANDBY
            assert int.from_bytes(ack2.options[OPT_LEASE_TIME], "big") == MCLT
            assert ack2.yiaddr != addr
        finally:
            await standby.stop()
            await primary.stop()
            relay.sock.close()
        assert ServerState.NORMAL in states["p"] and ServerState.NORMAL in states["s"]
        # both stores hold the first client's binding
        for role in ("primary", "secondary"):
            store = open_store(load_text(pair_config(
                role, PRIMARY if role == "primary" else STANDBY,
                STANDBY if role == "primary" else PRIMARY, dhcp_port, fo_ports,
                tmp_path)).store)
            try:
                stored = {le.address: le for le in store.load()}
            finally:
                store.close()
            assert stored[addr].state is BindingState.ACTIVE
            assert stored[addr].hwaddr == bytes((2, 0, 0, 0, 0, 1))

    if loop == "uvloop":
        uvloop = pytest.importorskip("uvloop")
        uvloop.run(asyncio.wait_for(body(), 60))
    else:
        asyncio.run(asyncio.wait_for(body(), 60))
    assert errors == [], errors


def _note(seen: list[ServerState], record: LogRecord) -> None:
    if record.event == "FAILOVER_STATE_CHANGED":
        seen.append(record.to_state)
