"""DHCPv4 option registry by layout family (dnspython style).

Every option code maps to an :class:`OptionDef` (code, name, family). A :class:`Family`
holds the decode and encode of one wire layout side by side, plus the parser for the text
form used by the config file's custom options. :class:`~tandem.wire.dhcp.DhcpMessage`
keeps raw bytes; this module gives typed views of them:

- :func:`decode_value` raw bytes -> typed value (unknown code -> the raw bytes; bad raw ->
  :class:`DecodeError`);
- :func:`encode_value` typed value -> raw bytes (bad value -> ``ValueError``/``TypeError``);
- :func:`parse_config_value` config text/int/list -> raw bytes (bad input -> ``ValueError``
  with a message for humans).

Values by family: ``ip`` IPv4Address; ``ip_list`` list[IPv4Address]; ``ip_pairs``
list[tuple[IPv4Address, IPv4Address]]; ``u8``/``u16``/``u32``/``i32`` int; ``bool`` bool;
``string`` str (UTF-8, undecodable bytes kept as surrogate escapes so every byte string
round-trips); ``bytes`` bytes; ``u8_list``/``u16_list`` list[int]; ``client_id``
:class:`ClientId`; ``relay_agent_info`` list[tuple[int, bytes]]; ``domain_search`` list[str]
(dotted names without the final dot, the root as "."); ``classless_static_route``
list[tuple[IPv4Network, IPv4Address]]; ``message_type`` MessageType (an int for codes the
enum lacks); ``overload`` int 1..3.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import AddressValueError, IPv4Address, IPv4Network
from typing import Any, NamedTuple

from tandem.errors import DecodeError
from tandem.wire.dhcp import MessageType

ConfigInput = str | int | list[str]

# Relay agent information (82) sub-options.
RAI_CIRCUIT_ID = 1  # RFC 3046
RAI_REMOTE_ID = 2  # RFC 3046
RAI_LINK_SELECTION = 5  # RFC 3527
RAI_SUBSCRIBER_ID = 6  # RFC 3993
RAI_SERVER_ID_OVERRIDE = 11  # RFC 5107
RAI_RELAY_ID = 12  # RFC 6925
RAI_SUBOPTION_NAMES: dict[int, str] = {
    RAI_CIRCUIT_ID: "circuit-id",
    RAI_REMOTE_ID: "remote-id",
    RAI_LINK_SELECTION: "link-selection",
    RAI_SUBSCRIBER_ID: "subscriber-id",
    RAI_SERVER_ID_OVERRIDE: "server-id-override",
    RAI_RELAY_ID: "relay-id",
    151: "vss",  # RFC 6607: sub-options 151/152 pass through untouched
    152: "vss-control",
}


class ClientId(NamedTuple):
    """Client identifier (61): a type byte (1 = Ethernet, 255 = RFC 4361) and data."""

    type: int
    data: bytes


@dataclass(frozen=True, slots=True)
class Family:
    """One wire layout: decode and encode side by side, plus the config text parser."""

    name: str
    decode: Callable[[bytes], Any]
    encode: Callable[[Any], bytes]
    parse: Callable[[ConfigInput], Any]  # config input -> typed value (ValueError if bad)


@dataclass(frozen=True, slots=True)
class OptionDef:
    code: int
    name: str
    family: Family


# -- helpers -----------------------------------------------------------------------------


def _need_bytes(value: object) -> bytes:
    if not isinstance(value, bytes | bytearray):
        raise TypeError(f"expected bytes, got {type(value).__name__}")
    return bytes(value)


def _items(value: ConfigInput) -> list[str]:
    """A config list, or one string holding items separated by commas/whitespace."""
    if isinstance(value, list):
        out = []
        for item in value:
            if not isinstance(item, str):
                raise ValueError(f"expected text items, got {item!r}")
            out.append(item.strip())
        return out
    if isinstance(value, int):
        return [str(value)]
    return [p for p in re.split(r"[,\s]+", value.strip()) if p]


def _parse_ip(text: str) -> IPv4Address:
    try:
        return IPv4Address(text.strip())
    except (AddressValueError, ValueError) as exc:
        raise ValueError(f"{text!r} is not an IPv4 address") from exc


def _parse_int(value: ConfigInput) -> int:
    if isinstance(value, bool):
        raise ValueError(f"expected an integer, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value.strip(), 0)
        except ValueError:
            pass
    raise ValueError(f"expected an integer, got {value!r}")


def _parse_hex(value: ConfigInput) -> bytes:
    if not isinstance(value, str):
        raise ValueError(f"expected hex text such as '01:02:0a', got {value!r}")
    text = re.sub(r"[\s:.-]", "", value)
    if text.lower().startswith("0x"):
        text = text[2:]
    try:
        return bytes.fromhex(text)
    except ValueError as exc:
        raise ValueError(f"{value!r} is not hex bytes (such as '01:02:0a')") from exc


def _one(value: ConfigInput) -> str:
    items = _items(value)
    if len(items) != 1:
        raise ValueError(f"expected exactly one value, got {len(items)}")
    return items[0]


# -- ip ----------------------------------------------------------------------------------


def _dec_ip(raw: bytes) -> IPv4Address:
    if len(raw) != 4:
        raise DecodeError(f"an IPv4 address needs 4 bytes, got {len(raw)}")
    return IPv4Address(raw)


def _enc_ip(value: IPv4Address) -> bytes:
    return IPv4Address(value).packed


def _ip_list_family(min_count: int) -> Family:
    def dec(raw: bytes) -> list[IPv4Address]:
        if len(raw) % 4 or len(raw) < 4 * min_count:
            raise DecodeError(f"an address list needs a multiple of 4 bytes, got {len(raw)}")
        return [IPv4Address(raw[i : i + 4]) for i in range(0, len(raw), 4)]

    def enc(value: list[IPv4Address]) -> bytes:
        if len(value) < min_count:
            raise ValueError(f"an address list needs at least {min_count} address(es)")
        return b"".join(IPv4Address(a).packed for a in value)

    def parse(value: ConfigInput) -> list[IPv4Address]:
        addrs = [_parse_ip(t) for t in _items(value)]
        if len(addrs) < min_count:
            raise ValueError(f"give at least {min_count} IPv4 address(es)")
        return addrs

    return Family("ip_list", dec, enc, parse)


def _dec_ip_pairs(raw: bytes) -> list[tuple[IPv4Address, IPv4Address]]:
    if len(raw) % 8 or not raw:
        raise DecodeError(f"address pairs need a multiple of 8 bytes, got {len(raw)}")
    return [
        (IPv4Address(raw[i : i + 4]), IPv4Address(raw[i + 4 : i + 8]))
        for i in range(0, len(raw), 8)
    ]


def _enc_ip_pairs(value: list[tuple[IPv4Address, IPv4Address]]) -> bytes:
    if not value:
        raise ValueError("address pairs need at least one pair")
    return b"".join(IPv4Address(a).packed + IPv4Address(b).packed for a, b in value)


def _parse_ip_pairs(value: ConfigInput) -> list[tuple[IPv4Address, IPv4Address]]:
    entries = value if isinstance(value, list) else [value]
    pairs = []
    for entry in entries:
        parts = _items(entry) if isinstance(entry, str) else []
        if len(parts) != 2:
            raise ValueError(f"expected 'ADDRESS ADDRESS' pairs, got {entry!r}")
        pairs.append((_parse_ip(parts[0]), _parse_ip(parts[1])))
    if not pairs:
        raise ValueError("give at least one 'ADDRESS ADDRESS' pair")
    return pairs


# -- integers ----------------------------------------------------------------------------


def _int_family(name: str, fmt: str) -> Family:
    st = struct.Struct(fmt)
    signed = fmt[-1].islower()
    bits = st.size * 8
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)

    def dec(raw: bytes) -> int:
        if len(raw) != st.size:
            raise DecodeError(f"{name} needs {st.size} byte(s), got {len(raw)}")
        return int(st.unpack(raw)[0])

    def enc(value: int) -> bytes:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} needs an int, got {type(value).__name__}")
        if not lo <= value <= hi:
            raise ValueError(f"{value} is out of range for {name} ({lo}..{hi})")
        return st.pack(value)

    def parse(value: ConfigInput) -> int:
        n = _parse_int(value)
        if not lo <= n <= hi:
            raise ValueError(f"{n} is out of range for {name} ({lo}..{hi})")
        return n

    return Family(name, dec, enc, parse)


def _int_list_family(name: str, fmt: str) -> Family:
    size = struct.calcsize(fmt)
    hi = (1 << (8 * size)) - 1

    def dec(raw: bytes) -> list[int]:
        if len(raw) % size:
            raise DecodeError(f"{name} needs a multiple of {size} bytes, got {len(raw)}")
        return list(struct.unpack(f"!{len(raw) // size}{fmt}", raw))

    def enc(value: list[int]) -> bytes:
        for n in value:
            if isinstance(n, bool) or not isinstance(n, int):
                raise TypeError(f"{name} needs ints, got {n!r}")
            if not 0 <= n <= hi:
                raise ValueError(f"{n} is out of range for {name} (0..{hi})")
        return struct.pack(f"!{len(value)}{fmt}", *value)

    def parse(value: ConfigInput) -> list[int]:
        out = [_parse_int(t) for t in _items(value)]
        enc(out)  # range check
        return out

    return Family(name, dec, enc, parse)


def _dec_bool(raw: bytes) -> bool:
    if len(raw) != 1 or raw[0] > 1:
        raise DecodeError(f"a flag needs one byte 0 or 1, got {raw.hex() or 'nothing'}")
    return raw == b"\x01"


def _enc_bool(value: bool) -> bytes:
    if not isinstance(value, bool | int) or value not in (0, 1):
        raise ValueError(f"a flag is true or false, got {value!r}")
    return b"\x01" if value else b"\x00"


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _parse_bool(value: ConfigInput) -> bool:
    text = str(value).strip().lower() if not isinstance(value, list) else ""
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"expected true/false (or 1/0), got {value!r}")


# -- text and bytes ----------------------------------------------------------------------


def _dec_string(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def _enc_string(value: str) -> bytes:
    if not isinstance(value, str):
        raise TypeError(f"expected text, got {type(value).__name__}")
    return value.encode("utf-8", "surrogateescape")


def _parse_string(value: ConfigInput) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected text, got {value!r}")
    if not value:
        raise ValueError("text options cannot be empty")
    return value


def _dec_bytes(raw: bytes) -> bytes:
    return bytes(raw)


# -- client identifier (61) --------------------------------------------------------------


def _dec_client_id(raw: bytes) -> ClientId:
    if len(raw) < 2:
        raise DecodeError(f"a client identifier needs at least 2 bytes, got {len(raw)}")
    return ClientId(raw[0], bytes(raw[1:]))


def _enc_client_id(value: ClientId | tuple[int, bytes]) -> bytes:
    kind, data = value
    if not 0 <= kind <= 255:
        raise ValueError(f"client identifier type {kind} is not a byte")
    if not data:
        raise ValueError("a client identifier needs data after its type")
    return bytes((kind,)) + _need_bytes(data)


def _parse_client_id(value: ConfigInput) -> ClientId:
    raw = _parse_hex(value)
    if len(raw) < 2:
        raise ValueError("a client identifier is a type byte and data, e.g. '01:00:11:22:33:44:55'")
    return ClientId(raw[0], raw[1:])


# -- relay agent information (82) --------------------------------------------------------


def decode_relay_agent_info(raw: bytes) -> list[tuple[int, bytes]]:
    """Option 82 as its ordered sub-options ``(subcode, value)`` (RFC 3046)."""
    subs: list[tuple[int, bytes]] = []
    pos, end = 0, len(raw)
    while pos < end:
        if pos + 1 >= end:
            raise DecodeError(f"relay agent sub-option {raw[pos]} has no length byte")
        stop = pos + 2 + raw[pos + 1]
        if stop > end:
            raise DecodeError(f"relay agent sub-option {raw[pos]} runs past the option")
        subs.append((raw[pos], bytes(raw[pos + 2 : stop])))
        pos = stop
    return subs


def encode_relay_agent_info(subs: list[tuple[int, bytes]]) -> bytes:
    """The inverse of :func:`decode_relay_agent_info` (sub-options are never split)."""
    out = []
    for code, value in subs:
        if not 0 <= code <= 255:
            raise ValueError(f"relay agent sub-option code {code} is not a byte")
        if len(value) > 255:
            raise ValueError(f"relay agent sub-option {code} is longer than 255 bytes")
        out.append(bytes((code, len(value))) + _need_bytes(value))
    return b"".join(out)


def relay_suboption(subs: list[tuple[int, bytes]], code: int) -> bytes | None:
    """The first sub-option ``code`` of a decoded option 82, or None."""
    for sub, value in subs:
        if sub == code:
            return value
    return None


def _parse_relay_agent_info(value: ConfigInput) -> list[tuple[int, bytes]]:
    try:
        return decode_relay_agent_info(_parse_hex(value))
    except DecodeError as exc:
        raise ValueError(f"bad relay agent information: {exc}") from exc


# -- domain search (119, RFC 3397 with RFC 1035 names) -----------------------------------


def _dec_domain_search(raw: bytes) -> list[str]:
    names: list[str] = []
    pos, end = 0, len(raw)
    while pos < end:
        labels: list[str] = []
        cur = pos
        jumped = False
        length = 0
        while True:
            if cur >= end:
                raise DecodeError("domain search name runs past the option")
            n = raw[cur]
            if n & 0xC0 == 0xC0:
                if cur + 1 >= end:
                    raise DecodeError("domain search pointer is cut short")
                target = ((n & 0x3F) << 8) | raw[cur + 1]
                if not jumped:
                    pos = cur + 2
                    jumped = True
                if target >= cur:  # only backwards: guarantees termination
                    raise DecodeError("domain search pointer does not point backwards")
                cur = target
                continue
            if n & 0xC0:
                raise DecodeError(f"bad domain search label type {n:#x}")
            if n == 0:
                if not jumped:
                    pos = cur + 1
                break
            if cur + 1 + n > end:
                raise DecodeError("domain search label runs past the option")
            label = raw[cur + 1 : cur + 1 + n].decode("utf-8", "surrogateescape")
            if "." in label:
                raise DecodeError("domain search label contains a dot")
            length += n + 1
            if length > 254:
                raise DecodeError("domain search name longer than 255 bytes")
            labels.append(label)
            cur += 1 + n
        names.append(".".join(labels) if labels else ".")
    return names


def _labels(name: str) -> tuple[bytes, ...]:
    if not isinstance(name, str):
        raise TypeError(f"expected a domain name, got {type(name).__name__}")
    if name in (".", ""):
        return ()
    labels = tuple(p.encode("utf-8", "surrogateescape") for p in name.rstrip(".").split("."))
    for label in labels:
        if not 1 <= len(label) <= 63:
            raise ValueError(f"{name!r}: every label needs 1 to 63 bytes")
    if sum(len(lb) + 1 for lb in labels) > 254:
        raise ValueError(f"{name!r} is longer than 255 bytes")
    return labels


def _enc_domain_search(names: list[str]) -> bytes:
    """Names with RFC 1035 compression (pointers into the option's own bytes)."""
    out = bytearray()
    seen: dict[tuple[bytes, ...], int] = {}
    for name in names:
        labels = _labels(name)
        for i in range(len(labels)):
            suffix = labels[i:]
            at = seen.get(suffix)
            if at is not None:
                out += struct.pack("!H", 0xC000 | at)
                break
            if len(out) < 0x4000:
                seen[suffix] = len(out)
            out.append(len(labels[i]))
            out += labels[i]
        else:
            out.append(0)
    return bytes(out)


def _parse_domain_search(value: ConfigInput) -> list[str]:
    names = _items(value)
    if not names:
        raise ValueError("give at least one domain name")
    for name in names:
        _labels(name)
    return names


# -- classless static routes (121, 249; RFC 3442) ----------------------------------------


def _dec_classless(raw: bytes) -> list[tuple[IPv4Network, IPv4Address]]:
    routes = []
    pos, end = 0, len(raw)
    if not raw:
        raise DecodeError("classless static routes need at least one route")
    while pos < end:
        width = raw[pos]
        if width > 32:
            raise DecodeError(f"classless route prefix length {width} is over 32")
        n = (width + 7) // 8
        stop = pos + 1 + n + 4
        if stop > end:
            raise DecodeError("classless route runs past the option")
        dest = int.from_bytes(raw[pos + 1 : pos + 1 + n].ljust(4, b"\x00"), "big")
        try:
            net = IPv4Network((dest, width))
        except ValueError as exc:
            raise DecodeError(f"classless route has host bits set: {exc}") from exc
        routes.append((net, IPv4Address(raw[pos + 1 + n : stop])))
        pos = stop
    return routes


def _enc_classless(routes: list[tuple[IPv4Network, IPv4Address]]) -> bytes:
    if not routes:
        raise ValueError("classless static routes need at least one route")
    out = []
    for net, router in routes:
        net = IPv4Network(net)
        width = net.prefixlen
        out.append(
            bytes((width,))
            + net.network_address.packed[: (width + 7) // 8]
            + IPv4Address(router).packed
        )
    return b"".join(out)


def _parse_classless(value: ConfigInput) -> list[tuple[IPv4Network, IPv4Address]]:
    entries = value if isinstance(value, list) else [value]
    routes = []
    for entry in entries:
        parts = _items(entry) if isinstance(entry, str) else []
        if len(parts) != 2:
            raise ValueError(f"expected 'NETWORK/PREFIX ROUTER' routes, got {entry!r}")
        try:
            net = IPv4Network(parts[0])
        except ValueError as exc:
            raise ValueError(f"{parts[0]!r} is not an IPv4 network: {exc}") from exc
        routes.append((net, _parse_ip(parts[1])))
    if not routes:
        raise ValueError("give at least one 'NETWORK/PREFIX ROUTER' route")
    return routes


# -- message type (53) and overload (52) -------------------------------------------------


def _dec_message_type(raw: bytes) -> MessageType | int:
    if len(raw) != 1:
        raise DecodeError(f"message type needs 1 byte, got {len(raw)}")
    try:
        return MessageType(raw[0])
    except ValueError:
        return raw[0]


def _enc_message_type(value: MessageType | int) -> bytes:
    if not 1 <= int(value) <= 255:
        raise ValueError(f"message type {value} is not 1..255")
    return bytes((int(value),))


def _parse_message_type(value: ConfigInput) -> MessageType | int:
    if isinstance(value, str) and value.strip().upper() in MessageType.__members__:
        return MessageType[value.strip().upper()]
    n = _parse_int(value)
    if not 1 <= n <= 255:
        raise ValueError(f"message type {n} is not 1..255")
    return n


def _dec_overload(raw: bytes) -> int:
    if len(raw) != 1 or not 1 <= raw[0] <= 3:
        raise DecodeError(f"option overload must be one byte 1..3, got {raw.hex() or 'nothing'}")
    return raw[0]


def _enc_overload(value: int) -> bytes:
    if not 1 <= value <= 3:
        raise ValueError(f"option overload must be 1..3, got {value}")
    return bytes((value,))


def _parse_overload(value: ConfigInput) -> int:
    n = _parse_int(value)
    _enc_overload(n)
    return n


# -- the families and the registry -------------------------------------------------------

IP = Family("ip", _dec_ip, _enc_ip, lambda v: _parse_ip(_one(v)))
IP_LIST = _ip_list_family(1)
IP_LIST0 = _ip_list_family(0)  # option 68 may be empty
IP_PAIRS = Family("ip_pairs", _dec_ip_pairs, _enc_ip_pairs, _parse_ip_pairs)
U8 = _int_family("u8", "!B")
U16 = _int_family("u16", "!H")
U32 = _int_family("u32", "!I")
I32 = _int_family("i32", "!i")
BOOL = Family("bool", _dec_bool, _enc_bool, _parse_bool)
STRING = Family("string", _dec_string, _enc_string, _parse_string)
BYTES = Family("bytes", _dec_bytes, _need_bytes, _parse_hex)
U8_LIST = _int_list_family("u8_list", "B")
U16_LIST = _int_list_family("u16_list", "H")
CLIENT_ID = Family("client_id", _dec_client_id, _enc_client_id, _parse_client_id)
RELAY_AGENT_INFO = Family(
    "relay_agent_info",
    decode_relay_agent_info,
    encode_relay_agent_info,
    _parse_relay_agent_info,
)
DOMAIN_SEARCH = Family(
    "domain_search", _dec_domain_search, _enc_domain_search, _parse_domain_search
)
CLASSLESS_STATIC_ROUTE = Family(
    "classless_static_route", _dec_classless, _enc_classless, _parse_classless
)
MESSAGE_TYPE = Family("message_type", _dec_message_type, _enc_message_type, _parse_message_type)
OVERLOAD = Family("overload", _dec_overload, _enc_overload, _parse_overload)

FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        IP,
        IP_LIST,
        IP_PAIRS,
        U8,
        U16,
        U32,
        I32,
        BOOL,
        STRING,
        BYTES,
        U8_LIST,
        U16_LIST,
        CLIENT_ID,
        RELAY_AGENT_INFO,
        DOMAIN_SEARCH,
        CLASSLESS_STATIC_ROUTE,
        MESSAGE_TYPE,
        OVERLOAD,
    )
}

_TABLE: list[tuple[int, str, Family]] = [
    (1, "subnet-mask", IP),
    (2, "time-offset", I32),
    (3, "routers", IP_LIST),
    (4, "time-servers", IP_LIST),
    (5, "ien116-name-servers", IP_LIST),
    (6, "domain-name-servers", IP_LIST),
    (7, "log-servers", IP_LIST),
    (8, "cookie-servers", IP_LIST),
    (9, "lpr-servers", IP_LIST),
    (10, "impress-servers", IP_LIST),
    (11, "resource-location-servers", IP_LIST),
    (12, "host-name", STRING),
    (13, "boot-size", U16),
    (14, "merit-dump", STRING),
    (15, "domain-name", STRING),
    (16, "swap-server", IP),
    (17, "root-path", STRING),
    (18, "extensions-path", STRING),
    (19, "ip-forwarding", BOOL),
    (20, "non-local-source-routing", BOOL),
    (21, "policy-filter", IP_PAIRS),
    (22, "max-dgram-reassembly", U16),
    (23, "default-ip-ttl", U8),
    (24, "path-mtu-aging-timeout", U32),
    (25, "path-mtu-plateau-table", U16_LIST),
    (26, "interface-mtu", U16),
    (27, "all-subnets-local", BOOL),
    (28, "broadcast-address", IP),
    (29, "perform-mask-discovery", BOOL),
    (30, "mask-supplier", BOOL),
    (31, "router-discovery", BOOL),
    (32, "router-solicitation-address", IP),
    (33, "static-routes", IP_PAIRS),
    (34, "trailer-encapsulation", BOOL),
    (35, "arp-cache-timeout", U32),
    (36, "ieee802-3-encapsulation", BOOL),
    (37, "default-tcp-ttl", U8),
    (38, "tcp-keepalive-interval", U32),
    (39, "tcp-keepalive-garbage", BOOL),
    (40, "nis-domain", STRING),
    (41, "nis-servers", IP_LIST),
    (42, "ntp-servers", IP_LIST),
    (43, "vendor-encapsulated-options", BYTES),
    (44, "netbios-name-servers", IP_LIST),
    (45, "netbios-dd-server", IP_LIST),
    (46, "netbios-node-type", U8),
    (47, "netbios-scope", STRING),
    (48, "font-servers", IP_LIST),
    (49, "x-display-manager", IP_LIST),
    (50, "dhcp-requested-address", IP),
    (51, "dhcp-lease-time", U32),
    (52, "dhcp-option-overload", OVERLOAD),
    (53, "dhcp-message-type", MESSAGE_TYPE),
    (54, "dhcp-server-identifier", IP),
    (55, "dhcp-parameter-request-list", U8_LIST),
    (56, "dhcp-message", STRING),
    (57, "dhcp-max-message-size", U16),
    (58, "dhcp-renewal-time", U32),
    (59, "dhcp-rebinding-time", U32),
    (60, "vendor-class-identifier", STRING),
    (61, "dhcp-client-identifier", CLIENT_ID),
    (62, "nwip-domain", STRING),
    (63, "nwip-suboptions", BYTES),
    (64, "nisplus-domain", STRING),
    (65, "nisplus-servers", IP_LIST),
    (66, "tftp-server-name", STRING),
    (67, "bootfile-name", STRING),
    (68, "mobile-ip-home-agent", IP_LIST0),
    (69, "smtp-server", IP_LIST),
    (70, "pop-server", IP_LIST),
    (71, "nntp-server", IP_LIST),
    (72, "www-server", IP_LIST),
    (73, "finger-server", IP_LIST),
    (74, "irc-server", IP_LIST),
    (75, "streettalk-server", IP_LIST),
    (76, "streettalk-directory-assistance-server", IP_LIST),
    (77, "user-class", BYTES),  # RFC 3004 framing vs. plain text in the wild: kept raw
    (81, "fqdn", BYTES),
    (82, "relay-agent-information", RELAY_AGENT_INFO),
    (90, "authentication", BYTES),
    (93, "client-system-architecture", U16_LIST),
    (94, "client-network-interface-id", U8_LIST),
    (97, "client-machine-id", BYTES),
    (118, "subnet-selection", IP),
    (119, "domain-search", DOMAIN_SEARCH),
    (121, "classless-static-routes", CLASSLESS_STATIC_ROUTE),
    (150, "tftp-server-address", IP_LIST),
    (249, "ms-classless-static-routes", CLASSLESS_STATIC_ROUTE),
]

OPTIONS: dict[int, OptionDef] = {code: OptionDef(code, name, fam) for code, name, fam in _TABLE}


def option_name(code: int) -> str:
    """A readable name for logs: the registry name, or ``option-N``."""
    d = OPTIONS.get(code)
    return d.name if d is not None else f"option-{code}"


def decode_value(code: int, raw: bytes) -> object:
    """Typed value of option ``code``; unknown codes give the raw bytes back.

    Raises :class:`DecodeError` (and nothing else) if ``raw`` does not fit the layout.
    """
    d = OPTIONS.get(code)
    if d is None:
        return bytes(raw)
    try:
        return d.family.decode(raw)
    except DecodeError as exc:
        raise DecodeError(f"option {code} ({d.name}): {exc}") from exc
    except (ValueError, IndexError, struct.error) as exc:  # defensive: never leak these
        raise DecodeError(f"option {code} ({d.name}): {exc}") from exc


def encode_value(code: int, value: object) -> bytes:
    """Raw bytes of option ``code`` from its typed value (unknown codes take bytes).

    Raises ``ValueError`` for a value out of range, ``TypeError`` for one of the wrong type.
    """
    d = OPTIONS.get(code)
    if d is None:
        return _need_bytes(value)
    try:
        return d.family.encode(value)
    except struct.error as exc:
        raise ValueError(f"option {code} ({d.name}): {exc}") from exc


def parse_config_value(code: int, value: ConfigInput) -> bytes:
    """Raw bytes for a config file's custom option given as ``value`` (not hex).

    Examples: 42 ``["192.0.2.1"]``, 15 ``"example.net"``, 26 ``1500``, 121
    ``["198.51.100.0/24 192.0.2.1"]``. Raises ``ValueError`` with a message for humans
    naming the option and its layout (callers prefix the config path / option code).
    """
    d = OPTIONS.get(code)
    if d is None:
        raise ValueError(
            f'option {code} has no known layout: give its value as hex (hex = "01:02:03")'
        )
    try:
        typed = d.family.parse(value)
        return d.family.encode(typed)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{d.name} ({d.family.name}): {exc}") from exc
