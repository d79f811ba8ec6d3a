"""Typed configuration schema. Units are in the field names (``_s`` = seconds).

Only types and single-field rules live here; rules that relate fields to each other
(pool inside subnet, overlaps, duplicates) are in :mod:`tandem.config.validate`, so that
every problem is reported at once with its path.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, SecretStr, Tag, field_validator


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CustomOption(_Model):
    """Any DHCP option by code. Give exactly one of ``hex`` (raw value bytes) or ``value``
    (text parsed by the option registry's layout family for that code)."""

    code: int = Field(ge=1, le=254)
    hex: str | None = None
    value: str | int | list[str] | None = None


class OptionSet(_Model):
    """Options handed to clients. Named ones for the common cases, ``custom`` for the rest."""

    routers: list[IPv4Address] = []
    dns_servers: list[IPv4Address] = []
    domain_name: str | None = None
    ntp_servers: list[IPv4Address] = []
    custom: list[CustomOption] = []


class Pool(_Model):
    start: IPv4Address
    end: IPv4Address


class Reservation(_Model):
    """A fixed address for one client, matched by hardware address or client identifier."""

    ip_address: IPv4Address
    hw_address: str | None = None  # "00:11:22:33:44:55"
    client_id: str | None = None  # hex bytes, "01:00:11:22:33:44:55" or "0100112233..."
    hostname: str | None = None
    options: OptionSet = OptionSet()


class Subnet(_Model):
    id: int | None = Field(default=None, ge=1)  # defaults to position + 1
    prefix: IPv4Network
    pools: list[Pool] = []
    exclusions: list[Pool] = []
    reservations: list[Reservation] = []
    # Relay addresses (giaddr) outside ``prefix`` that should also select this subnet.
    relay_addresses: list[IPv4Address] = []
    lease_time_s: int | None = Field(default=None, ge=1)
    renew_time_s: int | None = Field(default=None, ge=1)  # T1; default 50 % of lease
    rebind_time_s: int | None = Field(default=None, ge=1)  # T2; default 87.5 % of lease
    options: OptionSet = OptionSet()

    @field_validator("prefix", mode="before")
    @classmethod
    def _prefix_without_host_bits(cls, value: object) -> object:
        # pydantic's own message for "192.0.2.1/24" is only "not a valid IPv4 network".
        if isinstance(value, str) and "/" in value:
            try:
                IPv4Network(value, strict=False)
            except ValueError:
                return value  # let pydantic report it
            try:
                IPv4Network(value)
            except ValueError:
                fixed = IPv4Network(value, strict=False)
                raise ValueError(f"{value} has host bits set (the network is {fixed})") from None
        return value


class LeaseTimes(_Model):
    default_lease_time_s: int = Field(default=3600, ge=1)
    max_lease_time_s: int = Field(default=86400, ge=1)
    min_lease_time_s: int = Field(default=10, ge=1)
    decline_probation_s: int = Field(default=86400, ge=0)
    offer_hold_s: int = Field(default=30, ge=1)  # how long an offered address is held


class StoreSection(_Model):
    backend: Literal["sqlite"] = "sqlite"
    path: str = "/var/lib/tandem/leases.db"
    # Group commit: start a store transaction at most once per this many milliseconds; the
    # changes of every message in between share it (ACKs wait for it). 0 = commit per burst.
    group_commit_window_ms: float = Field(default=2.0, ge=0, le=1000)


class LimitsSection(_Model):
    """Rate limits on client traffic (token buckets; see docs/reliability.md). A rate of 0
    turns that limit off."""

    # Each client (client identifier, else hardware address): DISCOVERs + REQUESTs per second
    client_rate_per_s: float = Field(default=2.0, ge=0)
    client_burst: int = Field(default=16, ge=1)
    # Each relay (giaddr; direct clients: per interface): messages from clients the server
    # has no record of, per second. Held offers to such clients stay below
    # relay_burst + relay_new_clients_per_s * lease.offer_hold_s.
    relay_new_clients_per_s: float = Field(default=2000.0, ge=0)
    relay_burst: int = Field(default=20000, ge=1)
    # Failover reserve guard: while a hot-standby server may allocate only from its BACKUP
    # reserve, the offers one relay holds on a subnet's reserve stay below this fraction of
    # it (at least 1). 0 turns the guard off.
    reserve_share_per_relay: float = Field(default=0.25, ge=0, le=1)
    # Memory bound: buckets kept (least recently used dropped first)
    max_tracked_clients: int = Field(default=65536, ge=1)
    max_tracked_relays: int = Field(default=4096, ge=1)


class ServerSection(_Model):
    # Server identifier (option 54). Defaults to the address of the first interface.
    server_id: IPv4Address | None = None
    interfaces: list[str] = []  # names to bind; empty = all
    listen_address: IPv4Address = IPv4Address("0.0.0.0")
    port: int = Field(default=67, ge=1, le=65535)
    client_port: int = Field(default=68, ge=1, le=65535)
    # Send replies to clients without an address via a packet socket (needs CAP_NET_RAW).
    raw_replies: bool = True
    # Exhaustion is logged at most once per this many seconds per subnet.
    log_burst_interval_s: float = Field(default=10.0, gt=0)
    # Operator control socket (Unix domain, mode 0600): `tandem status` / `partner-down`.
    # "" = none.
    control_socket: str = "/run/tandem/control.sock"


_U32 = 2**32 - 1  # failover option values are 32-bit on the wire

_ROLE_HINTS = {
    "standby": '"secondary" (the standby server of a hot-standby pair)',
    "active": '"primary" (the active server of a hot-standby pair)',
}


class FailoverSection(_Model):
    """One failover relationship (draft-ietf-dhc-failover-12) with one partner server.

    Both partners describe the relationship with the same values; only ``role``, the
    addresses and ``load_balance_percent`` (each side's own share) differ. Settings that only
    mean something in the other ``mode`` are rejected when given (see validate.py), so the
    defaults below are the values a server uses.
    """

    name: str  # relationship name, sent in CONNECT; byte-for-byte equal on both sides
    role: Literal["primary", "secondary"]
    mode: Literal["hot-standby", "load-balance"] = "hot-standby"
    peer_address: IPv4Address  # the partner's failover address (its listen_address)
    peer_port: int = Field(default=647, ge=1, le=65535)
    listen_address: IPv4Address  # this server's failover address (the partner's peer_address)
    listen_port: int = Field(default=647, ge=1, le=65535)
    mclt_s: int = Field(default=3600, ge=1, le=_U32)  # maximum client lead time
    # hot-standby: share of the free addresses the secondary (standby) holds in reserve
    reserve_percent: int = Field(default=5, ge=0, le=100)
    # load-balance: share of the clients (hash buckets) THIS server answers; partners add to 100
    load_balance_percent: int = Field(default=50, ge=0, le=100)
    # load-balance: also answer a DISCOVER outside our buckets once its secs exceeds this; 0 = never
    load_balance_max_seconds: int = Field(default=3, ge=0, le=65535)
    # automatic COMMUNICATIONS-INTERRUPTED -> PARTNER-DOWN after this long; None = operator only
    state_switchover_interval_s: int | None = Field(default=None, ge=1, le=_U32)
    # When the partner is not heard within 15 s of start-up: "wait" (serve nothing until it
    # answers or the operator declares partner-down; a server that was in PARTNER-DOWN
    # resumes it), "previous" (draft-12/ISC: resume the previous state; unsafe if the partner
    # was put in PARTNER-DOWN meanwhile) or "partner-down" (a partner never met: commissioning)
    startup_timeout_action: Literal["wait", "previous", "partner-down"] = "wait"
    shared_secret: SecretStr | None = None  # message digest key; never printed
    shared_secret_file: str | None = None  # or: a file holding it (trailing newline dropped)
    dialect: Literal["isc", "windows"] = "isc"
    max_unacked_updates: int = Field(default=100, ge=1, le=_U32)  # BNDUPDs in flight
    # tReceive: drop the link after this long without a message; None = 20 (isc) / 180 (windows)
    receive_timer_s: int | None = Field(default=None, ge=1, le=_U32)
    # tSend: send CONTACT after this long without sending; None = receive_timer_s // 3
    keepalive_interval_s: int | None = Field(default=None, ge=1, le=_U32)
    max_clock_skew_s: int = Field(default=60, ge=1, le=_U32)  # reject CONNECT beyond this
    subnets: list[int] | None = None  # subnet ids in the relationship; None = every subnet
    # Mutual TLS on the failover link (off unless all three are given; both partners must
    # agree): our certificate (PEM), its private key, and the CA bundle -- or simply the
    # partner's self-signed certificate -- the partner's certificate must verify against.
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    tls_ca_file: str | None = None

    @field_validator("role", mode="before")
    @classmethod
    def _windows_role_names(cls, value: object) -> object:
        # One spelling per role; the Windows words get a hint instead of a silent alias.
        if isinstance(value, str) and value in _ROLE_HINTS:
            raise ValueError(
                f'must be "primary" or "secondary", got "{value}"; use {_ROLE_HINTS[value]}'
            )
        return value


#: Tags of the two spellings of ``failover`` (pydantic puts them into error locations; the
#: validator drops them again so that problems read ``failover.role`` / ``failover[1].role``).
FAILOVER_TABLE_TAG = "[failover]"
FAILOVER_ARRAY_TAG = "[[failover]]"


def _failover_form(value: object) -> str:
    return FAILOVER_ARRAY_TAG if isinstance(value, list) else FAILOVER_TABLE_TAG


#: ``[failover]`` (one relationship, the original form) or ``[[failover]]`` (an array of
#: relationships, each with its own partner and ``subnets``; a server can be in several).
FailoverSetting = Annotated[
    Annotated[FailoverSection, Tag(FAILOVER_TABLE_TAG)]
    | Annotated[list[FailoverSection], Tag(FAILOVER_ARRAY_TAG)],
    Discriminator(_failover_form),
]


class Config(_Model):
    server: ServerSection = ServerSection()
    store: StoreSection = StoreSection()
    lease: LeaseTimes = LeaseTimes()
    limits: LimitsSection = LimitsSection()
    options: OptionSet = OptionSet()  # global options, overridden per subnet / reservation
    subnets: list[Subnet] = Field(default_factory=list)
    # absent = standalone server; a table = one relationship; an array = several
    failover: FailoverSetting | None = None
