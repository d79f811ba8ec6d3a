"""The engine's compiled view of the configured subnets: integer ranges, reservations by
client, merged option sets, and subnet lookup by address (O(log subnets))."""

from __future__ import annotations

import struct
from bisect import bisect_right
from dataclasses import dataclass, field
from ipaddress import IPv4Address

from tandem.config.schema import Config, Reservation, Subnet
from tandem.config.validate import parse_client_id, parse_hw_address
from tandem.dhcp.options import encode_option_set, merge_options
from tandem.errors import ConfigError
from tandem.leases.table import AddressPool, subtract_ranges
from tandem.wire.dhcp import OPT_HOSTNAME, OPT_SUBNET_MASK

__all__ = ["ReservationInfo", "SubnetInfo", "SubnetMap", "compile_subnets"]


@dataclass(slots=True, eq=False)
class ReservationInfo:
    """One reservation: its address (int), the client it is for, its merged options."""

    address: int
    ip: IPv4Address
    subnet_index: int
    hwaddr: bytes | None
    client_id: bytes | None
    hostname: str | None
    options: dict[int, bytes]


@dataclass(slots=True, eq=False)
class SubnetInfo:
    index: int  # position in the config
    id: int  # subnet id (config id or position + 1)
    prefix_lo: int
    prefix_hi: int
    mask: bytes
    pool: AddressPool
    options: dict[int, bytes]  # global < subnet, with option 1
    default_lease_s: int
    renew_s: int | None
    rebind_s: int | None
    by_client_id: dict[bytes, ReservationInfo] = field(default_factory=dict)
    by_hwaddr: dict[bytes, ReservationInfo] = field(default_factory=dict)
    last_exhausted_event: float | None = None
    has_reservations: bool = False

    def contains(self, a: int) -> bool:
        return self.prefix_lo <= a <= self.prefix_hi

    def reservation_for(self, client_id: bytes | None, hwaddr: bytes) -> ReservationInfo | None:
        """Reservation matched by client identifier first, then by hardware address."""
        if client_id is not None and self.by_client_id:
            r = self.by_client_id.get(client_id)
            if r is not None:
                return r
        if self.by_hwaddr:
            return self.by_hwaddr.get(hwaddr)
        return None


class SubnetMap:
    """All subnets, found by id, by an address inside them, or by a relay address."""

    def __init__(self, subnets: list[SubnetInfo], relays: dict[int, SubnetInfo]) -> None:
        self.all = subnets
        self.by_id = {s.id: s for s in subnets}
        self._sorted = sorted(subnets, key=lambda s: s.prefix_lo)
        self._los = [s.prefix_lo for s in self._sorted]
        self._relays = relays
        # Reserved addresses (of every subnet) -> their reservation.
        self.reserved: dict[int, ReservationInfo] = {}
        for s in subnets:
            for r in list(s.by_client_id.values()) + list(s.by_hwaddr.values()):
                self.reserved[r.address] = r

    def containing(self, a: int) -> SubnetInfo | None:
        i = bisect_right(self._los, a) - 1
        if i >= 0:
            s = self._sorted[i]
            if a <= s.prefix_hi:
                return s
        return None

    def for_relay(self, a: int) -> SubnetInfo | None:
        """The subnet a relay address (giaddr) selects: listed as a relay, or inside."""
        s = self._relays.get(a)
        if s is not None:
            return s
        return self.containing(a)


def _subnet_id(subnet: Subnet, index: int) -> int:
    return subnet.id if subnet.id is not None else index + 1


def _reservation(
    res: Reservation, path: str, index: int, base_opts: dict[int, bytes], problems: list[str]
) -> ReservationInfo | None:
    hw = cid = None
    try:
        if res.hw_address is not None:
            hw = parse_hw_address(res.hw_address)
        if res.client_id is not None:
            cid = parse_client_id(res.client_id)
    except ValueError as exc:
        problems.append(f"{path}: {exc}")
        return None
    own = encode_option_set(res.options)
    if res.hostname and OPT_HOSTNAME not in own:
        own[OPT_HOSTNAME] = res.hostname.encode("utf-8")
    return ReservationInfo(
        address=int(res.ip_address),
        ip=res.ip_address,
        subnet_index=index,
        hwaddr=hw,
        client_id=cid,
        hostname=res.hostname,
        options=merge_options(base_opts, own),
    )


def compile_subnets(config: Config) -> SubnetMap:
    """Compile ``config.subnets``; raises ConfigError for what the engine cannot use."""
    problems: list[str] = []
    global_opts = encode_option_set(config.options)
    subnets: list[SubnetInfo] = []
    relays: dict[int, SubnetInfo] = {}
    for i, sn in enumerate(config.subnets):
        net = sn.prefix
        lo, hi = int(net.network_address), int(net.broadcast_address)
        # Dynamic ranges: pools, clipped to the prefix, without the network and broadcast
        # addresses (prefixes up to /30) and without exclusions.
        edges = [(lo, lo), (hi, hi)] if net.prefixlen <= 30 else []
        pools = [(max(int(p.start), lo), min(int(p.end), hi)) for p in sn.pools]
        holes = [(int(e.start), int(e.end)) for e in sn.exclusions] + edges
        ranges = subtract_ranges(pools, holes)
        mask = struct.pack("!I", int(net.netmask))
        opts = merge_options({OPT_SUBNET_MASK: mask}, global_opts, encode_option_set(sn.options))
        info = SubnetInfo(
            index=i,
            id=_subnet_id(sn, i),
            prefix_lo=lo,
            prefix_hi=hi,
            mask=mask,
            pool=AddressPool(ranges),
            options=opts,
            default_lease_s=sn.lease_time_s or config.lease.default_lease_time_s,
            renew_s=sn.renew_time_s,
            rebind_s=sn.rebind_time_s,
        )
        for j, res in enumerate(sn.reservations):
            path = f"subnets[{i}].reservations[{j}]"
            if res.ip_address not in net:
                problems.append(f"{path}.ip_address: {res.ip_address} is outside {net}")
                continue
            r = _reservation(res, path, i, opts, problems)
            if r is None:
                continue
            if r.client_id is not None:
                info.by_client_id[r.client_id] = r
            if r.hwaddr is not None:
                info.by_hwaddr[r.hwaddr] = r
        info.has_reservations = bool(info.by_client_id or info.by_hwaddr)
        for ra in sn.relay_addresses:
            relays[int(ra)] = info
        subnets.append(info)
    if problems:
        raise ConfigError(problems)
    return SubnetMap(subnets, relays)
