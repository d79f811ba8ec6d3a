"""Lease model (DHCP fields + failover binding fields) and in-memory indexes."""

from tandem.leases.model import BindingState, Lease

__all__ = ["BindingState", "Lease"]
