"""The only failover API the DHCP engine calls.

The engine asks three questions — may I answer this client, may I allocate this address,
how long may this lease be — and reports every lease it changes. Standalone servers use
:class:`StandalonePolicy`, which says yes to everything and caps nothing; the failover
peer will provide a policy that applies the hot-standby / load-balance answer rules and
the MCLT.
"""

from __future__ import annotations

from enum import Enum
from typing import Protocol

from tandem.leases.model import Lease
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


class StandalonePolicy:
    """No partner: answer everything, allocate anything free, grant what is configured."""

    def may_answer(self, msg: DhcpMessage, kind: RequestKind, now: float) -> bool:
        return True

    def may_allocate(self, lease: Lease, now: float) -> bool:
        return True

    def max_lease_time(self, lease: Lease, desired_s: int, now: float) -> int:
        return desired_s

    def lease_changed(self, lease: Lease, now: float) -> None:
        return None
