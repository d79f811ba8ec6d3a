"""``make demo``: a real Tandem server on loopback, two simulated relays, ~60 clients.

No root needed: the server listens on 127.0.0.1 at an unprivileged port (6767), and the
two relays are UDP sockets on 127.0.0.2 and 127.0.0.3 at the same port (a server answers a
relay at ``giaddr:server-port``). Subnet A (192.0.2.0/24) is selected by relay 127.0.0.2,
subnet B (198.51.100.0/24) by relay 127.0.0.3. The lease store is SQLite in a temporary
directory. Exit code 0 only if every simulated client got its ACK.

    python -m tandem.demo [--port 6767] [--clients 60] [--verbose]
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
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network

from tandem.clock import SystemClock
from tandem.config import (
    Config,
    LeaseTimes,
    OptionSet,
    Pool,
    ServerSection,
    StoreSection,
    Subnet,
    check,
)
from tandem.errors import DecodeError
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

SERVER_IP = "127.0.0.1"
RELAYS = {"A": "127.0.0.2", "B": "127.0.0.3"}
TIMEOUT_S = 1.0
TRIES = 4


def demo_config(store_path: str, port: int) -> Config:
    return Config(
        server=ServerSection(
            listen_address=IPv4Address(SERVER_IP), port=port, client_port=port + 1,
            raw_replies=False,
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
    """A simulated relay agent: forwards client messages with giaddr set, matches replies
    to the waiting client by transaction id."""

    def __init__(self, name: str, address: str, server: tuple[str, int]) -> None:
        self.name = name
        self.address = IPv4Address(address)
        self.server = server
        self.transport: asyncio.DatagramTransport | None = None
        self.waiting: dict[int, asyncio.Future[DhcpMessage]] = {}
        self.malformed = 0

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        try:
            msg = decode(data)
        except DecodeError:
            self.malformed += 1
            return
        fut = self.waiting.pop(msg.xid, None)
        if fut is not None and not fut.done():
            fut.set_result(msg)

    def send(self, msg: DhcpMessage) -> None:
        assert self.transport is not None
        msg.giaddr = self.address
        msg.hops = 1
        self.transport.sendto(encode(msg), self.server)

    async def exchange(self, msg: DhcpMessage) -> DhcpMessage | None:
        """Send and wait for the reply with the same xid, retransmitting like a client."""
        loop = asyncio.get_running_loop()
        for _ in range(TRIES):
            fut: asyncio.Future[DhcpMessage] = loop.create_future()
            self.waiting[msg.xid] = fut
            self.send(msg)
            try:
                return await asyncio.wait_for(fut, TIMEOUT_S)
            except TimeoutError:
                self.waiting.pop(msg.xid, None)
        return None


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tandem.demo", description=__doc__)
    parser.add_argument("--port", type=int, default=6767)
    parser.add_argument("--clients", type=int, default=60)
    parser.add_argument("--verbose", "-v", action="store_true", help="show the server's log")
    args = parser.parse_args(argv)
    setup_logging(logging.INFO if args.verbose else logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="tandem-demo-") as tmp:
        store_path = os.path.join(tmp, "leases.db")
        demo = Demo(args.port, args.clients, store_path)
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


if __name__ == "__main__":
    sys.exit(main())
