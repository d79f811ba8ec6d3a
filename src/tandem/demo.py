"""``make demo``: a hot-standby failover pair on loopback, watched live (no root needed).

Two Tandem servers run in this process: the primary on 127.0.0.1 and the standby on
127.0.0.5, both at an unprivileged DHCP port (6767), linked by the failover protocol over TCP
(port 6647 on each address), each with its own SQLite store in a temporary directory. The
configuration is the reference one of docs/hot-standby.md: one pool of 100 addresses
(192.0.2.100-199), 20 % reserve for the standby, MCLT 300 s, lease 600 s. A simulated relay
agent (a UDP socket on 127.0.0.2) forwards every client message to BOTH servers, as a relay
with two helper addresses does; a server answers the relay at ``giaddr:server-port``.

The story: the pair comes up (every failover state change of each server is printed), the
primary hands the standby its reserve, clients get leases (only the primary answers);
then the primary is STOPPED: the standby notices, rebinding clients (REQUEST with ciaddr,
relayed to both) and new clients are answered by the standby, with MCLT leases from its
reserve; then the primary is RESTARTED on the same store and the pair returns to NORMAL;
clients are served again. A summary table ends it. Exit code 0 only if every client
exchange got its ACK and both servers ended in NORMAL.

    python -m tandem.demo [--port 6767] [--failover-port 6647] [--clients 40] [--pace 0.1]
    python -m tandem.demo --single     # the earlier demo: one server, two relays, ~60 clients
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import logging
import os
import random
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from typing import Any

from tandem.clock import SystemClock
from tandem.config import (
    Config,
    FailoverSection,
    LeaseTimes,
    OptionSet,
    Pool,
    ServerSection,
    StoreSection,
    Subnet,
    check,
)
from tandem.errors import DecodeError
from tandem.failover.machine import LogRecord
from tandem.failover.peer import REBALANCE_INTERVAL_S, FailoverPeer
from tandem.leases.model import BindingState
from tandem.log import setup_logging
from tandem.service import Server
from tandem.store import open_store
from tandem.wire.dhcp import (
    OPT_CLIENT_ID,
    OPT_HOSTNAME,
    OPT_LEASE_TIME,
    OPT_MESSAGE_TYPE,
    OPT_PARAMETER_REQUEST_LIST,
    OPT_REBINDING_TIME,
    OPT_RENEWAL_TIME,
    OPT_REQUESTED_IP,
    OPT_SERVER_ID,
    DhcpMessage,
    MessageType,
    decode,
    encode,
)
from tandem.wire.failover import ServerState

SERVER_IP = "127.0.0.1"
# The demo needs no operator control socket (and must not collide with a running server's):
# "" turns it off, on versions of ServerSection that have one.
NO_CONTROL: dict[str, Any] = (
    {"control_socket": ""} if "control_socket" in ServerSection.model_fields else {}
)
RELAYS = {"A": "127.0.0.2", "B": "127.0.0.3"}
TIMEOUT_S = 1.0
TRIES = 4


def demo_config(store_path: str, port: int) -> Config:
    return Config(
        server=ServerSection(
            listen_address=IPv4Address(SERVER_IP), port=port, client_port=port + 1,
            raw_replies=False, **NO_CONTROL,
        ),
        store=StoreSection(path=store_path),
        lease=LeaseTimes(default_lease_time_s=3600, decline_probation_s=3600),
        options=OptionSet(dns_servers=[IPv4Address("203.0.113.53")], domain_name="demo.test"),
        subnets=[
            Subnet(
                id=1,
                prefix=IPv4Network("192.0.2.0/24"),
                pools=[Pool(start=IPv4Address("192.0.2.10"), end=IPv4Address("192.0.2.99"))],
                relay_addresses=[IPv4Address(RELAYS["A"])],
                lease_time_s=600,
                options=OptionSet(routers=[IPv4Address("192.0.2.1")]),
            ),
            Subnet(
                id=2,
                prefix=IPv4Network("198.51.100.0/24"),
                pools=[
                    Pool(start=IPv4Address("198.51.100.10"), end=IPv4Address("198.51.100.69"))
                ],
                relay_addresses=[IPv4Address(RELAYS["B"])],
                lease_time_s=1800,
                renew_time_s=600,
                rebind_time_s=1200,
                options=OptionSet(routers=[IPv4Address("198.51.100.1")]),
            ),
        ],
    )


SUBNET_NAMES = {1: "A 192.0.2.0/24", 2: "B 198.51.100.0/24"}


def mac_str(mac: bytes) -> str:
    return ":".join(f"{b:02x}" for b in mac)


def _u32(msg: DhcpMessage, code: int) -> int | None:
    v = msg.options.get(code)
    return int.from_bytes(v, "big") if v is not None and len(v) == 4 else None


def _same(relay: Relay) -> Relay:
    return relay


class Relay(asyncio.DatagramProtocol):
    """A simulated relay agent: forwards client messages with giaddr set to every server it
    knows (one, or both of a failover pair), matches replies to the waiting client by
    transaction id, and counts who answered what."""

    def __init__(self, name: str, address: str, *servers: tuple[str, int]) -> None:
        self.name = name
        self.address = IPv4Address(address)
        self.servers = servers
        self.transport: asyncio.DatagramTransport | None = None
        self.waiting: dict[int, asyncio.Future[tuple[str, DhcpMessage]]] = {}
        self.first_from: dict[int, str] = {}  # xid -> the server whose reply came first
        self.answered: Counter[tuple[str, MessageType | None]] = Counter()
        self.both_answered = 0  # replies to one message from two different servers
        self.malformed = 0
        self.timeout_s, self.tries = TIMEOUT_S, TRIES  # a client's retransmission schedule

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        try:
            msg = decode(data)
        except DecodeError:
            self.malformed += 1
            return
        src = str(addr[0])
        self.answered[src, msg.message_type] += 1
        first = self.first_from.setdefault(msg.xid, src)
        if first != src:
            self.both_answered += 1
        fut = self.waiting.pop(msg.xid, None)
        if fut is not None and not fut.done():
            fut.set_result((src, msg))

    def error_received(self, exc: Exception) -> None:
        pass  # ICMP port unreachable from a stopped server: clients just retransmit

    def send(self, msg: DhcpMessage) -> None:
        assert self.transport is not None
        msg.giaddr = self.address
        msg.hops = 1
        data = encode(msg)
        for server in self.servers:
            self.transport.sendto(data, server)

    async def exchange_from(self, msg: DhcpMessage) -> tuple[str, DhcpMessage] | None:
        """Send and wait for the first reply with the same xid, retransmitting like a
        client; returns (the answering server's address, the reply)."""
        loop = asyncio.get_running_loop()
        for _ in range(self.tries):
            fut: asyncio.Future[tuple[str, DhcpMessage]] = loop.create_future()
            self.waiting[msg.xid] = fut
            self.send(msg)
            try:
                return await asyncio.wait_for(fut, self.timeout_s)
            except TimeoutError:
                self.waiting.pop(msg.xid, None)
        return None

    async def exchange(self, msg: DhcpMessage) -> DhcpMessage | None:
        got = await self.exchange_from(msg)
        return got[1] if got is not None else None


@dataclass
class Client:
    mac: bytes
    relay: Relay
    hostname: str
    address: IPv4Address | None = None
    server_id: bytes | None = None
    acks: int = 0
    history: list[str] = field(default_factory=list)

    def message(self, mtype: MessageType, extra: dict[int, bytes] | None = None) -> DhcpMessage:
        opts: dict[int, bytes] = {
            OPT_MESSAGE_TYPE: bytes([mtype]),
            OPT_CLIENT_ID: b"\x01" + self.mac,
        }
        if mtype in (MessageType.DISCOVER, MessageType.REQUEST):
            opts[OPT_PARAMETER_REQUEST_LIST] = bytes([1, 3, 6, 15, 51, 58, 59])
            opts[OPT_HOSTNAME] = self.hostname.encode()
        opts.update(extra or {})
        return DhcpMessage(
            xid=random.getrandbits(32), chaddr=self.mac + b"\x00" * 10, options=opts
        )


class Demo:
    def __init__(self, port: int, n_clients: int, store_path: str) -> None:
        self.port = port
        self.config = demo_config(store_path, port)
        self.server = Server(self.config)
        self.relays: dict[str, Relay] = {}
        self.clients: list[Client] = []
        self.n_clients = n_clients
        self.failures: list[str] = []
        self.t0 = time.monotonic()

    def say(self, text: str) -> None:
        print(f"[{time.monotonic() - self.t0:6.3f}s] {text}", flush=True)

    async def start(self) -> None:
        await self.server.start()
        loop = asyncio.get_running_loop()
        for name, address in RELAYS.items():
            relay = Relay(name, address, (SERVER_IP, self.port))
            relay.transport, _ = await loop.create_datagram_endpoint(
                functools.partial(_same, relay), local_addr=(address, self.port)
            )
            self.relays[name] = relay
        for i in range(self.n_clients):
            name = "A" if i % 2 == 0 else "B"
            mac = bytes([0x02, 0x00, 0x5E, 0x10, name == "B", i])
            self.clients.append(Client(mac, self.relays[name], f"host-{name.lower()}{i:02d}"))

    async def stop(self) -> None:
        for relay in self.relays.values():
            if relay.transport is not None:
                relay.transport.close()
        await self.server.stop()

    def describe(self, client: Client, ack: DhcpMessage, verb: str) -> str:
        lease = _u32(ack, OPT_LEASE_TIME)
        t1, t2 = _u32(ack, OPT_RENEWAL_TIME), _u32(ack, OPT_REBINDING_TIME)
        subnet = "A 192.0.2.0/24" if client.relay.name == "A" else "B 198.51.100.0/24"
        return (
            f"{verb:<8} {mac_str(client.mac)} -> {ack.yiaddr!s:<15} subnet {subnet:<17} "
            f"lease {lease}s T1 {t1}s T2 {t2}s  via relay {client.relay.address}"
        )

    async def dora(self, client: Client, verb: str = "ACK") -> bool:
        offer = await client.relay.exchange(client.message(MessageType.DISCOVER))
        if offer is None or offer.message_type is not MessageType.OFFER:
            self.failures.append(f"{mac_str(client.mac)}: no OFFER")
            return False
        server_id = offer.options.get(OPT_SERVER_ID, b"")
        request = client.message(
            MessageType.REQUEST, {OPT_REQUESTED_IP: offer.yiaddr.packed, OPT_SERVER_ID: server_id}
        )
        ack = await client.relay.exchange(request)
        if ack is None or ack.message_type is not MessageType.ACK:
            kind = "no reply" if ack is None else str(ack.message_type)
            self.failures.append(f"{mac_str(client.mac)}: REQUEST got {kind}")
            return False
        client.address, client.server_id, client.acks = ack.yiaddr, server_id, client.acks + 1
        self.say(self.describe(client, ack, verb))
        return True

    async def renew(self, client: Client) -> bool:
        assert client.address is not None
        msg = client.message(MessageType.REQUEST)
        msg.ciaddr = client.address
        ack = await client.relay.exchange(msg)
        if ack is None or ack.message_type is not MessageType.ACK or ack.yiaddr != client.address:
            self.failures.append(f"{mac_str(client.mac)}: renewal not ACKed")
            return False
        client.acks += 1
        self.say(self.describe(client, ack, "RENEWED"))
        return True

    def release(self, client: Client) -> None:
        assert client.address is not None and client.server_id is not None
        msg = client.message(MessageType.RELEASE, {OPT_SERVER_ID: client.server_id})
        msg.ciaddr = client.address
        client.relay.send(msg)
        self.say(f"RELEASE  {mac_str(client.mac)} gives back {client.address}")

    def decline(self, client: Client) -> None:
        assert client.address is not None and client.server_id is not None
        msg = client.message(
            MessageType.DECLINE,
            {OPT_REQUESTED_IP: client.address.packed, OPT_SERVER_ID: client.server_id},
        )
        client.relay.send(msg)
        self.say(f"DECLINE  {mac_str(client.mac)} found {client.address} in use (ARP)")

    async def run(self) -> bool:
        await self.start()
        self.say(
            f"server up on {', '.join(self.server.listening)}; "
            f"relays A={RELAYS['A']} B={RELAYS['B']}; {len(self.clients)} clients"
        )
        results = await asyncio.gather(*(self.dora(c) for c in self.clients))
        ok = all(results)
        # a couple of renewals (unicast REQUEST with ciaddr)
        for client in self.clients[:2]:
            ok = await self.renew(client) and ok
        # a few clients leave, one finds its address in use
        for client in self.clients[2:5]:
            self.release(client)
        decliner = self.clients[5]
        declined = decliner.address
        self.decline(decliner)
        ok = await self.dora(decliner, "RE-ACK") and ok
        if decliner.address == declined:
            self.failures.append("declined address was handed out again")
            ok = False
        self.summary()
        await self.stop()
        return ok and all(c.acks >= 1 for c in self.clients)

    def summary(self) -> None:
        now = SystemClock().now()
        states: dict[int, Counter[str]] = {1: Counter(), 2: Counter()}
        for lease in self.server.engine.leases():
            c = states.setdefault(lease.subnet_id, Counter())
            if lease.is_active(now):
                c["active"] += 1
            elif lease.state is BindingState.RELEASED:
                c["released"] += 1
            elif lease.state is BindingState.ABANDONED:
                c["declined"] += 1
        print()
        print(f"{'subnet':<20} {'pool size':>9} {'active':>7} {'released':>9} {'declined':>9}")
        for subnet in self.config.subnets:
            sid = subnet.id or 0
            size = sum(int(p.end) - int(p.start) + 1 for p in subnet.pools)
            c = states.get(sid, Counter())
            print(
                f"{SUBNET_NAMES.get(sid, str(sid)):<20} {size:>9} {c['active']:>7} "
                f"{c['released']:>9} {c['declined']:>9}"
            )
        stats = self.server.stats
        print(
            f"\nserver: {stats['rx']} datagrams in, {stats['tx']} out, "
            f"{stats['commits']} store commits ({stats['leases_committed']} lease writes), "
            f"{stats['rx_malformed']} malformed"
        )


def _single_main(port: int, n_clients: int) -> int:
    """The single-server demo (``--single``)."""
    with tempfile.TemporaryDirectory(prefix="tandem-demo-") as tmp:
        store_path = os.path.join(tmp, "leases.db")
        demo = Demo(port, n_clients, store_path)
        problems = check(demo.config)
        if problems:
            print("the demo configuration is invalid:\n  " + "\n  ".join(problems))
            return 1
        try:
            ok = asyncio.run(asyncio.wait_for(demo.run(), timeout=60))
        except OSError as exc:
            print(f"demo could not start: {exc}", file=sys.stderr)
            return 1
        store = open_store(demo.config.store)
        try:
            leases = store.load()
        finally:
            store.close()
        now = SystemClock().now()
        active = sum(1 for lease in leases if lease.is_active(now))
        print(f"store reopened ({store_path}): {len(leases)} leases, {active} active")
    acked = sum(1 for c in demo.clients if c.acks)
    print(f"{acked}/{len(demo.clients)} clients got an ACK")
    for failure in demo.failures:
        print(f"FAILED: {failure}")
    return 0 if ok and not demo.failures else 1


# -- the hot-standby pair demo ---------------------------------------------------------

PRIMARY, STANDBY, PAIR_RELAY = "127.0.0.1", "127.0.0.5", "127.0.0.2"
ROLE_NAMES = {PRIMARY: "primary", STANDBY: "standby"}
POOL_START, POOL_END = IPv4Address("192.0.2.100"), IPv4Address("192.0.2.199")
MCLT_S, LEASE_S, RESERVE_PERCENT = 300, 600, 20
POOL_SIZE = int(POOL_END) - int(POOL_START) + 1
RESERVE = POOL_SIZE * RESERVE_PERCENT // 100
STATE_TIMEOUT_S = 45.0  # the longest the demo waits for a failover state


def pair_config(role: str, store_path: str, dhcp_port: int, fo_ports: dict[str, int]) -> Config:
    """The reference configuration of docs/hot-standby.md for one server of the pair."""
    me, partner = (PRIMARY, STANDBY) if role == "primary" else (STANDBY, PRIMARY)
    return Config(
        server=ServerSection(
            listen_address=IPv4Address(me), port=dhcp_port, client_port=dhcp_port + 1,
            raw_replies=False, **NO_CONTROL,
        ),
        store=StoreSection(path=store_path),
        options=OptionSet(dns_servers=[IPv4Address("203.0.113.53")], domain_name="demo.test"),
        subnets=[
            Subnet(
                id=1,
                prefix=IPv4Network("192.0.2.0/24"),
                pools=[Pool(start=POOL_START, end=POOL_END)],
                relay_addresses=[IPv4Address(PAIR_RELAY)],
                lease_time_s=LEASE_S,
                options=OptionSet(routers=[IPv4Address("192.0.2.1")]),
            )
        ],
        failover=FailoverSection(
            name="demo-pair",
            role="primary" if role == "primary" else "secondary",
            listen_address=IPv4Address(me),
            listen_port=fo_ports[me],
            peer_address=IPv4Address(partner),
            peer_port=fo_ports[partner],
            mclt_s=MCLT_S,
            reserve_percent=RESERVE_PERCENT,
        ),
    )


def _state(state: ServerState | None) -> str:
    return "-" if state is None else state.name.replace("_", "-")


@dataclass
class Answer:
    """One client exchange as the relay saw it."""

    phase: str
    mac: str
    verb: str  # DORA / RENEW / REBIND
    server: str  # "primary", "standby" or "nobody"
    address: IPv4Address | None
    lease_s: int | None


class PairDemo:
    """Two in-process servers, one relay, clients in three phases (see the module doc)."""

    def __init__(self, dhcp_port: int, fo_ports: dict[str, int], n_clients: int, tmp: str,
                 pace: float = 0.1, client_timeout_s: float = TIMEOUT_S) -> None:
        self.dhcp_port = dhcp_port
        self.configs = {
            role: pair_config(role, os.path.join(tmp, f"{role}.db"), dhcp_port, fo_ports)
            for role in ("primary", "standby")
        }
        self.servers: dict[str, Server] = {}
        self.relay = Relay("R", PAIR_RELAY, (PRIMARY, dhcp_port), (STANDBY, dhcp_port))
        self.relay.timeout_s = client_timeout_s
        self.n_clients = max(n_clients, 6)
        self.pace = pace
        self.clients: list[Client] = []
        self.answers: list[Answer] = []
        self.failures: list[str] = []
        self.surprises: list[str] = []  # answers that differ from docs/hot-standby.md
        self.transitions: list[tuple[str, ServerState, ServerState]] = []
        self.final_states: dict[str, ServerState] = {}
        self.reserve_at_start: set[IPv4Address] = set()
        self.t0 = time.monotonic()

    def say(self, text: str) -> None:
        print(f"[{time.monotonic() - self.t0:6.3f}s] {text}", flush=True)

    def banner(self, text: str) -> None:
        print(flush=True)
        self.say(f"=== {text} ===")

    # -- servers --------------------------------------------------------------------

    def _listener(self, role: str) -> Callable[[LogRecord], None]:
        def on_record(record: LogRecord) -> None:
            if record.event == "FAILOVER_STATE_CHANGED":
                self.transitions.append((role, record.from_state, record.to_state))
                self.say(
                    f"{role:<8} state {_state(record.from_state)} -> {_state(record.to_state)}"
                    f"  (partner {_state(record.partner_state)}; {record.reason})"
                )
            else:
                self.say(f"{role:<8} {record.event} in {_state(record.from_state)}: "
                         f"{record.reason}")

        return on_record

    async def start_server(self, role: str) -> Server:
        server = Server(self.configs[role])
        server.on_failover_record(self._listener(role))
        await server.start()
        self.servers[role] = server
        return server

    def state(self, role: str) -> ServerState | None:
        server = self.servers.get(role)
        peer = server.failover_peer if server is not None and server.running else None
        return peer.state if peer is not None else None

    def standby_peer(self) -> FailoverPeer:
        peer = self.servers["standby"].failover_peer
        assert peer is not None
        return peer

    async def until(self, cond: Callable[[], bool], what: str,
                    timeout: float = STATE_TIMEOUT_S) -> bool:
        """Wait (bounded) for something the servers' sockets and timers will make true."""
        deadline = time.monotonic() + timeout
        while not cond():
            if time.monotonic() > deadline:
                self.failures.append(f"timed out after {timeout:.0f}s waiting for {what}")
                self.say(f"TIMED OUT waiting for {what}")
                return False
            await asyncio.sleep(0.02)
        return True

    async def both_normal(self) -> bool:
        return await self.until(
            lambda: self.state("primary") is ServerState.NORMAL
            and self.state("standby") is ServerState.NORMAL,
            "both servers in NORMAL",
        )

    def backup_addresses(self) -> set[IPv4Address]:
        table = self.standby_peer().engine.table
        return {le.address for le in table if le.state is BindingState.BACKUP}

    def show_reserve(self, when: str) -> None:
        free, backup = self.standby_peer().reserve_counts()
        addrs = sorted(self.backup_addresses())
        span = f" ({addrs[0]} .. {addrs[-1]})" if addrs else ""
        self.say(f"reserve {when}: the standby holds {backup} BACKUP addresses{span}; "
                 f"{free} free at the standby's view of the pool of {POOL_SIZE}")

    # -- clients --------------------------------------------------------------------

    def new_client(self, i: int) -> Client:
        mac = bytes([0x02, 0x00, 0x5E, 0x20, 0x00, i])
        client = Client(mac, self.relay, f"pair-host{i:02d}")
        self.clients.append(client)
        return client

    def record(self, phase: str, client: Client, verb: str, src: str | None,
               reply: DhcpMessage | None) -> Answer:
        server = ROLE_NAMES.get(src or "", "nobody")
        lease = _u32(reply, OPT_LEASE_TIME) if reply is not None else None
        address = reply.yiaddr if reply is not None else None
        answer = Answer(phase, mac_str(client.mac), verb, server, address, lease)
        self.answers.append(answer)
        if reply is None or reply.message_type is not MessageType.ACK:
            kind = "no reply" if reply is None else str(reply.message_type)
            self.failures.append(f"{answer.mac} {verb} in phase {phase}: {kind}")
            self.say(f"{verb:<6} {answer.mac}  FAILED: {kind} (answered by {server})")
            return answer
        client.acks += 1
        client.address = reply.yiaddr
        client.server_id = reply.options.get(OPT_SERVER_ID)
        t1, t2 = _u32(reply, OPT_RENEWAL_TIME), _u32(reply, OPT_REBINDING_TIME)
        self.say(f"{verb:<6} {answer.mac} -> {reply.yiaddr!s:<13} lease {lease}s "
                 f"(T1 {t1}s T2 {t2}s)  answered by {server} ({src})")
        return answer

    async def dora(self, phase: str, client: Client) -> Answer:
        got = await self.relay.exchange_from(client.message(MessageType.DISCOVER))
        if got is None or got[1].message_type is not MessageType.OFFER:
            return self.record(phase, client, "DORA", got[0] if got else None,
                               got[1] if got else None)
        src, offer = got
        request = client.message(MessageType.REQUEST, {
            OPT_REQUESTED_IP: offer.yiaddr.packed,
            OPT_SERVER_ID: offer.options.get(OPT_SERVER_ID, b""),
        })
        got = await self.relay.exchange_from(request)
        if got is not None and got[0] != src:
            self.surprises.append(f"{mac_str(client.mac)}: OFFER from {src}, ACK from {got[0]}")
        return self.record(phase, client, "DORA", got[0] if got else None,
                           got[1] if got else None)

    async def rebind(self, phase: str, client: Client, verb: str = "REBIND") -> Answer:
        """REQUEST with ciaddr, relayed to both servers (a client past T2 broadcasts)."""
        assert client.address is not None
        msg = client.message(MessageType.REQUEST)
        msg.ciaddr = client.address
        before = client.address
        got = await self.relay.exchange_from(msg)
        answer = self.record(phase, client, verb, got[0] if got else None,
                             got[1] if got else None)
        if answer.address is not None and answer.address != before:
            self.failures.append(f"{answer.mac}: {verb} moved it from {before} "
                                 f"to {answer.address}")
        return answer

    def expect(self, answer: Answer, server: str, lease_s: int | None = None,
               within: set[IPv4Address] | None = None) -> None:
        """Note (and print) any difference from what docs/hot-standby.md expects."""
        problems = []
        if answer.server != server:
            problems.append(f"answered by {answer.server}, expected {server}")
        if lease_s is not None and answer.lease_s is not None and answer.lease_s != lease_s:
            problems.append(f"lease {answer.lease_s}s, expected {lease_s}s")
        if within is not None and answer.address is not None and answer.address not in within:
            problems.append(f"{answer.address} is not from the standby's reserve")
        for p in problems:
            self.surprises.append(f"{answer.mac} {answer.verb} ({answer.phase}): {p}")
            self.say(f"       NOTE: {p}")

    async def paced(self) -> None:
        if self.pace > 0:
            await asyncio.sleep(self.pace)

    # -- the story ------------------------------------------------------------------

    async def run(self) -> bool:
        loop = asyncio.get_running_loop()
        self.relay.transport, _ = await loop.create_datagram_endpoint(
            functools.partial(_same, self.relay), local_addr=(PAIR_RELAY, self.dhcp_port)
        )
        try:
            return await self._story()
        finally:
            self.banner("stopping both servers")
            for role in ("standby", "primary"):
                server = self.servers.get(role)
                if server is not None:
                    state = self.state(role)
                    if state is not None:
                        self.final_states[role] = state
                    await server.stop()
            self.relay.transport.close()

    async def _story(self) -> bool:
        n = self.n_clients
        n1, n2 = n // 2, min(n // 4, RESERVE)
        n3 = n - n1 - n2
        self.banner("starting the pair")
        self.say(f"primary {PRIMARY}, standby {STANDBY}, DHCP port {self.dhcp_port}; relay "
                 f"{PAIR_RELAY} forwards every client message to both; pool {POOL_START}-"
                 f"{POOL_END} ({POOL_SIZE}), reserve {RESERVE_PERCENT} %, MCLT {MCLT_S}s, "
                 f"lease {LEASE_S}s")
        # the standby first: it listens, the primary dials (no first attempt in vain)
        await self.start_server("standby")
        await self.start_server("primary")
        if not await self.both_normal():
            return False
        if not await self.until(lambda: self.standby_peer().reserve_counts()[1] >= RESERVE,
                                "the standby's reserve"):
            return False
        self.reserve_at_start = self.backup_addresses()
        self.show_reserve("handed to the standby")

        self.banner(f"NORMAL: {n1} new clients (only the primary should answer, MCLT leases)")
        first = [self.new_client(i) for i in range(n1)]
        for client in first:
            self.expect(await self.dora("normal", client), "primary", MCLT_S)
            await self.paced()
        peer = self.standby_peer()

        def standby_knows_all() -> bool:
            table = peer.engine.table
            return all((le := table.get_ip(c.address)) is not None
                       and le.state is BindingState.ACTIVE
                       for c in first if c.address is not None)

        if await self.until(standby_knows_all, "the standby to learn every binding"):
            self.say(f"the standby has learnt all {len(first)} bindings (binding updates)")
        # hot-standby.md 1.5 (full lease once the partner knows it), unless the pair came to
        # NORMAL out of a recovery less than the MCLT ago (4.2: MCLT leases meanwhile)
        recovered = any(role == "primary" and to is ServerState.NORMAL
                        and frm is ServerState.RECOVER_DONE
                        for role, frm, to in self.transitions)
        renew_lease = MCLT_S if recovered else LEASE_S
        why = ("the primary came to NORMAL through RECOVER-DONE less than the MCLT ago, so "
               "MCLT leases (4.2)" if recovered else "the standby knows them: the full lease")
        self.say(f"two clients renew, relayed to both ({why}: {renew_lease}s expected)")
        for client in first[:2]:
            self.expect(await self.rebind("normal", client, "RENEW"), "primary", renew_lease)
            await self.paced()

        self.banner(f"STOPPING THE PRIMARY ({PRIMARY})")
        await self.servers["primary"].stop()
        self.say("primary stopped")
        await self.until(
            lambda: self.state("standby") is ServerState.COMMUNICATIONS_INTERRUPTED,
            "the standby to notice (COMMUNICATIONS-INTERRUPTED)")
        rebinders = first[2:2 + max(2, n1 // 3)]
        self.banner(f"OUTAGE: {len(rebinders)} clients rebind (REQUEST with ciaddr, relayed to "
                    f"both), {n2} new clients: the standby should answer, MCLT leases")
        stats0 = self.servers["standby"].stats
        for client in rebinders:
            self.expect(await self.rebind("outage", client), "standby", MCLT_S)
            await self.paced()
        stats = self.servers["standby"].stats
        seen = {k: stats[k] - stats0[k]
                for k in ("request_renewing", "request_rebinding", "drop_policy")}
        self.say("the standby's engine counted these relayed REQUESTs with ciaddr as: "
                 f"{seen['request_renewing']} RENEWING, {seen['request_rebinding']} REBINDING; "
                 f"{seen['drop_policy']} dropped by the failover policy")
        second = [self.new_client(n1 + i) for i in range(n2)]
        for client in second:
            self.expect(await self.dora("outage", client), "standby", MCLT_S,
                        self.reserve_at_start)
            await self.paced()
        self.show_reserve("left during the outage")

        self.banner(f"RESTARTING THE PRIMARY ({PRIMARY}, same store)")
        await self.start_server("primary")
        self.say("primary started; waiting for the pair to return to NORMAL")
        if not await self.both_normal():
            return False
        self.say("the pair is back in NORMAL")

        self.banner(f"AFTER RECOVERY: outage clients rebind, {n3} new clients (the primary "
                    f"should answer; MCLT leases for {MCLT_S}s after recovery)")
        for client in second + rebinders[:1]:
            self.expect(await self.rebind("after", client), "primary")
            await self.paced()
        third = [self.new_client(n1 + n2 + i) for i in range(n3)]
        for client in third:
            self.expect(await self.dora("after", client), "primary", MCLT_S)
            await self.paced()
        self.show_reserve("after recovery")
        self.say("(the primary tops the reserve up on entering NORMAL and then every "
                 f"{REBALANCE_INTERVAL_S:.0f}s, from what it knows of the standby's leases)")
        await asyncio.sleep(0.2)  # late duplicate answers, if any, arrive now
        both = self.relay.both_answered
        if both:
            self.failures.append(f"{both} client messages were answered by both servers")
        return (not self.failures and all(c.acks >= 1 for c in self.clients)
                and self.state("primary") is ServerState.NORMAL
                and self.state("standby") is ServerState.NORMAL)

    # -- the summary (after both servers stopped) -----------------------------------

    def summary(self) -> None:
        now = SystemClock().now()
        print()
        print(f"{'server':<8} {'address':<10} {'final state':<13} {'leases':>6} "
              f"{'active':>6} {'reserve':>7} {'OFFERs':>6} {'ACKs':>5} {'NAKs':>5}")
        for role, ip in (("primary", PRIMARY), ("standby", STANDBY)):
            store = open_store(self.configs[role].store)
            try:
                leases = store.load()
            finally:
                store.close()
            active = sum(1 for le in leases if le.is_active(now))
            backup = sum(1 for le in leases if le.state is BindingState.BACKUP)
            sent = self.relay.answered
            print(f"{role:<8} {ip:<10} {_state(self.final_states.get(role)):<13} "
                  f"{len(leases):>6} {active:>6} {backup:>7} "
                  f"{sent[ip, MessageType.OFFER]:>6} {sent[ip, MessageType.ACK]:>5} "
                  f"{sent[ip, MessageType.NAK]:>5}")
        print("(leases: records in the store, reopened after the stop; OFFERs/ACKs/NAKs: "
              "answers the relay received from that server)")
        print()
        print(f"{'phase':<8} {'exchanges':>9} {'by primary':>10} {'by standby':>10} "
              f"{'nobody':>6}  lease times")
        for phase in ("normal", "outage", "after"):
            rows = [a for a in self.answers if a.phase == phase]
            who = Counter(a.server for a in rows)
            times = sorted({a.lease_s for a in rows if a.lease_s is not None})
            print(f"{phase:<8} {len(rows):>9} {who['primary']:>10} {who['standby']:>10} "
                  f"{who['nobody']:>6}  {', '.join(f'{t}s' for t in times)}")


def _pair_main(args: argparse.Namespace) -> int:
    fo_ports = {PRIMARY: args.failover_port, STANDBY: args.failover_port}
    with tempfile.TemporaryDirectory(prefix="tandem-demo-") as tmp:
        demo = PairDemo(args.port, fo_ports, args.clients, tmp, args.pace)
        for role, config in demo.configs.items():
            problems = check(config)
            if problems:
                print(f"the demo's {role} configuration is invalid:\n  " + "\n  ".join(problems))
                return 1
        try:
            ok = asyncio.run(asyncio.wait_for(demo.run(), timeout=120))
        except OSError as exc:
            print(f"demo could not start: {exc}", file=sys.stderr)
            return 1
        demo.summary()
    return verdict(demo, ok)


def verdict(demo: PairDemo, ok: bool) -> int:
    """Print the closing lines; the exit code: 0 only if every client exchange got its ACK
    and both servers ended in NORMAL."""
    acked = sum(1 for c in demo.clients if c.acks)
    print(f"\n{acked}/{len(demo.clients)} clients got an ACK; every exchange: "
          f"{sum(1 for a in demo.answers if a.server != 'nobody')}/{len(demo.answers)} "
          f"answered; final states: primary {_state(demo.final_states.get('primary'))}, "
          f"standby {_state(demo.final_states.get('standby'))}")
    for surprise in demo.surprises:
        print(f"NOTE (differs from docs/hot-standby.md): {surprise}")
    for failure in demo.failures:
        print(f"FAILED: {failure}")
    return 0 if ok and not demo.failures else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tandem.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--single", action="store_true",
                        help="the single-server demo (one server, two relays)")
    parser.add_argument("--port", type=int, default=6767, help="DHCP port (unprivileged)")
    parser.add_argument("--failover-port", type=int, default=6647,
                        help="failover TCP port, on 127.0.0.1 and 127.0.0.5")
    parser.add_argument("--clients", type=int, default=None,
                        help="simulated clients (pair: 40, single: 60)")
    parser.add_argument("--pace", type=float, default=0.1,
                        help="seconds between client exchanges in the pair demo")
    parser.add_argument("--verbose", "-v", action="store_true", help="show the servers' log")
    args = parser.parse_args(argv)
    setup_logging(logging.INFO if args.verbose else logging.WARNING)
    if args.single:
        return _single_main(args.port, args.clients or 60)
    args.clients = args.clients or 40
    return _pair_main(args)


if __name__ == "__main__":
    sys.exit(main())
