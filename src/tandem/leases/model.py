"""The lease record shared by the engine, the stores and (later) the failover peer."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from ipaddress import IPv4Address


class BindingState(IntEnum):
    """Binding states, numbered as draft-ietf-dhc-failover-12 §5.2 / option 'binding-status'."""

    FREE = 1
    ACTIVE = 2
    EXPIRED = 3
    RELEASED = 4
    ABANDONED = 5  # declined or otherwise unusable; ``end`` is the end of probation
    RESET = 6
    BACKUP = 7


@dataclass(slots=True, init=False)  # the __init__ written out: see wire/dhcp.py DhcpMessage
class Lease:
    """One address binding. Times are seconds since the epoch (floats)."""

    address: IPv4Address
    subnet_id: int
    state: BindingState = BindingState.FREE
    hwaddr: bytes = b""
    htype: int = 1
    client_id: bytes | None = None
    hostname: str | None = None
    start: float = 0.0
    end: float = 0.0  # lease end (ACTIVE) or end of probation (ABANDONED)
    cltt: float = 0.0  # client last transaction time
    # failover bookkeeping (draft-12 §7): potential expiration sent to the partner (tstp)
    # and acknowledged by it (tsfp); zero when no partner is configured.
    tstp: float = 0.0
    tsfp: float = 0.0
    relay_info: bytes | None = None  # option 82 as last received

    def __init__(
        self,
        address: IPv4Address,
        subnet_id: int,
        state: BindingState = BindingState.FREE,
        hwaddr: bytes = b"",
        htype: int = 1,
        client_id: bytes | None = None,
        hostname: str | None = None,
        start: float = 0.0,
        end: float = 0.0,
        cltt: float = 0.0,
        tstp: float = 0.0,
        tsfp: float = 0.0,
        relay_info: bytes | None = None,
    ) -> None:
        self.address = address
        self.subnet_id = subnet_id
        self.state = state
        self.hwaddr = hwaddr
        self.htype = htype
        self.client_id = client_id
        self.hostname = hostname
        self.start = start
        self.end = end
        self.cltt = cltt
        self.tstp = tstp
        self.tsfp = tsfp
        self.relay_info = relay_info

    def copy(self) -> Lease:
        # what dataclasses.replace(self) gives, without its per-field introspection (~4x
        # faster; the failover peer copies a lease per BNDACK)
        return Lease(
            self.address, self.subnet_id, self.state, self.hwaddr, self.htype, self.client_id,
            self.hostname, self.start, self.end, self.cltt, self.tstp, self.tsfp,
            self.relay_info,
        )

    def is_active(self, now: float) -> bool:
        return self.state is BindingState.ACTIVE and self.end > now
