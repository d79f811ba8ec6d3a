"""The simulation: one scheduler, one client LAN, servers, clients, failover links, and the
invariants checked after every step.

Times given to :meth:`Simulation.at`, :meth:`Simulation.run_until` and found in the trace are
seconds since the start of the run; the cores see epoch seconds (``start + t``).
"""

from __future__ import annotations

from collections.abc import Callable
from ipaddress import IPv4Address, IPv4Network

from tandem.config.schema import Config, LeaseTimes, Pool, ServerSection, Subnet
from tandem.sim.client import RFC2131, Profile, SimClient
from tandem.sim.invariants import Invariants
from tandem.sim.network import Faults, Lan, PeerLink
from tandem.sim.scheduler import Handle, Scheduler
from tandem.sim.server import SimServer, StackFactory, standalone_stack
from tandem.sim.trace import Trace

__all__ = ["Simulation", "simple_config"]

DEFAULT_START = 1_700_000_000.0


def simple_config(
    server_ip: IPv4Address | str,
    *,
    prefix: str = "192.0.2.0/24",
    pool: tuple[str, str] = ("192.0.2.100", "192.0.2.199"),
    lease_s: int = 600,
    offer_hold_s: int = 30,
    min_lease_s: int = 10,
) -> Config:
    """One subnet, one pool, ``lease_s`` leases, server identifier ``server_ip``."""
    return Config(
        server=ServerSection(server_id=IPv4Address(server_ip)),
        lease=LeaseTimes(
            default_lease_time_s=lease_s,
            max_lease_time_s=max(lease_s, 86400),
            min_lease_time_s=min(min_lease_s, lease_s),
            offer_hold_s=offer_hold_s,
            decline_probation_s=600,
        ),
        subnets=[
            Subnet(
                prefix=IPv4Network(prefix),
                pools=[Pool(start=IPv4Address(pool[0]), end=IPv4Address(pool[1]))],
                lease_time_s=lease_s,
            )
        ],
    )


class Simulation:
    """Build a world, script faults and commands, run it in virtual time."""

    def __init__(
        self,
        seed: int = 0,
        *,
        start: float = DEFAULT_START,
        lan_faults: Faults | None = None,
        check: bool = True,
        trace: bool = True,
    ) -> None:
        self.seed = seed
        self.sched = Scheduler(seed, start)
        self.trace = Trace(start, enabled=trace)  # off: nothing recorded (see Trace)
        self.lan = Lan(self.sched, self.trace)
        if lan_faults is not None:
            self.lan.faults = lan_faults
        self.servers: dict[str, SimServer] = {}
        self.clients: dict[str, SimClient] = {}
        self.links: list[PeerLink] = []
        self._server_list: list[SimServer] = []
        self._client_list: list[SimClient] = []
        self.invariants = Invariants(self.trace, self._client_list, self._server_list, seed)
        if check:
            self.sched.after_step.append(self.invariants.check)
        self.rng = self.sched.rng("scenario")  # for tests that randomise their script

    # ------------------------------------------------------------------ building

    @property
    def start(self) -> float:
        return self.sched.start

    @property
    def now(self) -> float:
        """Seconds since the start of the run."""
        return self.sched.now - self.sched.start

    def add_server(
        self,
        name: str,
        ip: IPv4Address | str,
        config: Config | None = None,
        *,
        factory: StackFactory = standalone_stack,
        commit_s: float = 0.002,
        start: bool = True,
    ) -> SimServer:
        """A server on the LAN; started now unless ``start`` is false."""
        addr = IPv4Address(ip)
        cfg = config if config is not None else simple_config(addr)
        s = SimServer(self.sched, self.trace, self.lan, name, addr, cfg, factory, commit_s)
        s.on_ack.append(self.invariants.ack_sent)
        self.lan.attach(s)
        self.servers[name] = s
        self._server_list.append(s)
        if start:
            s.start(self.sched.now)
        return s

    def add_client(
        self,
        name: str,
        *,
        profile: Profile = RFC2131,
        hwaddr: bytes | None = None,
        client_id: bytes | None = None,
        start_at: float | None = 0.0,
    ) -> SimClient:
        """A client; started at run time ``start_at`` (``None``: not started)."""
        n = len(self.clients) + 1
        hw = hwaddr if hwaddr is not None else bytes((0x02, 0x00, 0x00, 0x00, n >> 8, n & 0xFF))
        c = SimClient(self.sched, self.trace, self.lan, name, hw, profile, client_id)
        c.powered = False
        c.on_give_up.append(self.invariants.client_gave_up)
        self.lan.attach(c)
        self.clients[name] = c
        self._client_list.append(c)
        if start_at is not None:
            self.at(start_at, lambda now: c.start(now))
        return c

    def link_peers(
        self,
        a: str,
        b: str,
        *,
        faults: Faults | None = None,
        stream: bool = True,
        fragment: bool = False,
        reconnect_s: float = 5.0,
        silent_crash: bool = False,
        describe: Callable[[bytes], str] | None = None,
    ) -> PeerLink:
        """A failover link between servers ``a`` and ``b`` (see :class:`PeerLink`); it
        connects at the current time when both servers are up."""
        sa, sb = self.servers[a], self.servers[b]
        link = PeerLink(
            self.sched,
            self.trace,
            sa,
            sb,
            faults=faults,
            stream=stream,
            fragment=fragment,
            reconnect_s=reconnect_s,
            silent_crash=silent_crash,
            describe=describe,
        )
        sa.peer_link = link
        sb.peer_link = link
        self.links.append(link)
        self.sched.at(self.sched.now, lambda now: link.start(), "peer-link-start")
        return link

    # ------------------------------------------------------------------ scripting

    def at(self, t: float, fn: Callable[[float], None], label: str = "script") -> Handle:
        """Run ``fn(now)`` at run time ``t`` (seconds since the start)."""
        return self.sched.at(self.sched.start + t, fn, label)

    def run_until(self, t: float) -> None:
        """Run to run time ``t``, checking the invariants after every step."""
        self.sched.run_until(self.sched.start + t)

    def run_for(self, dt: float) -> None:
        self.sched.run_until(self.sched.now + dt)

    def note(self, text: str) -> None:
        self.trace.add(self.sched.now, "note", "script", detail=text)
