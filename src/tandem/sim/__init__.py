"""Deterministic virtual-time simulator: real engines (and failover peers) as servers,
RFC 2131 clients, a faulty LAN and failover link, invariants checked after every step.

Quick start::

    sim = Simulation(seed=1)
    sim.add_server("s1", "192.0.2.1")
    for i in range(5):
        sim.add_client(f"c{i}")
    sim.run_until(3600)
    print(sim.trace.text())

Modules: :mod:`~tandem.sim.scheduler` (event queue), :mod:`~tandem.sim.network` (LAN and
peer link), :mod:`~tandem.sim.client`, :mod:`~tandem.sim.server`,
:mod:`~tandem.sim.invariants`, :mod:`~tandem.sim.trace`, :mod:`~tandem.sim.world`.
"""

from tandem.sim.client import (
    DHCLIENT,
    DHCPCD,
    RFC2131,
    UDHCPC,
    Binding,
    ClientState,
    Profile,
    SimClient,
)
from tandem.sim.invariants import AckRecord, Invariants, InvariantViolation, MCLTBound
from tandem.sim.network import Cut, Faults, Lan, PeerLink
from tandem.sim.scheduler import Scheduler, Timer
from tandem.sim.server import MemoryStore, SimPeer, SimServer, Stack, build_engine, standalone_stack
from tandem.sim.trace import DhcpInfo, Event, Trace
from tandem.sim.world import Simulation, simple_config

__all__ = [
    "DHCLIENT",
    "DHCPCD",
    "RFC2131",
    "UDHCPC",
    "AckRecord",
    "Binding",
    "ClientState",
    "Cut",
    "DhcpInfo",
    "Event",
    "Faults",
    "InvariantViolation",
    "Invariants",
    "Lan",
    "MCLTBound",
    "MemoryStore",
    "PeerLink",
    "Profile",
    "Scheduler",
    "SimClient",
    "SimPeer",
    "SimServer",
    "Simulation",
    "Stack",
    "Timer",
    "Trace",
    "build_engine",
    "simple_config",
    "standalone_stack",
]
