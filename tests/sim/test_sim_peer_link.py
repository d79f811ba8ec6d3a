"""The failover slot of the simulator, driven by a toy line-protocol peer: connection events,
crash resets, partitions holding bytes back, fragmentation, bytes waiting for commits."""

from __future__ import annotations

from ipaddress import IPv4Address

from tandem.config.schema import Config
from tandem.leases.model import BindingState, Lease
from tandem.sim import MemoryStore, Simulation, Stack, build_engine, simple_config
from tandem.sim.server import StackFactory

A = IPv4Address("192.0.2.1")
B = IPv4Address("192.0.2.2")


class ToyPeer:
    """Sends HELLO on connect, PING every 10 s, answers every line with ACK <line>.
    A line ``SET <n>`` makes it write a lease (to be committed) before it acknowledges."""

    def __init__(self, name: str, store: MemoryStore, now: float) -> None:
        self.name = name
        self.store = store
        self.out = bytearray()
        self.buf = b""
        self.lines: list[str] = []
        self.events: list[str] = []
        self.connected = False
        self.next_ping: float | None = None
        self.changed: list[Lease] = []

    def get_timer(self) -> float | None:
        return self.next_ping if self.connected else None

    def handle_timer(self, now: float) -> None:
        if self.next_ping is not None and now >= self.next_ping:
            self.out += b"PING\n"
            self.next_ping = now + 10

    def receive_data(self, data: bytes, now: float) -> None:
        self.buf += data
        while b"\n" in self.buf:
            line, self.buf = self.buf.split(b"\n", 1)
            text = line.decode()
            self.lines.append(text)
            if text.startswith("SET "):
                n = int(text[4:])
                self.changed.append(
                    Lease(IPv4Address(f"192.0.2.{n}"), 1, BindingState.FREE, start=now)
                )
            if not text.startswith("ACK"):
                self.out += b"ACK " + line + b"\n"

    def data_to_send(self) -> bytes:
        data, self.out = bytes(self.out), bytearray()
        return data

    def connection_made(self, now: float) -> None:
        self.events.append("up")
        self.connected = True
        self.next_ping = now + 10
        self.out += f"HELLO {self.name}\n".encode()

    def connection_lost(self, now: float) -> None:
        self.events.append("down")
        self.connected = False
        self.buf = b""

    def take_changed(self) -> list[Lease]:
        ch, self.changed = self.changed, []
        return ch


def factory(name: str) -> StackFactory:
    def build(config: Config, store: MemoryStore, now: float) -> Stack:
        return Stack(build_engine(config, None, store, now), ToyPeer(name, store, now))

    return build


def pair(seed: int = 1, *, reconnect_s: float = 5.0, fragment: bool = False) -> Simulation:
    sim = Simulation(seed)
    sim.add_server(
        "a", A, simple_config(A, pool=("192.0.2.100", "192.0.2.149")), factory=factory("a")
    )
    sim.add_server(
        "b", B, simple_config(B, pool=("192.0.2.150", "192.0.2.199")), factory=factory("b")
    )
    sim.link_peers("a", "b", reconnect_s=reconnect_s, fragment=fragment)
    return sim


def peer(sim: Simulation, name: str) -> ToyPeer:
    p = sim.servers[name].peer
    assert isinstance(p, ToyPeer)
    return p


def test_peers_connect_and_exchange_bytes_in_order() -> None:
    sim = pair()
    sim.run_until(25)
    a, b = peer(sim, "a"), peer(sim, "b")
    assert a.events == ["up"] and b.events == ["up"]
    assert a.lines == ["HELLO b", "ACK HELLO a", "PING", "ACK PING", "PING", "ACK PING"]
    assert sim.trace.of_kind("peer-rx", "a") and sim.trace.of_kind("peer-tx", "b")


def test_crash_resets_the_partner_and_restart_reconnects_with_a_fresh_peer() -> None:
    sim = pair(reconnect_s=5.0)
    sa = sim.servers["a"]
    sim.run_until(12)
    old_a = peer(sim, "a")
    sim.at(12.5, lambda now: sa.crash(now))
    sim.at(20, lambda now: sa.restart(now))
    sim.run_until(13)
    assert peer(sim, "b").events == ["up", "down"]  # kill -9: the kernel resets the connection
    sim.run_until(40)
    new_a = peer(sim, "a")
    assert new_a is not old_a and new_a.events == ["up"]
    assert peer(sim, "b").events == ["up", "down", "up"]
    link = sim.links[0]
    assert link.connected and link.generation == 2
    assert "HELLO b" in new_a.lines


def test_a_partition_holds_bytes_back_and_heal_delivers_them_in_order() -> None:
    sim = pair(fragment=True)
    link = sim.links[0]
    sim.at(5, lambda now: link.partition())
    sim.at(35, lambda now: link.heal())
    sim.run_until(34)
    a = peer(sim, "a")
    assert a.lines == ["HELLO b", "ACK HELLO a"]  # PINGs at 10, 20, 30 held back
    sim.run_until(36)
    assert a.lines[2:5] == ["PING", "PING", "PING"]
    assert a.events == ["up"]  # a partition tells nobody anything


def test_peer_bytes_leave_only_after_the_commit_of_their_step() -> None:
    sim = Simulation(2)
    sim.add_server("a", A, simple_config(A), factory=factory("a"), commit_s=0.5)
    sim.add_server("b", B, simple_config(B), factory=factory("b"), commit_s=0.5)
    sim.link_peers("a", "b")
    sim.run_until(1)
    sb = sim.servers["b"]
    sim.at(2, lambda now: sim.links[0].send(sim.servers["a"], b"SET 42\n", now))
    sim.run_until(4)
    assert sb.store.leases[IPv4Address("192.0.2.42")].state is BindingState.FREE
    ev = [e for e in sim.trace.events if e.node == "b" and e.kind in ("commit", "peer-tx")]
    kinds = [(e.kind, e.t) for e in ev if e.t >= 2]
    assert kinds[0][0] == "commit" and kinds[1][0] == "peer-tx"
    assert kinds[0][1] == kinds[1][1] > 2.5  # the ACK waited 0.5 s for the commit
    # b crashing between receiving and committing loses the change and its ACK.
    sim.at(5, lambda now: sim.links[0].send(sim.servers["a"], b"SET 43\n", now))
    sim.at(5.2, lambda now: sb.crash(now))
    sim.run_until(7)
    assert IPv4Address("192.0.2.43") not in sb.store.leases
    assert "ACK SET 43" not in peer(sim, "a").lines
