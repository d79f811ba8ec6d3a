"""Hub and spoke in the simulator: several LANs (sites), a hub server on every one of them
with one failover relationship per site, and the sites' own servers and clients.

* :func:`add_lan` makes another broadcast domain (a site's LAN) in a :class:`Simulation`;
  :func:`add_server_on` / :func:`add_client_on` put a server / client on it (the
  simulation's own ``add_server`` / ``add_client`` use its first LAN).
* :class:`HubServer` is a :class:`~tandem.sim.server.SimServer` with an interface (an
  address) on several LANs: a client message is handled with the receiving interface's
  address (which selects the client's subnet, as in ``tandem.service``) and answered on
  that LAN. Its stack is built by :func:`hub_stack`: one engine and a
  :class:`~tandem.failover.relationships.FailoverSet` (one peer per relationship).
* :func:`link_relationship` is a failover link between one relationship of the hub and
  the partner server of that relationship; each link carries only that relationship's
  bytes, and each relationship hears only its own link come up and go down.

Everything else (commits before ACKs and before failover bytes, crashes, invariants after
every step) is the ordinary simulator's.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from ipaddress import IPv4Address
from typing import TYPE_CHECKING

from tandem.config.schema import Config
from tandem.dhcp.engine import Engine
from tandem.failover.policy import Policy
from tandem.failover.relationships import FailoverSet
from tandem.leases.model import Lease
from tandem.sim.client import RFC2131, Profile, SimClient
from tandem.sim.network import Frame, Lan, PeerLink
from tandem.sim.server import SERVER_PORT, MemoryStore, SimServer, Stack, build_engine

if TYPE_CHECKING:
    from tandem.dhcp.types import Reply
    from tandem.sim.world import Simulation

__all__ = [
    "HubServer",
    "add_client_on",
    "add_hub",
    "add_lan",
    "add_server_on",
    "hub_stack",
    "link_relationship",
]

_NAME = struct.Struct("!B")
_LEN = struct.Struct("!I")


class HubPeers:
    """The hub's stack peer: every relationship's peer behind the simulator's one-peer
    surface. Bytes of several relationships travel to ``SimServer._send_peer`` as one
    blob of (name, length, bytes) records, which :class:`HubServer` splits per link."""

    def __init__(self, fs: FailoverSet) -> None:
        self.fs = fs
        self.server: HubServer | None = None  # set when the hub installs its stack

    def get_timer(self) -> float | None:
        return self.fs.get_timer()

    def handle_timer(self, now: float) -> None:
        self.fs.handle_timer(now)

    def receive_data(self, data: bytes, now: float) -> None:
        raise RuntimeError("the hub's bytes arrive per relationship (HubServer.rel_receive)")

    def take_changed(self) -> list[Lease]:
        return self.fs.take_changed()

    def take_lazy(self) -> list[Lease]:
        return self.fs.take_lazy()

    def hold_updates(self, addresses: Iterable[IPv4Address]) -> None:
        self.fs.hold_updates(addresses)

    def release_updates(self, addresses: Iterable[IPv4Address], now: float) -> None:
        self.fs.release_updates(addresses, now)

    def data_to_send(self) -> bytes:
        out = b""
        for rel in self.fs.relationships:
            data = rel.peer.data_to_send()
            if data:
                name = rel.name.encode()
                out += _NAME.pack(len(name)) + name + _LEN.pack(len(data)) + data
        return out

    def close_requested(self) -> bool:
        hub = self.server
        for rel in self.fs.relationships:
            if rel.peer.close_requested() and hub is not None:
                hub.close_link(rel.name, "closed by peer")
        return False  # the hub closed the relationship's own link itself


def _split(blob: bytes) -> Iterator[tuple[str, bytes]]:
    i = 0
    while i < len(blob):
        (n,) = _NAME.unpack_from(blob, i)
        name = blob[i + 1 : i + 1 + n].decode()
        i += 1 + n
        (size,) = _LEN.unpack_from(blob, i)
        i += _LEN.size
        yield name, blob[i : i + size]
        i += size


def hub_stack(config: Config, store: MemoryStore, now: float) -> Stack:
    """A :data:`~tandem.sim.server.StackFactory` for a server in several relationships:
    what ``tandem.service`` builds (one engine, one peer per relationship)."""
    engines: list[Engine] = []

    def make_engine(policy: Policy) -> Engine:
        engines.append(build_engine(config, policy, store, now))
        return engines[-1]

    fs = FailoverSet(config, store, now, make_engine)
    return Stack(engines[0], HubPeers(fs))


class _Iface:
    """The hub on one LAN (a LAN node)."""

    port = SERVER_PORT

    def __init__(self, hub: HubServer, lan: Lan, ip: IPv4Address) -> None:
        self.hub = hub
        self.lan = lan
        self.ip = ip
        self.name = hub.name
        self.hwaddr = b"\x02\xfe" + ip.packed

    def owns(self, ip: IPv4Address) -> bool:
        return ip == self.ip

    def is_up(self) -> bool:
        return self.hub.up

    def receive(self, frame: Frame, now: float) -> None:
        self.hub.receive_on(self, frame, now)


class _RelEnd:
    """One relationship's end of a failover link at the hub (a peer-link end)."""

    def __init__(self, hub: HubServer, relationship: str) -> None:
        self.hub = hub
        self.relationship = relationship
        self.name = f"{hub.name}/{relationship}"

    def is_up(self) -> bool:
        return self.hub.up

    def peer_connected(self, now: float) -> None:
        self.hub.rel_event(self.relationship, "connection_made", now)

    def peer_disconnected(self, now: float) -> None:
        self.hub.rel_event(self.relationship, "connection_lost", now)

    def peer_receive(self, data: bytes, now: float) -> None:
        self.hub.rel_receive(self.relationship, data, now)


class HubServer(SimServer):
    """A server with an interface on several LANs and a failover link per relationship."""

    def __init__(
        self,
        sim: Simulation,
        name: str,
        ifaces: list[tuple[Lan, IPv4Address | str]],
        config: Config,
        *,
        factory: Callable[[Config, MemoryStore, float], Stack] = hub_stack,
        commit_s: float = 0.002,
    ) -> None:
        if not ifaces:
            raise ValueError("a hub needs at least one interface")
        first_lan, first_ip = ifaces[0]
        super().__init__(sim.sched, sim.trace, first_lan, name, IPv4Address(first_ip), config,
                         factory, commit_s)
        self.ifaces = [_Iface(self, lan, IPv4Address(ip)) for lan, ip in ifaces]
        self.links: dict[str, PeerLink] = {}
        self.ends: dict[str, _RelEnd] = {}

    @property
    def failover(self) -> FailoverSet:
        peer = self.peer
        if not isinstance(peer, HubPeers):
            raise RuntimeError(f"hub {self.name} is down")
        return peer.fs

    # ------------------------------------------------------------------ life cycle

    def start(self, now: float) -> None:
        was_up = self.up
        super().start(now)
        if was_up:
            return
        peer = self.peer
        if isinstance(peer, HubPeers):
            peer.server = self
        if self.lives > 1:
            for rel, link in self.links.items():
                link.end_restarted(self.ends[rel], now)

    def crash(self, now: float | None = None) -> None:
        when = self.sched.now if now is None else now
        was_up = self.up
        super().crash(when)
        if was_up:
            for rel, link in self.links.items():
                link.end_crashed(self.ends[rel], when)

    # ------------------------------------------------------------------ DHCP on several LANs

    @contextmanager
    def _on(self, iface: _Iface) -> Iterator[None]:
        """Handle/send as the interface on ``iface``'s LAN (address, LAN name)."""
        saved = (self.lan, self.ip)
        self.lan, self.ip = iface.lan, iface.ip
        try:
            yield
        finally:
            self.lan, self.ip = saved

    def receive_on(self, iface: _Iface, frame: Frame, now: float) -> None:
        with self._on(iface):
            self.receive(frame, now)

    def _send_reply(self, r: Reply, now: float, handled: float | None = None) -> None:
        iface = next((i for i in self.ifaces if i.lan.name == r.interface), self.ifaces[0])
        with self._on(iface):
            super()._send_reply(r, now, handled)

    def owns(self, ip: IPv4Address) -> bool:
        return any(i.ip == ip for i in self.ifaces)

    # ------------------------------------------------------------------ relationships

    def rel_event(self, relationship: str, what: str, now: float) -> None:
        if not self.up or self.stack is None:
            return
        peer = self.failover.relationship(relationship).peer
        getattr(peer, what)(self.local(now))
        self._finish(now, [], [])

    def rel_receive(self, relationship: str, data: bytes, now: float) -> None:
        if not self.up or self.stack is None:
            return
        self.failover.relationship(relationship).peer.receive_data(data, self.local(now))
        self._finish(now, [], [])

    def close_link(self, relationship: str, reason: str) -> None:
        link = self.links.get(relationship)
        if link is not None:
            link.close(self.ends[relationship], self.sched.now, reason)

    def _send_peer(self, data: bytes, now: float) -> None:
        for rel, part in _split(data):
            link = self.links.get(rel)
            if link is not None:
                link.send(self.ends[rel], part, now)


# ---------------------------------------------------------------------- building


def add_lan(sim: Simulation, name: str) -> Lan:
    """Another LAN (broadcast domain) in ``sim``."""
    return Lan(sim.sched, sim.trace, name)


def _register(sim: Simulation, server: SimServer, start: bool) -> None:
    server.on_ack.append(sim.invariants.ack_sent)
    sim.servers[server.name] = server
    sim._server_list.append(server)
    if start:
        server.start(sim.sched.now)


def add_server_on(
    sim: Simulation,
    lan: Lan,
    name: str,
    ip: IPv4Address | str,
    config: Config,
    *,
    factory: Callable[[Config, MemoryStore, float], Stack],
    start: bool = True,
) -> SimServer:
    """A server on ``lan`` (its invariants are checked with the simulation's others)."""
    s = SimServer(sim.sched, sim.trace, lan, name, IPv4Address(ip), config, factory)
    lan.attach(s)
    _register(sim, s, start)
    return s


def add_hub(
    sim: Simulation,
    name: str,
    ifaces: list[tuple[Lan, IPv4Address | str]],
    config: Config,
    *,
    start: bool = True,
) -> HubServer:
    """A hub with an address on each of ``ifaces``' LANs, built by :func:`hub_stack`."""
    hub = HubServer(sim, name, ifaces, config)
    for iface in hub.ifaces:
        iface.lan.attach(iface)
    _register(sim, hub, start)
    return hub


def add_client_on(
    sim: Simulation,
    lan: Lan,
    name: str,
    *,
    profile: Profile = RFC2131,
    hwaddr: bytes | None = None,
    start_at: float | None = 0.0,
) -> SimClient:
    """A client on ``lan``, started at run time ``start_at`` (``None``: not started)."""
    n = len(sim.clients) + 1
    hw = hwaddr if hwaddr is not None else bytes((0x02, 0x00, 0x00, 0x01, n >> 8, n & 0xFF))
    c = SimClient(sim.sched, sim.trace, lan, name, hw, profile, None)
    c.powered = False
    c.on_give_up.append(sim.invariants.client_gave_up)
    lan.attach(c)
    sim.clients[name] = c
    sim._client_list.append(c)
    if start_at is not None:
        sim.at(start_at, lambda now: c.start(now))
    return c


def link_relationship(
    sim: Simulation,
    hub: HubServer,
    relationship: str,
    partner: SimServer,
    *,
    describe: Callable[[bytes], str] | None = None,
) -> PeerLink:
    """The failover link of ``relationship`` between the hub and its partner server."""
    end = _RelEnd(hub, relationship)
    link = PeerLink(sim.sched, sim.trace, partner, end, describe=describe)
    partner.peer_link = link
    hub.links[relationship] = link
    hub.ends[relationship] = end
    sim.links.append(link)
    sim.sched.at(sim.sched.now, lambda now: link.start(), "peer-link-start")
    return link
