"""Tandem: a DHCPv4 server built for failover."""

__version__ = "0.1.0"
