"""Rules that relate configuration fields to each other, and the loader that runs them.

:func:`load` / :func:`load_text` turn TOML into a :class:`~tandem.config.schema.Config` or raise
:class:`~tandem.errors.ConfigError` listing every problem at once, each as ``path: message``
(``subnets[0].pools[1].end: 192.0.3.9 is outside 192.0.2.0/24``). Type problems come from
pydantic (translated to plain words); when the types parse, :func:`check` adds every semantic
problem. Nothing here touches the network or creates files.
"""

from __future__ import annotations

import json
import re
import tomllib
import types
from collections.abc import Iterable, Sequence
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

from tandem.config.schema import (
    FAILOVER_ARRAY_TAG,
    FAILOVER_TABLE_TAG,
    Config,
    CustomOption,
    FailoverSection,
    OptionSet,
    Pool,
    Subnet,
)
from tandem.errors import ConfigError

__all__ = [
    "DEFAULT_RECEIVE_TIMER_S",
    "SERVER_CONTROLLED_OPTIONS",
    "check",
    "check_partners",
    "custom_option_bytes",
    "failover_subnets",
    "keepalive_interval_s",
    "load",
    "load_text",
    "parse_client_id",
    "parse_hex",
    "parse_hw_address",
    "pool_address_count",
    "read_shared_secret",
    "receive_timer_s",
    "relationship_config",
    "relationships",
    "shared_relationships",
    "subnet_id",
]

# Options the server computes itself; a config may not set them (code -> what it is / hint).
SERVER_CONTROLLED_OPTIONS: dict[int, str] = {
    0: "pad",
    255: "end",
    51: "lease time; use lease_time_s",
    52: "option overload",
    53: "DHCP message type",
    54: "server identifier; use server.server_id",
    58: "renewal (T1) time; use renew_time_s",
    59: "rebinding (T2) time; use rebind_time_s",
    61: "client identifier",
    82: "relay agent information",
}

# Named OptionSet fields and the option code each one produces.
_NAMED_OPTION_CODES = {"routers": 3, "dns_servers": 6, "domain_name": 15, "ntp_servers": 42}

_IFNAMSIZ = 15  # Linux interface names are at most 15 bytes (IFNAMSIZ - 1)

# Settings whose values never appear in a problem (``failover.shared_secret`` and
# ``failover[i].shared_secret``).
_SECRET_FIELD = ("failover", "shared_secret")
_UNION_TAGS = frozenset({FAILOVER_TABLE_TAG, FAILOVER_ARRAY_TAG})


def _is_secret_path(path: Sequence[int | str]) -> bool:
    named = tuple(e for e in path if isinstance(e, str))
    return named == _SECRET_FIELD


# --------------------------------------------------------------------------------------------
# Helpers for other code


def subnet_id(cfg: Config, index: int) -> int:
    """The id of ``cfg.subnets[index]``: its explicit ``id``, else its position + 1."""
    explicit = cfg.subnets[index].id
    return explicit if explicit is not None else index + 1


def _q(text: str) -> str:
    """A string quoted the way TOML writes it."""
    return json.dumps(text)


def parse_hex(text: str) -> bytes:
    """Hex bytes as ``"0a0b0c"``, ``"0a:0b:0c"`` or ``"0a 0b 0c"``; ``""`` is zero bytes.

    Raises ValueError with a readable message.
    """
    s = text.strip()
    if s.lower().startswith("0x"):
        s = s[2:]
    if ":" in s:
        parts = s.split(":")
        if not all(re.fullmatch(r"[0-9A-Fa-f]{1,2}", p) for p in parts):
            raise ValueError(f"{_q(text)} is not hex octets separated by ':'")
        return bytes(int(p, 16) for p in parts)
    s = "".join(s.split())
    if not re.fullmatch(r"(?:[0-9A-Fa-f]{2})*", s):
        if re.fullmatch(r"[0-9A-Fa-f]*", s):
            raise ValueError(f"{_q(text)} has an odd number of hex digits")
        raise ValueError(f"{_q(text)} is not hex")
    return bytes.fromhex(s)


def parse_hw_address(text: str) -> bytes:
    """A hardware address as hex octets separated by ``:`` or ``-`` (1 to 16 octets)."""
    sep = ":" if ":" in text else "-"
    parts = text.strip().split(sep)
    if not 1 <= len(parts) <= 16 or not all(re.fullmatch(r"[0-9A-Fa-f]{1,2}", p) for p in parts):
        raise ValueError(
            f"{_q(text)} is not a hardware address (hex octets separated by ':' or '-', "
            "e.g. 00:11:22:33:44:55)"
        )
    return bytes(int(p, 16) for p in parts)


def parse_client_id(text: str) -> bytes:
    """A client identifier (option 61) as hex, with or without ':' (at least 2 bytes)."""
    try:
        value = parse_hex(text)
    except ValueError:
        raise ValueError(
            f"{_q(text)} is not a client identifier (hex bytes, e.g. 01:00:11:22:33:44:55)"
        ) from None
    if len(value) < 2:
        raise ValueError(f"{_q(text)} is too short: a client identifier has at least 2 bytes")
    return value


def _parse_option_value(code: int, value: str | int | list[str]) -> bytes:
    """The option registry's parser for ``value`` text (raises ValueError for humans).

    Imported on use: ``config`` is importable by every layer, so it must not pull ``wire`` in
    at import time (a later ``wire -> config`` import would then be a cycle).
    """
    from tandem.wire.dhcp_options import parse_config_value

    return parse_config_value(code, value)


def custom_option_bytes(option: CustomOption) -> bytes:
    """The raw value of a validated custom option (hex, or ``value`` via the registry)."""
    if option.hex is not None:
        return parse_hex(option.hex)
    if option.value is None:
        raise ValueError(f"option {option.code}: give one of hex or value")
    return _parse_option_value(option.code, option.value)


def _ranges(pools: Iterable[Pool]) -> list[tuple[int, int]]:
    """Sorted, merged inclusive integer ranges of the pools that are well-formed."""
    spans = sorted((int(p.start), int(p.end)) for p in pools if p.start <= p.end)
    merged: list[tuple[int, int]] = []
    for lo, hi in spans:
        if merged and lo <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
        else:
            merged.append((lo, hi))
    return merged


def pool_address_count(subnet: Subnet) -> int:
    """How many addresses the subnet's pools hold, after exclusions (overlaps counted once)."""
    total = 0
    excluded = _ranges(subnet.exclusions)
    for lo, hi in _ranges(subnet.pools):
        total += hi - lo + 1
        for elo, ehi in excluded:
            a, b = max(lo, elo), min(hi, ehi)
            if a <= b:
                total -= b - a + 1
    return total


# --------------------------------------------------------------------------------------------
# Loading


def load(path: str | Path) -> Config:
    """Read and validate a TOML config file; raise ConfigError listing every problem."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise ConfigError([f"cannot read file: {exc.strerror or exc}"]) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError([f"file is not UTF-8 text (byte {exc.start})"]) from None
    return load_text(text, source=str(p))


def load_text(text: str, source: str = "<string>") -> Config:
    """Parse and validate TOML text; raise ConfigError listing every problem.

    ``source`` names the text in the exception's note (the problems themselves carry only
    setting paths, so that a caller can prefix them with the file name).
    """
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        err = ConfigError([_toml_problem(str(exc))])
        err.add_note(f"in {source}")
        raise err from None
    try:
        cfg = Config.model_validate(data)
    except ValidationError as exc:
        err = ConfigError(_type_problems(exc, data))
        err.add_note(f"in {source}")
        raise err from None
    problems = check(cfg)
    if problems:
        err = ConfigError(problems)
        err.add_note(f"in {source}")
        raise err
    return cfg


_TOML_POS = re.compile(
    r"^(?P<msg>.*?)\s*\(at (?:line (?P<l>\d+), column (?P<c>\d+)|end of document)\)$"
)


def _toml_problem(message: str) -> str:
    m = _TOML_POS.match(message)
    if m is None:
        return f"TOML syntax error: {message}"
    msg = m.group("msg")
    msg = msg[:1].lower() + msg[1:]
    where = f"line {m.group('l')}, column {m.group('c')}" if m.group("l") else "end of file"
    return f"{where}: TOML syntax error: {msg}"


# ---- pydantic errors -> "path: message"


def _is_union(tp: object) -> bool:
    return get_origin(tp) in (Union, types.UnionType)


def _schema_path(loc: Sequence[int | str]) -> tuple[list[int | str], object | None]:
    """Map a pydantic ``loc`` onto the schema. Returns the path (without the union member tags
    pydantic inserts) and, when the error sits inside a union, that union type (the path then
    stops at the union's field)."""
    tp: object = Config
    path: list[int | str] = []
    i = 0
    while i < len(loc):
        if get_origin(tp) is Annotated:
            tp = get_args(tp)[0]
            continue
        if _is_union(tp):
            members = [a for a in get_args(tp) if a is not type(None)]
            if len(members) == 1:
                tp = members[0]
                continue
            picked = _tagged_member(members, loc[i])
            if picked is None:
                return path, tp
            tp = picked
            continue
        elem = loc[i]
        if isinstance(tp, type) and issubclass(tp, BaseModel) and isinstance(elem, str):
            field = tp.model_fields.get(elem)
            tp = field.annotation if field is not None else None
        elif get_origin(tp) is list and isinstance(elem, int):
            tp = get_args(tp)[0]
        else:
            tp = None
        path.append(elem)
        i += 1
    return path, None


def _tagged_member(members: list[object], elem: int | str) -> object | None:
    """In a tagged union (``failover``: a table or an array of tables) the member the data
    chose, told by the next path element (the tag itself is dropped before)."""
    for m in members:
        inner = get_args(m)[0] if get_origin(m) is Annotated else m
        if isinstance(elem, int) and get_origin(inner) is list:
            return inner
        if isinstance(elem, str) and isinstance(inner, type) and issubclass(inner, BaseModel):
            return inner
    return None


def format_path(path: Iterable[int | str]) -> str:
    """``("subnets", 0, "pools")`` -> ``"subnets[0].pools"``."""
    out = ""
    for elem in path:
        if isinstance(elem, int):
            out += f"[{elem}]"
        else:
            out += f".{elem}" if out else str(elem)
    return out or "(top level)"


def _show(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a table"
    text = json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def _describe(tp: object) -> str:
    if _is_union(tp):
        parts = [_describe(a) for a in get_args(tp) if a is not type(None)]
        return ", ".join(parts[:-1]) + " or " + parts[-1] if len(parts) > 1 else parts[0]
    if get_origin(tp) is list:
        (inner,) = get_args(tp)
        return f"a list of {_describe(inner).removeprefix('a ').removeprefix('an ')}s"
    names = {
        str: "a string",
        int: "an integer",
        float: "a number",
        bool: "true or false",
        IPv4Address: "an IPv4 address",
        IPv4Network: "an IPv4 network",
    }
    if isinstance(tp, type) and tp in names:
        return names[tp]
    return "a table" if isinstance(tp, type) and issubclass(tp, BaseModel) else str(tp)


def _lookup(data: object, path: Sequence[int | str]) -> object:
    for elem in path:
        if isinstance(data, dict) and isinstance(elem, str):
            data = data.get(elem)
        elif isinstance(data, list) and isinstance(elem, int) and 0 <= elem < len(data):
            data = data[elem]
        else:
            return None
    return data


def _message(err: Any) -> str:
    kind: str = err["type"]
    ctx: dict[str, Any] = err.get("ctx") or {}
    got = _show(err.get("input"))
    simple = {
        "extra_forbidden": "unknown setting",
        "missing": "required setting is missing",
    }
    if kind in simple:
        return simple[kind]
    expected = {
        "int_parsing": "an integer",
        "int_type": "an integer",
        "int_from_float": "a whole number",
        "float_parsing": "a number",
        "float_type": "a number",
        "bool_parsing": "true or false",
        "bool_type": "true or false",
        "string_type": "a string",
        "list_type": "a list",
        "model_type": "a table",
        "dict_type": "a table",
        "model_attributes_type": "a table",
    }
    if kind in expected:
        return f"expected {expected[kind]}, got {got}"
    bounds = {
        "greater_than_equal": ("ge", "must be at least"),
        "greater_than": ("gt", "must be greater than"),
        "less_than_equal": ("le", "must be at most"),
        "less_than": ("lt", "must be less than"),
    }
    if kind in bounds:
        key, words = bounds[kind]
        return f"{words} {_show(ctx.get(key))}, got {got}"
    if kind == "literal_error":
        return f"must be {str(ctx.get('expected', '')).replace(chr(39), chr(34))}, got {got}"
    if kind == "ip_v4_address":
        return f"{got} is not a valid IPv4 address"
    if kind == "ip_v4_network":
        return f"{got} is not a valid IPv4 network (expected address/prefix-length)"
    msg: str = err.get("msg", kind)
    msg = msg.removeprefix("Value error, ")
    if msg.startswith("Input should"):
        msg = "should" + msg.removeprefix("Input should") + f", got {got}"
    return msg


def _type_problems(exc: ValidationError, data: object) -> list[str]:
    problems: list[str] = []
    for err in exc.errors():
        loc = [e for e in err["loc"] if not (isinstance(e, str) and e in _UNION_TAGS)]
        path, union = _schema_path(loc)
        if _is_secret_path(path):
            msg = "expected a string (the value is not shown)"
        elif union is not None:
            value = _lookup(data, path)
            msg = f"expected {_describe(union)}, got {_show(value)}"
        else:
            msg = _message(err)
        line = f"{format_path(path)}: {msg}"
        if line not in problems:
            problems.append(line)
    return problems


# --------------------------------------------------------------------------------------------
# Semantic checks


def check(cfg: Config) -> list[str]:
    """Every semantic problem of a config whose types already parsed (empty list = valid)."""
    problems: list[str] = []
    problems += _check_lease_times(cfg)
    problems += _check_subnet_ids(cfg)
    problems += _check_subnet_overlaps(cfg)
    for i, subnet in enumerate(cfg.subnets):
        problems += _check_subnet(cfg, i, subnet)
    problems += _check_pool_overlaps(cfg)
    problems += _check_relays(cfg)
    problems += _check_option_set("options", cfg.options)
    for i, subnet in enumerate(cfg.subnets):
        problems += _check_option_set(f"subnets[{i}].options", subnet.options)
        for j, res in enumerate(subnet.reservations):
            problems += _check_option_set(f"subnets[{i}].reservations[{j}].options", res.options)
    problems += _check_interfaces(cfg)
    problems += _check_store(cfg)
    problems += _check_limits(cfg)
    problems += _check_failover(cfg)
    return problems


def _check_limits(cfg: Config) -> list[str]:
    """A client's DISCOVER and REQUEST arrive within milliseconds: a client bucket that
    holds less than both would delay every new client by a retransmission (4 s or more)."""
    lim = cfg.limits
    if lim.client_rate_per_s > 0 and lim.client_burst < 2:
        return [
            f"limits.client_burst: {lim.client_burst} is below 2 (a client's DISCOVER and "
            "REQUEST come together); use 0 for client_rate_per_s to turn the limit off"
        ]
    return []


def _check_lease_times(cfg: Config) -> list[str]:
    lt = cfg.lease
    out: list[str] = []
    if lt.min_lease_time_s > lt.max_lease_time_s:
        # No default can satisfy both; report the root cause only.
        return [
            f"lease.min_lease_time_s: {lt.min_lease_time_s} is above "
            f"lease.max_lease_time_s ({lt.max_lease_time_s})"
        ]
    if lt.default_lease_time_s < lt.min_lease_time_s:
        out.append(
            f"lease.default_lease_time_s: {lt.default_lease_time_s} is below "
            f"lease.min_lease_time_s ({lt.min_lease_time_s})"
        )
    if lt.default_lease_time_s > lt.max_lease_time_s:
        out.append(
            f"lease.default_lease_time_s: {lt.default_lease_time_s} is above "
            f"lease.max_lease_time_s ({lt.max_lease_time_s})"
        )
    return out


def _check_subnet_ids(cfg: Config) -> list[str]:
    out: list[str] = []
    seen: dict[int, int] = {}
    for i, subnet in enumerate(cfg.subnets):
        sid = subnet_id(cfg, i)
        j = seen.get(sid)
        if j is None:
            seen[sid] = i
            continue
        earlier_explicit = cfg.subnets[j].id is not None
        if subnet.id is None:
            who = f"subnets[{j}].id" if earlier_explicit else f"subnets[{j}]"
            out.append(
                f"subnets[{i}]: its implicit id {sid} (position + 1) is already the id of "
                f"{who}; give it an explicit id"
            )
        elif earlier_explicit:
            out.append(f"subnets[{i}].id: {sid} is already the id of subnets[{j}]")
        else:
            out.append(
                f"subnets[{i}].id: {sid} is already the implicit id (position + 1) of "
                f"subnets[{j}]; give that subnet an explicit id"
            )
    return out


def _check_subnet_overlaps(cfg: Config) -> list[str]:
    out: list[str] = []
    spans = sorted(
        (int(s.prefix.network_address), int(s.prefix.broadcast_address), i)
        for i, s in enumerate(cfg.subnets)
    )
    widest: tuple[int, int, int] | None = None
    for lo, hi, i in spans:
        if widest is not None and lo <= widest[1]:
            j = widest[2]
            out.append(
                f"subnets[{i}].prefix: {cfg.subnets[i].prefix} overlaps subnets[{j}].prefix "
                f"({cfg.subnets[j].prefix})"
            )
        if widest is None or hi > widest[1]:
            widest = (lo, hi, i)
    return sorted(out)


def _edge_name(ip: IPv4Address, net: IPv4Network) -> str | None:
    """'network' / 'broadcast' if ``ip`` is that address of ``net`` (not for /31 and /32)."""
    if net.prefixlen >= 31:
        return None
    if ip == net.network_address:
        return "network"
    if ip == net.broadcast_address:
        return "broadcast"
    return None


def _check_address(path: str, ip: IPv4Address, net: IPv4Network, edges: bool = True) -> list[str]:
    if ip not in net:
        return [f"{path}: {ip} is outside {net}"]
    edge = _edge_name(ip, net) if edges else None
    if edge is not None:
        return [f"{path}: {ip} is the {edge} address of {net}"]
    return []


def _check_range(path: str, pool: Pool, net: IPv4Network, edges: bool = True) -> list[str]:
    out = _check_address(f"{path}.start", pool.start, net, edges)
    out += _check_address(f"{path}.end", pool.end, net, edges)
    if pool.start > pool.end:
        out.append(f"{path}: start {pool.start} is after end {pool.end}")
    return out


def _check_subnet(cfg: Config, i: int, subnet: Subnet) -> list[str]:
    out: list[str] = []
    base = f"subnets[{i}]"
    net = subnet.prefix
    for k, pool in enumerate(subnet.pools):
        out += _check_range(f"{base}.pools[{k}]", pool, net)
    for k, excl in enumerate(subnet.exclusions):
        # Excluding the network/broadcast address is harmless; only "outside" and order matter.
        out += _check_range(f"{base}.exclusions[{k}]", excl, net, edges=False)
    out += _check_reservations(base, subnet)
    out += _check_t1_t2(cfg, base, subnet)
    return out


def _check_reservations(base: str, subnet: Subnet) -> list[str]:
    out: list[str] = []
    by_ip: dict[IPv4Address, int] = {}
    by_hw: dict[bytes, int] = {}
    by_cid: dict[bytes, int] = {}
    for j, res in enumerate(subnet.reservations):
        path = f"{base}.reservations[{j}]"
        out += _check_address(f"{path}.ip_address", res.ip_address, subnet.prefix)
        if res.ip_address in by_ip:
            out.append(
                f"{path}.ip_address: {res.ip_address} is already reserved by "
                f"{base}.reservations[{by_ip[res.ip_address]}]"
            )
        else:
            by_ip[res.ip_address] = j
        if res.hw_address is None and res.client_id is None:
            out.append(f"{path}: needs hw_address or client_id to identify the client")
        if res.hw_address is not None:
            try:
                hw = parse_hw_address(res.hw_address)
            except ValueError as exc:
                out.append(f"{path}.hw_address: {exc}")
            else:
                if hw in by_hw:
                    out.append(
                        f"{path}.hw_address: {res.hw_address} already has a reservation "
                        f"({base}.reservations[{by_hw[hw]}])"
                    )
                else:
                    by_hw[hw] = j
        if res.client_id is not None:
            try:
                cid = parse_client_id(res.client_id)
            except ValueError as exc:
                out.append(f"{path}.client_id: {exc}")
            else:
                if cid in by_cid:
                    out.append(
                        f"{path}.client_id: {res.client_id} already has a reservation "
                        f"({base}.reservations[{by_cid[cid]}])"
                    )
                else:
                    by_cid[cid] = j
    return out


def _check_t1_t2(cfg: Config, base: str, subnet: Subnet) -> list[str]:
    out: list[str] = []
    lt = cfg.lease
    lease = subnet.lease_time_s
    if lease is not None and not lt.min_lease_time_s <= lease <= lt.max_lease_time_s:
        out.append(
            f"{base}.lease_time_s: {lease} is outside lease.min_lease_time_s.."
            f"lease.max_lease_time_s ({lt.min_lease_time_s}..{lt.max_lease_time_s})"
        )
    if subnet.renew_time_s is None and subnet.rebind_time_s is None:
        return out
    effective = lease if lease is not None else lt.default_lease_time_s
    lease_words = "lease_time_s" if lease is not None else "lease.default_lease_time_s"
    t1, t2 = subnet.renew_time_s, subnet.rebind_time_s
    if t1 is not None and t1 >= effective:
        out.append(
            f"{base}.renew_time_s: {t1} must be less than the lease time "
            f"({lease_words} = {effective})"
        )
    if t2 is not None and t2 >= effective:
        out.append(
            f"{base}.rebind_time_s: {t2} must be less than the lease time "
            f"({lease_words} = {effective})"
        )
    if t1 is not None and t2 is not None:
        if t1 >= t2:
            out.append(f"{base}.renew_time_s: {t1} must be less than rebind_time_s ({t2})")
    elif t1 is not None and t1 < effective:
        default_t2 = effective * 7 // 8
        if t1 >= default_t2:
            out.append(
                f"{base}.renew_time_s: {t1} must be less than the default rebind time "
                f"({default_t2}, 87.5 % of {effective}); set rebind_time_s too"
            )
    elif t2 is not None and t2 < effective:
        default_t1 = effective // 2
        if t2 <= default_t1:
            out.append(
                f"{base}.rebind_time_s: {t2} must be more than the default renew time "
                f"({default_t1}, 50 % of {effective}); set renew_time_s too"
            )
    return out


def _check_pool_overlaps(cfg: Config) -> list[str]:
    """Pools overlapping each other, within a subnet and across subnets."""
    spans: list[tuple[int, int, str, Pool]] = []
    for i, subnet in enumerate(cfg.subnets):
        for k, pool in enumerate(subnet.pools):
            if pool.start <= pool.end:
                spans.append((int(pool.start), int(pool.end), f"subnets[{i}].pools[{k}]", pool))
    spans.sort(key=lambda s: (s[0], s[1]))
    out: list[str] = []
    widest: tuple[int, int, str, Pool] | None = None
    for span in spans:
        lo, hi, path, _pool = span
        if widest is not None and lo <= widest[1]:
            other = widest[3]
            out.append(f"{path}: overlaps {widest[2]} ({other.start}-{other.end})")
        if widest is None or hi > widest[1]:
            widest = span
    return sorted(out)


def _check_relays(cfg: Config) -> list[str]:
    out: list[str] = []
    owner: dict[IPv4Address, tuple[int, int]] = {}
    for i, subnet in enumerate(cfg.subnets):
        for k, addr in enumerate(subnet.relay_addresses):
            path = f"subnets[{i}].relay_addresses[{k}]"
            if addr in owner:
                oi, ok = owner[addr]
                out.append(
                    f"{path}: {addr} is already a relay address of subnets[{oi}] "
                    f"(subnets[{oi}].relay_addresses[{ok}])"
                )
                continue
            owner[addr] = (i, k)
            for j, other in enumerate(cfg.subnets):
                if j != i and addr in other.prefix:
                    out.append(
                        f"{path}: {addr} is inside subnets[{j}].prefix ({other.prefix}), "
                        "which that subnet already answers for"
                    )
    return out


def _check_option_set(base: str, opts: OptionSet) -> list[str]:
    out: list[str] = []
    if opts.domain_name is not None and not opts.domain_name.strip():
        out.append(f"{base}.domain_name: must not be empty")
    named = {
        code: name
        for name, code in _NAMED_OPTION_CODES.items()
        if getattr(opts, name) not in (None, [])
    }
    seen: dict[int, int] = {}
    for k, opt in enumerate(opts.custom):
        path = f"{base}.custom[{k}]"
        hint = SERVER_CONTROLLED_OPTIONS.get(opt.code)
        if hint is not None:
            out.append(
                f"{path}.code: option {opt.code} ({hint}) is set by the server and cannot be "
                "configured"
            )
        if opt.code in named:
            out.append(f"{path}.code: option {opt.code} is already set by {base}.{named[opt.code]}")
        if opt.code in seen:
            out.append(
                f"{path}.code: option {opt.code} is already set by {base}.custom[{seen[opt.code]}]"
            )
        else:
            seen[opt.code] = k
        if opt.hex is not None and opt.value is not None:
            out.append(f"{path}: give exactly one of hex or value, not both")
        elif opt.hex is None and opt.value is None:
            out.append(f"{path}: give one of hex or value")
        elif opt.hex is not None:
            try:
                parse_hex(opt.hex)
            except ValueError as exc:
                out.append(f"{path}.hex: {exc}")
        elif opt.value is not None and hint is None:
            try:
                _parse_option_value(opt.code, opt.value)
            except ValueError as exc:
                out.append(f"{path}.value: {exc}")
    return out


def _check_interfaces(cfg: Config) -> list[str]:
    out: list[str] = []
    seen: set[str] = set()
    for k, name in enumerate(cfg.server.interfaces):
        path = f"server.interfaces[{k}]"
        if not name:
            out.append(f"{path}: must not be empty")
        elif len(name.encode()) > _IFNAMSIZ:
            out.append(f"{path}: {_q(name)} is longer than {_IFNAMSIZ} characters")
        elif "/" in name or any(c.isspace() for c in name) or name in (".", ".."):
            out.append(f"{path}: {_q(name)} is not an interface name (no '/' or spaces)")
        elif name in seen:
            out.append(f"{path}: {_q(name)} is listed twice")
        seen.add(name)
    return out


def _check_store(cfg: Config) -> list[str]:
    """Mild: only things that certainly stop the store from being created. Permissions are
    not judged here (the checking user is often not the one that runs the server)."""
    raw = cfg.store.path
    if not raw.strip():
        return ["store.path: must not be empty"]
    path = Path(raw)
    if path.is_dir():
        return [f"store.path: {raw} is a directory; give a file name"]
    for parent in path.absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                return [f"store.path: cannot create {raw}: {parent} is not a directory"]
            break
    return []


# --------------------------------------------------------------------------------------------
# Failover


# failover-protocol.md §6.8: ISC's max-response-delay default; Windows' 3-minute tReceive.
DEFAULT_RECEIVE_TIMER_S = {"isc": 20, "windows": 180}
_NAME_MAX = 64
_SECRET_MIN_BYTES = 8
_SECRET_MAX_BYTES = 256
_WINDOWS_CONTACT_S = 60  # Windows sends CONTACT every 60 s and expects one as often
_WINDOWS_MIN_RECEIVE_S = 90  # failover-protocol.md §3.3: "comfortably exceed 60 s"
_HOT_STANDBY_ONLY = ("reserve_percent",)
_LOAD_BALANCE_ONLY = ("load_balance_percent", "load_balance_max_seconds")


def receive_timer_s(fo: FailoverSection) -> int:
    """tReceive: the configured ``receive_timer_s``, else the dialect's default."""
    if fo.receive_timer_s is not None:
        return fo.receive_timer_s
    return DEFAULT_RECEIVE_TIMER_S[fo.dialect]


def keepalive_interval_s(fo: FailoverSection) -> int:
    """tSend: the configured ``keepalive_interval_s``, else a third of tReceive (at least 1)."""
    if fo.keepalive_interval_s is not None:
        return fo.keepalive_interval_s
    return max(1, receive_timer_s(fo) // 3)


def relationships(cfg: Config) -> list[FailoverSection]:
    """Every failover relationship of the config, in config order: none without ``failover``,
    one for a ``[failover]`` table, each entry of a ``[[failover]]`` array."""
    fo = cfg.failover
    if fo is None:
        return []
    if isinstance(fo, FailoverSection):
        return [fo]
    return list(fo)


def relationship_config(cfg: Config, rel: FailoverSection) -> Config:
    """``cfg`` as one relationship sees it: the same subnets, ``failover`` = ``rel`` alone.
    The failover peer of one relationship is built from this view."""
    return cfg.model_copy(update={"failover": rel})


def _relationship_subnets(cfg: Config, fo: FailoverSection) -> list[int]:
    if fo.subnets is None:
        return list(range(len(cfg.subnets)))
    wanted = set(fo.subnets)
    return [i for i in range(len(cfg.subnets)) if subnet_id(cfg, i) in wanted]


def failover_subnets(cfg: Config) -> list[int]:
    """Indexes into ``cfg.subnets`` of the subnets in a failover relationship (config order).

    Every subnet when the only relationship has no ``subnets``; none without ``failover``;
    with several relationships, the union of their ``subnets``.
    """
    seen: set[int] = set()
    for fo in relationships(cfg):
        seen.update(_relationship_subnets(cfg, fo))
    return sorted(seen)


def _read_secret_file(raw: str) -> str:
    """The secret in a file: UTF-8 text without its trailing line break(s).

    Raises OSError or UnicodeDecodeError.
    """
    return Path(raw).read_bytes().decode("utf-8").rstrip("\r\n")


def read_shared_secret(fo: FailoverSection) -> str | None:
    """The shared secret (from ``shared_secret`` or ``shared_secret_file``), None if neither.

    Raises ConfigError (with the setting's path, never the secret) if the file cannot be read.
    """
    if fo.shared_secret is not None:
        return fo.shared_secret.get_secret_value()
    if fo.shared_secret_file is None:
        return None
    try:
        return _read_secret_file(fo.shared_secret_file)
    except OSError as exc:
        raise ConfigError(
            [
                f"failover.shared_secret_file: cannot read {fo.shared_secret_file}: "
                f"{exc.strerror or exc}"
            ]
        ) from None
    except UnicodeDecodeError:
        raise ConfigError(
            [f"failover.shared_secret_file: {fo.shared_secret_file} is not UTF-8 text"]
        ) from None


_PATH_WORD = re.compile(r"(?<![\w.\[])failover(?=[.:\[])")


def _at(index: int | None, problems: list[str]) -> list[str]:
    """Problems of one relationship, with ``failover.`` paths made ``failover[index].`` when
    the config has an array of relationships."""
    if index is None:
        return problems
    return [_PATH_WORD.sub(f"failover[{index}]", p) for p in problems]


def _check_failover(cfg: Config) -> list[str]:
    fo = cfg.failover
    if fo is None:
        return []
    if isinstance(fo, FailoverSection):
        return _check_relationship(cfg, fo)
    if not fo:
        return ["failover: an empty list of relationships; remove it or add [[failover]] tables"]
    out: list[str] = []
    for i, rel in enumerate(fo):
        whole = len(fo) == 1 or rel.subnets is not None  # else: "subnets required" below
        out += _at(i, _check_relationship(cfg, rel, check_subnets=whole))
    return out + _check_relationships_together(cfg, fo)


def _check_relationships_together(cfg: Config, rels: list[FailoverSection]) -> list[str]:
    """Several relationships: unique names, each its own subnets, partners told apart."""
    out: list[str] = []
    several = len(rels) > 1
    names: dict[str, int] = {}
    partners: dict[tuple[IPv4Address, int], int] = {}
    inbound: dict[tuple[IPv4Address, int, IPv4Address], int] = {}
    listeners: dict[tuple[IPv4Address, int], int] = {}
    owner: dict[int, int] = {}
    for i, rel in enumerate(rels):
        base = f"failover[{i}]"
        j = names.setdefault(rel.name, i)
        if j != i:
            out.append(f"{base}.name: {_q(rel.name)} is already the name of failover[{j}]")
        j = partners.setdefault((rel.peer_address, rel.peer_port), i)
        if j != i:
            out.append(
                f"{base}.peer_address: {rel.peer_address}:{rel.peer_port} is already the partner "
                f"of failover[{j}] ({_q(rels[j].name)}); each relationship has its own partner"
            )
        else:
            endpoint = (rel.listen_address, rel.listen_port)
            j = listeners.setdefault(endpoint, i)
            if j != i and _tls_settings(rels[j]) != _tls_settings(rel):
                out.append(
                    f"{base}: shares its listen address and port ({rel.listen_address}:"
                    f"{rel.listen_port}) with failover[{j}] ({_q(rels[j].name)}) but not its "
                    "tls_* settings; one listening socket has one TLS identity"
                )
            key = (rel.listen_address, rel.listen_port, rel.peer_address)
            j = inbound.setdefault(key, i)
            if j != i:
                out.append(
                    f"{base}.peer_address: {rel.peer_address} is also the partner address of "
                    f"failover[{j}] ({_q(rels[j].name)}) on the same listen address and port "
                    f"({rel.listen_address}:{rel.listen_port}): an incoming connection could not "
                    "be told apart; give one of them its own listen_address or listen_port"
                )
        if several and rel.subnets is None:
            out.append(
                f"{base}.subnets: required when there are several relationships (list the "
                "subnet ids this one covers)"
            )
            continue
        by_id = {subnet_id(cfg, k): k for k in range(len(cfg.subnets))}
        for k, sid in enumerate(rel.subnets or []):
            if sid not in by_id:
                continue  # reported by the relationship's own check
            j = owner.setdefault(sid, i)
            if j != i:
                out.append(
                    f"{base}.subnets[{k}]: subnet {sid} ({cfg.subnets[by_id[sid]].prefix}) is "
                    f"already in failover[{j}] ({_q(rels[j].name)}); a subnet belongs to at most "
                    "one relationship"
                )
    return out


def _tls_settings(fo: FailoverSection) -> tuple[str | None, str | None, str | None]:
    return (fo.tls_cert_file, fo.tls_key_file, fo.tls_ca_file)


def _check_relationship(cfg: Config, fo: FailoverSection, check_subnets: bool = True) -> list[str]:
    out = _check_failover_name(fo)
    for field in ("listen_address", "peer_address"):
        ip: IPv4Address = getattr(fo, field)
        if ip.is_unspecified or ip.is_multicast or ip == IPv4Address("255.255.255.255"):
            out.append(f"failover.{field}: {ip} is not a unicast address")
    if fo.peer_address == fo.listen_address:
        out.append(
            f"failover.peer_address: {fo.peer_address} is also failover.listen_address; "
            "the partner is another server with an address of its own"
        )
    other_mode = "load-balance" if fo.mode == "hot-standby" else "hot-standby"
    for field in _LOAD_BALANCE_ONLY if fo.mode == "hot-standby" else _HOT_STANDBY_ONLY:
        if field in fo.model_fields_set:
            out.append(
                f'failover.{field}: only used in {other_mode} mode (mode is "{fo.mode}"); remove it'
            )
    out += _check_failover_timers(fo)
    out += _check_failover_secret(fo)
    out += _check_failover_tls(fo)
    if check_subnets:
        out += _check_failover_subnets(cfg, fo)
    return out


def _check_failover_name(fo: FailoverSection) -> list[str]:
    name = fo.name
    if not name.strip():
        return ["failover.name: must not be empty"]
    if len(name) > _NAME_MAX:
        return [f"failover.name: is {len(name)} characters long; at most {_NAME_MAX}"]
    if name != name.strip():
        return [
            f"failover.name: {_q(name)} starts or ends with a space (partners compare names "
            "byte for byte)"
        ]
    if not name.isprintable():
        return [f"failover.name: {_q(name)} contains a control character"]
    return []


def _check_failover_timers(fo: FailoverSection) -> list[str]:
    out: list[str] = []
    recv, keep = receive_timer_s(fo), keepalive_interval_s(fo)
    recv_words = (
        f"failover.receive_timer_s ({recv})"
        if fo.receive_timer_s is not None
        else f"failover.receive_timer_s ({recv}, the {fo.dialect} default)"
    )
    if keep >= recv:
        if fo.keepalive_interval_s is not None:
            out.append(f"failover.keepalive_interval_s: {keep} must be less than {recv_words}")
        else:
            out.append(
                f"failover.receive_timer_s: {recv} is too short: the keep-alive "
                f"(keepalive_interval_s, by default a third of it) must be shorter; use at least 3"
            )
    if fo.dialect == "windows":
        if recv < _WINDOWS_MIN_RECEIVE_S:
            out.append(
                f"failover.receive_timer_s: {recv} is too short for the windows dialect: Windows "
                f"sends CONTACT only every {_WINDOWS_CONTACT_S} s; use at least "
                f"{_WINDOWS_MIN_RECEIVE_S} (Windows' own is 180)"
            )
        if keep > _WINDOWS_CONTACT_S:
            out.append(
                f"failover.keepalive_interval_s: {keep} is too long for the windows dialect: "
                f"Windows expects a message at least every {_WINDOWS_CONTACT_S} s"
            )
    return out


def _secret_length_problem(path: str, secret: str, where: str = "") -> list[str]:
    size = len(secret.encode("utf-8"))
    if size == 0:
        return [f"{path}: {where}must not be empty" if not where else f"{path}: {where}is empty"]
    if size < _SECRET_MIN_BYTES:
        return [f"{path}: {where}is {size} bytes long; use at least {_SECRET_MIN_BYTES}"]
    if size > _SECRET_MAX_BYTES:
        return [f"{path}: {where}is {size} bytes long; at most {_SECRET_MAX_BYTES}"]
    return []


def _check_failover_secret(fo: FailoverSection) -> list[str]:
    """Never puts the secret itself into a message (only its length)."""
    if fo.shared_secret is not None and fo.shared_secret_file is not None:
        return ["failover: give at most one of shared_secret and shared_secret_file"]
    if fo.shared_secret is not None:
        return _secret_length_problem("failover.shared_secret", fo.shared_secret.get_secret_value())
    raw = fo.shared_secret_file
    if raw is None:
        return []
    path = "failover.shared_secret_file"
    if not raw.strip():
        return [f"{path}: must not be empty"]
    try:
        secret = _read_secret_file(raw)
    except FileNotFoundError:
        return [f"{path}: {raw} does not exist"]
    except IsADirectoryError:
        return [f"{path}: {raw} is a directory; give a file name"]
    except PermissionError:
        # Not judged, like store.path: the checking user is often not the server's user.
        return []
    except OSError as exc:
        return [f"{path}: cannot read {raw}: {exc.strerror or exc}"]
    except UnicodeDecodeError:
        return [f"{path}: {raw} is not UTF-8 text"]
    return _secret_length_problem(path, secret, where=f"the secret in {raw} ")


_TLS_FIELDS = ("tls_cert_file", "tls_key_file", "tls_ca_file")


def _check_failover_tls(fo: FailoverSection) -> list[str]:
    """All three TLS files or none; each must be a readable file (an unreadable one is not
    judged: the checking user is often not the server's user)."""
    given = [f for f in _TLS_FIELDS if getattr(fo, f) is not None]
    if not given:
        return []
    if len(given) != len(_TLS_FIELDS):
        missing = ", ".join(f"failover.{f}" for f in _TLS_FIELDS if f not in given)
        return [f"failover: mutual TLS needs all of tls_cert_file, tls_key_file and "
                f"tls_ca_file; missing {missing}"]
    out: list[str] = []
    for f in _TLS_FIELDS:
        raw: str = getattr(fo, f)
        if not raw.strip():
            out.append(f"failover.{f}: must not be empty")
            continue
        try:
            path = Path(raw)
            if path.is_dir():
                out.append(f"failover.{f}: {raw} is a directory; give a file name")
            elif not path.exists():
                out.append(f"failover.{f}: {raw} does not exist")
        except OSError:  # e.g. a directory on the way we may not search: not judged
            pass
    return out


def _check_failover_subnets(cfg: Config, fo: FailoverSection) -> list[str]:
    out: list[str] = []
    by_id = {subnet_id(cfg, i): i for i in range(len(cfg.subnets))}
    if fo.subnets is None:
        if not cfg.subnets:
            return ["failover: there are no subnets to share; add [[subnets]] with pools"]
        for i, subnet in enumerate(cfg.subnets):
            if pool_address_count(subnet) == 0:
                out.append(
                    f"subnets[{i}]: has no pool addresses, but every subnet is in the failover "
                    "relationship; give it pools or list the shared subnets in failover.subnets"
                )
        return out
    if not fo.subnets:
        return ["failover.subnets: must list at least one subnet id (leave it out to share all)"]
    seen: set[int] = set()
    for k, sid in enumerate(fo.subnets):
        path = f"failover.subnets[{k}]"
        if sid in seen:
            out.append(f"{path}: subnet {sid} is listed twice")
            continue
        seen.add(sid)
        index = by_id.get(sid)
        if index is None:
            out.append(f"{path}: no subnet has id {sid}")
        elif pool_address_count(cfg.subnets[index]) == 0:
            out.append(
                f"{path}: subnet {sid} (subnets[{index}], {cfg.subnets[index].prefix}) has no pool "
                "addresses; a failover subnet needs pools"
            )
    return out


# ---- partners


def _effective_ranges(subnet: Subnet) -> list[tuple[int, int]]:
    """The subnet's dynamic addresses (pools minus exclusions) as merged inclusive ranges."""
    out: list[tuple[int, int]] = []
    excluded = _ranges(subnet.exclusions)
    for lo, hi in _ranges(subnet.pools):
        cur = lo
        for elo, ehi in excluded:
            if ehi < cur or elo > hi:
                continue
            if elo > cur:
                out.append((cur, elo - 1))
            cur = max(cur, ehi + 1)
        if cur <= hi:
            out.append((cur, hi))
    return out


def _show_ranges(ranges: list[tuple[int, int]]) -> str:
    if not ranges:
        return "none"
    return ", ".join(
        str(IPv4Address(lo)) if lo == hi else f"{IPv4Address(lo)}-{IPv4Address(hi)}"
        for lo, hi in ranges
    )


def _reservation_keys(subnet: Subnet) -> dict[IPv4Address, tuple[bytes | None, bytes | None]]:
    keys: dict[IPv4Address, tuple[bytes | None, bytes | None]] = {}
    for res in subnet.reservations:
        hw = parse_hw_address(res.hw_address) if res.hw_address is not None else None
        cid = parse_client_id(res.client_id) if res.client_id is not None else None
        keys[res.ip_address] = (hw, cid)
    return keys


def _secret_for_compare(fo: FailoverSection, name: str) -> tuple[str | None, str | None]:
    """(secret, problem): the secret, or why it cannot be read for the comparison."""
    try:
        return read_shared_secret(fo), None
    except ConfigError as exc:
        return None, f"{exc.problems[0]} ({name}); the shared secrets cannot be compared"


def check_partners(
    a: Config, b: Config, names: tuple[str, str] = ("this config", "the partner's config")
) -> list[str]:
    """Every relationship setting that must agree between two partners' configs and does not.

    ``a`` and ``b`` must each be valid on their own (:func:`check`). ``names`` name the two
    configs in the messages (the CLI passes the file names). Secrets are never shown.
    """
    na, nb = names
    if a.failover is None or b.failover is None:
        return [
            f"failover: {n} has no [failover] section"
            for n, c in ((na, a), (nb, b))
            if c.failover is None
        ]
    ra, rb = relationships(a), relationships(b)
    if len(ra) == 1 and len(rb) == 1:
        return _check_pair(relationship_config(a, ra[0]), relationship_config(b, rb[0]), names)
    # Several relationships on one side (a hub and one of its spokes, say): the relationships
    # both configs name are compared, each as a pair of its own.
    by_name = {rel.name: rel for rel in rb}
    common = [rel for rel in ra if rel.name in by_name]
    if not common:
        return [
            f"failover.name: no relationship is in both configs ({_names(ra)} in {na}, "
            f"{_names(rb)} in {nb})"
        ]
    out: list[str] = []
    for rel in common:
        pair = _check_pair(
            relationship_config(a, rel), relationship_config(b, by_name[rel.name]), names
        )
        out += [f"relationship {_q(rel.name)}: {p}" for p in pair]
    return out


def shared_relationships(a: Config, b: Config) -> list[tuple[FailoverSection, FailoverSection]]:
    """The relationships two partners' configs have in common: the only one of each when
    both have one, else those with the same name (config order of ``a``)."""
    ra, rb = relationships(a), relationships(b)
    if len(ra) == 1 and len(rb) == 1:
        return [(ra[0], rb[0])]
    by_name = {rel.name: rel for rel in rb}
    return [(rel, by_name[rel.name]) for rel in ra if rel.name in by_name]


def _names(rels: list[FailoverSection]) -> str:
    return ", ".join(_q(r.name) for r in rels)


def _check_pair(a: Config, b: Config, names: tuple[str, str]) -> list[str]:
    """check_partners for two single-relationship views."""
    na, nb = names
    fa, fb = a.failover, b.failover
    assert isinstance(fa, FailoverSection) and isinstance(fb, FailoverSection)
    out: list[str] = []

    def same(field: str, va: object, vb: object) -> None:
        if va != vb:
            out.append(
                f"failover.{field}: {_partner_value(va)} in {na}, {_partner_value(vb)} in {nb}; "
                "must be the same on both partners"
            )

    same("name", fa.name, fb.name)
    if fa.role == fb.role:
        out.append(
            f'failover.role: "{fa.role}" in both {na} and {nb}; one must be "primary", '
            'the other "secondary"'
        )
    same("mode", fa.mode, fb.mode)
    same("dialect", fa.dialect, fb.dialect)
    same("mclt_s", fa.mclt_s, fb.mclt_s)
    for (x, fx), (y, fy) in (((na, fa), (nb, fb)), ((nb, fb), (na, fa))):
        if fx.peer_address != fy.listen_address:
            out.append(
                f"failover.peer_address: {fx.peer_address} in {x} is not {y}'s "
                f"failover.listen_address ({fy.listen_address})"
            )
        if fx.peer_port != fy.listen_port:
            out.append(
                f"failover.peer_port: {fx.peer_port} in {x} is not {y}'s "
                f"failover.listen_port ({fy.listen_port})"
            )
    if fa.mode == fb.mode == "hot-standby":
        same("reserve_percent", fa.reserve_percent, fb.reserve_percent)
    if fa.mode == fb.mode == "load-balance":
        total = fa.load_balance_percent + fb.load_balance_percent
        if total != 100:
            out.append(
                f"failover.load_balance_percent: {fa.load_balance_percent} in {na} + "
                f"{fb.load_balance_percent} in {nb} = {total}; each is that server's own share, "
                "so the two must add up to 100"
            )
        same("load_balance_max_seconds", fa.load_balance_max_seconds, fb.load_balance_max_seconds)
    same(
        "state_switchover_interval_s",
        fa.state_switchover_interval_s,
        fb.state_switchover_interval_s,
    )
    for (x, fx), (y, fy) in (((na, fa), (nb, fb)), ((nb, fb), (na, fa))):
        keep, recv = keepalive_interval_s(fx), receive_timer_s(fy)
        if keep >= recv:
            out.append(
                f"failover.keepalive_interval_s: {keep} in {x} must be less than "
                f"failover.receive_timer_s in {y} ({recv}), or {y}'s server drops the link"
            )
    out += _compare_secrets(fa, fb, na, nb)
    out += _compare_subnets(a, b, na, nb)
    return out


def _partner_value(value: object) -> str:
    if value is None:
        return "off"
    return _q(value) if isinstance(value, str) else str(value)


def _compare_secrets(fa: FailoverSection, fb: FailoverSection, na: str, nb: str) -> list[str]:
    sa, pa = _secret_for_compare(fa, na)
    sb, pb = _secret_for_compare(fb, nb)
    problems = [p for p in (pa, pb) if p is not None]
    if problems:
        return problems
    if sa is None and sb is None:
        return []
    if sa is None or sb is None:
        has, lacks = (na, nb) if sa is not None else (nb, na)
        return [f"failover.shared_secret: set in {has}, not in {lacks}"]
    if sa != sb:  # comparison of configuration, not of attacker input: no timing concern
        return [f"failover.shared_secret: differs between {na} and {nb} (not shown)"]
    return []


def _compare_subnets(a: Config, b: Config, na: str, nb: str) -> list[str]:
    out: list[str] = []
    shared_a = {a.subnets[i].prefix: i for i in failover_subnets(a)}
    shared_b = {b.subnets[i].prefix: i for i in failover_subnets(b)}
    for x, sx, y, sy in ((na, shared_a, nb, shared_b), (nb, shared_b, na, shared_a)):
        for prefix, i in sx.items():
            if prefix not in sy:
                out.append(
                    f"failover.subnets: {prefix} (subnets[{i}] in {x}) is in {x}'s relationship, "
                    f"not in {y}'s"
                )
    for prefix, i in shared_a.items():
        j = shared_b.get(prefix)
        if j is None:
            continue
        sa, sb = a.subnets[i], b.subnets[j]
        ra, rb = _effective_ranges(sa), _effective_ranges(sb)
        if ra != rb:
            out.append(
                f"subnet {prefix}: pool addresses differ: {_show_ranges(ra)} in {na}, "
                f"{_show_ranges(rb)} in {nb}"
            )
        la = sa.lease_time_s if sa.lease_time_s is not None else a.lease.default_lease_time_s
        lb = sb.lease_time_s if sb.lease_time_s is not None else b.lease.default_lease_time_s
        if la != lb:
            out.append(
                f"subnet {prefix}: lease time {la} s in {na}, {lb} s in {nb}; must be the same "
                "on both partners"
            )
        ka, kb = _reservation_keys(sa), _reservation_keys(sb)
        for ip in sorted(ka.keys() | kb.keys()):
            if ip not in kb:
                out.append(f"subnet {prefix}: reservation {ip} is in {na}, not in {nb}")
            elif ip not in ka:
                out.append(f"subnet {prefix}: reservation {ip} is in {nb}, not in {na}")
            elif ka[ip] != kb[ip]:
                out.append(
                    f"subnet {prefix}: reservation {ip} is for a different client in {na} and {nb}"
                )
    return out
