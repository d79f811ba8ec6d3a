"""The only failover API the DHCP engine calls.

The engine asks three questions — may I answer this client, may I allocate this address,
how long may this lease be — and reports every lease it changes. Standalone servers use
:class:`StandalonePolicy`, which says yes to everything and caps nothing; the failover
peer will provide a policy that applies the hot-standby / load-balance answer rules and
the MCLT.

A policy may also answer a fourth, cheaper question once per allocation (optional,
:class:`UsableStates`): which kinds of available address may I take from *now*. The engine
keeps FREE, BACKUP and reusable (EXPIRED/RELEASED/RESET) addresses in separate queues and
pops only from the kinds named, so a server that may not use the partner's addresses never
touches them (a primary in NORMAL used to pop, be refused and push back up to 64 of the
standby's BACKUP reserve per DISCOVER). Every address popped is still checked with
``may_allocate``. A policy without the method is asked about every address, as before.
"""

from __future__ import annotations

from enum import Enum
from typing import Protocol

from tandem.leases.model import BindingState, Lease
from tandem.wire.dhcp import DhcpMessage


class RequestKind(Enum):
    """What a client message is, as RFC 2131 §4.3 distinguishes them."""

    DISCOVER = "discover"
    SELECTING = "selecting"  # REQUEST with server-id
    INIT_REBOOT = "init-reboot"  # REQUEST with requested-ip, no server-id, no ciaddr
    RENEWING = "renewing"  # REQUEST with ciaddr, unicast
    REBINDING = "rebinding"  # REQUEST with ciaddr, broadcast
    RELEASE = "release"
    DECLINE = "decline"
    INFORM = "inform"


#: Every available state, in the order a server that may use them all takes them (FREE,
#: then BACKUP, then other clients' expired/released/reset addresses).
ANY_AVAILABLE: tuple[BindingState, ...] = (
    BindingState.FREE,
    BindingState.BACKUP,
    BindingState.EXPIRED,
    BindingState.RELEASED,
    BindingState.RESET,
)


class Policy(Protocol):
    def may_answer(self, msg: DhcpMessage, kind: RequestKind, now: float) -> bool:
        """Whether this server should answer this message at all."""
        ...

    def may_allocate(self, lease: Lease, now: float) -> bool:
        """Whether this server may hand ``lease.address`` to a client it is not bound to."""
        ...

    def max_lease_time(self, lease: Lease, desired_s: int, now: float) -> int:
        """The lease time (seconds) this server may grant for ``lease`` (<= ``desired_s``)."""
        ...

    def lease_changed(self, lease: Lease, now: float) -> None:
        """Called after the engine changed ``lease`` (the peer queues a binding update)."""
        ...


class UsableStates(Protocol):
    """The optional allocation-kind query (see the module docstring)."""

    def usable_states(self, now: float) -> tuple[BindingState, ...]:
        """The available states (of :data:`ANY_AVAILABLE`) whose addresses this server may
        give to a new client now, in order of preference. Must name every state for which
        ``may_allocate`` could say yes now; it may name states whose addresses are then
        refused one by one (e.g. in PARTNER-DOWN, an address whose own PET is too recent).
        FREE also stands for never-used addresses; EXPIRED/RELEASED/RESET share one queue,
        taken at the position of the first of them."""
        ...


def usable_states(policy: Policy, now: float) -> tuple[BindingState, ...]:
    """``policy.usable_states(now)`` when the policy has it, else :data:`ANY_AVAILABLE`."""
    query = getattr(policy, "usable_states", None)
    if query is None:
        return ANY_AVAILABLE
    states: tuple[BindingState, ...] = query(now)
    return states


class StandalonePolicy:
    """No partner: answer everything, allocate anything free, grant what is configured."""

    def may_answer(self, msg: DhcpMessage, kind: RequestKind, now: float) -> bool:
        return True

    def may_allocate(self, lease: Lease, now: float) -> bool:
        return True

    def usable_states(self, now: float) -> tuple[BindingState, ...]:
        return ANY_AVAILABLE

    def max_lease_time(self, lease: Lease, desired_s: int, now: float) -> int:
        return desired_s

    def lease_changed(self, lease: Lease, now: float) -> None:
        return None
