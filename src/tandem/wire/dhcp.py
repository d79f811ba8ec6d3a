"""DHCPv4 message (RFC 2131 header + RFC 2132 options).

``decode()`` and ``encode()`` live side by side. Options are kept as an ordered mapping
``code -> raw value bytes`` (after RFC 3396 concatenation and option-overload unfolding);
typed views come from :mod:`tandem.wire.dhcp_options`. Unknown options round-trip byte
for byte.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import IntEnum
from ipaddress import IPv4Address
from typing import Final

from tandem.errors import DecodeError
from tandem.wire.addr import ip_int

BOOTREQUEST: Final = 1
BOOTREPLY: Final = 2
MAGIC_COOKIE: Final = b"\x63\x82\x53\x63"
FLAG_BROADCAST: Final = 0x8000
ZERO_IP: Final = IPv4Address(0)

# Option codes the engine reads or writes by name.
OPT_PAD: Final = 0
OPT_SUBNET_MASK: Final = 1
OPT_ROUTER: Final = 3
OPT_DNS_SERVERS: Final = 6
OPT_HOSTNAME: Final = 12
OPT_DOMAIN_NAME: Final = 15
OPT_BROADCAST_ADDRESS: Final = 28
OPT_NTP_SERVERS: Final = 42
OPT_REQUESTED_IP: Final = 50
OPT_LEASE_TIME: Final = 51
OPT_OVERLOAD: Final = 52
OPT_MESSAGE_TYPE: Final = 53
OPT_SERVER_ID: Final = 54
OPT_PARAMETER_REQUEST_LIST: Final = 55
OPT_MESSAGE: Final = 56
OPT_MAX_MESSAGE_SIZE: Final = 57
OPT_RENEWAL_TIME: Final = 58
OPT_REBINDING_TIME: Final = 59
OPT_VENDOR_CLASS_ID: Final = 60
OPT_CLIENT_ID: Final = 61
OPT_RELAY_AGENT_INFO: Final = 82
OPT_END: Final = 255


class MessageType(IntEnum):
    DISCOVER = 1
    OFFER = 2
    REQUEST = 3
    DECLINE = 4
    ACK = 5
    NAK = 6
    RELEASE = 7
    INFORM = 8


# init=False and a written-out __init__ (here and on the engine's other per-message
# dataclasses): the compiled build compiles a written __init__, whereas the one dataclasses
# generates stays interpreted Python (~10 % of the engine path's CPU). Same signature.
@dataclass(slots=True, init=False)
class DhcpMessage:
    """One DHCPv4 message. Addresses are ``IPv4Address``; chaddr is the full 16-byte field."""

    op: int = BOOTREQUEST
    htype: int = 1
    hlen: int = 6
    hops: int = 0
    xid: int = 0
    secs: int = 0
    flags: int = 0
    ciaddr: IPv4Address = ZERO_IP
    yiaddr: IPv4Address = ZERO_IP
    siaddr: IPv4Address = ZERO_IP
    giaddr: IPv4Address = ZERO_IP
    chaddr: bytes = b"\x00" * 16
    sname: bytes = b"\x00" * 64
    file: bytes = b"\x00" * 128
    options: dict[int, bytes] = field(default_factory=dict)
    # The encoded option TLVs (without END) that encode() would write for ``options``, set
    # by a builder that has them at hand (the engine's replies: their options are mostly
    # cached per option set and PRL, see encode_options). Whoever changes ``options``
    # afterwards must set it back to None. Not part of equality.
    wire_options: bytes | None = field(default=None, compare=False, repr=False)

    def __init__(
        self,
        op: int = BOOTREQUEST,
        htype: int = 1,
        hlen: int = 6,
        hops: int = 0,
        xid: int = 0,
        secs: int = 0,
        flags: int = 0,
        ciaddr: IPv4Address = ZERO_IP,
        yiaddr: IPv4Address = ZERO_IP,
        siaddr: IPv4Address = ZERO_IP,
        giaddr: IPv4Address = ZERO_IP,
        chaddr: bytes = b"\x00" * 16,
        sname: bytes = b"\x00" * 64,
        file: bytes = b"\x00" * 128,
        options: dict[int, bytes] | None = None,
        wire_options: bytes | None = None,
    ) -> None:
        self.op = op
        self.htype = htype
        self.hlen = hlen
        self.hops = hops
        self.xid = xid
        self.secs = secs
        self.flags = flags
        self.ciaddr = ciaddr
        self.yiaddr = yiaddr
        self.siaddr = siaddr
        self.giaddr = giaddr
        self.chaddr = chaddr
        self.sname = sname
        self.file = file
        self.options = {} if options is None else options
        self.wire_options = wire_options

    # -- typed views of the fields the engine needs ------------------------------------

    @property
    def hwaddr(self) -> bytes:
        """The client hardware address (first ``hlen`` bytes of chaddr, at most 16)."""
        return self.chaddr[: min(self.hlen, 16)]

    @property
    def broadcast(self) -> bool:
        return bool(self.flags & FLAG_BROADCAST)

    @property
    def message_type(self) -> MessageType | None:
        v = self.options.get(OPT_MESSAGE_TYPE)
        if v is None or len(v) != 1:
            return None
        try:
            return MessageType(v[0])
        except ValueError:
            return None

    @property
    def client_id(self) -> bytes | None:
        v = self.options.get(OPT_CLIENT_ID)
        return v if v else None

    @property
    def requested_ip(self) -> IPv4Address | None:
        return self._ip_option(OPT_REQUESTED_IP)

    @property
    def server_id(self) -> IPv4Address | None:
        return self._ip_option(OPT_SERVER_ID)

    @property
    def lease_time(self) -> int | None:
        v = self.options.get(OPT_LEASE_TIME)
        if v is None or len(v) != 4:
            return None
        return int(struct.unpack("!I", v)[0])

    @property
    def parameter_request_list(self) -> bytes:
        return self.options.get(OPT_PARAMETER_REQUEST_LIST, b"")

    @property
    def max_message_size(self) -> int | None:
        v = self.options.get(OPT_MAX_MESSAGE_SIZE)
        if v is None or len(v) != 2:
            return None
        return int(struct.unpack("!H", v)[0])

    @property
    def hostname(self) -> str | None:
        v = self.options.get(OPT_HOSTNAME)
        if not v:
            return None
        return v.decode("utf-8", "replace").rstrip("\x00")

    def _ip_option(self, code: int) -> IPv4Address | None:
        v = self.options.get(code)
        if v is None or len(v) != 4:
            return None
        return IPv4Address(v)


# -- codec ------------------------------------------------------------------------------
#
# Codec decisions (also recorded for docs/decisions.md):
# * A missing END is tolerated in every option area (real clients sometimes omit it); the
#   area then simply ends. Bytes after END are padding and ignored.
# * Repeated instances of one code are concatenated in wire order across the areas
#   options -> file (overload & 1) -> sname (overload & 2) (RFC 3396).
# * Option 52 stays in ``options`` after decode, and the ``file``/``sname`` fields it names
#   keep their raw bytes. ``encode`` treats an ``options[52]`` as "these fields carried
#   options": their content is ignored and the options are laid out afresh (overload is
#   only used again if the options do not fit); 52 itself is always written by ``encode``.

_HEADER: Final = struct.Struct("!BBBBIHHIIII16s64s128s4s")
HEADER_LEN: Final = 236
_MIN_LEN: Final = HEADER_LEN + 4
MIN_BOOTP_SIZE: Final = 300  # total BOOTP size replies are padded to (RFC 1542 §2.1 habit)
IP_UDP_OVERHEAD: Final = 28
MIN_MAX_SIZE: Final = 576  # RFC 2131 §2 / RFC 2132 §9.10: every client accepts 576 bytes
_SNAME_OFF: Final = 44
_FILE_OFF: Final = 108
_ZERO_SNAME: Final = b"\x00" * 64
_ZERO_FILE: Final = b"\x00" * 128


# Header addresses seen recently, by value: a relay's giaddr or a renewing client's ciaddr
# recurs in many datagrams, and building an IPv4Address runs Python code. Addresses are
# immutable, so sharing one object is safe; the cache is bounded (cleared when full).
_ADDRESSES: Final[dict[int, IPv4Address]] = {}
_ADDRESS_CACHE_SIZE: Final = 4096


def _address(value: int) -> IPv4Address:
    if value == 0:
        return ZERO_IP
    addr = _ADDRESSES.get(value)
    if addr is None:
        if len(_ADDRESSES) >= _ADDRESS_CACHE_SIZE:
            _ADDRESSES.clear()
        addr = _ADDRESSES[value] = IPv4Address(value)
    return addr


def _parse_area(data: bytes, pos: int, end: int, opts: dict[int, bytes], where: str) -> None:
    """Read TLV options from ``data[pos:end]`` into ``opts`` (concatenating repeats)."""
    while pos < end:
        code = data[pos]
        if code == 0:
            pos += 1
            continue
        if code == 255:
            return
        if pos + 1 >= end:
            raise DecodeError(f"option {code} in {where} has no length byte")
        stop = pos + 2 + data[pos + 1]
        if stop > end:
            raise DecodeError(f"option {code} in {where} runs past the end of the area")
        value = data[pos + 2 : stop]
        old = opts.get(code)
        opts[code] = value if old is None else old + value
        pos = stop


def decode(raw: object) -> DhcpMessage:
    """Parse one DHCPv4/BOOTP datagram. Raises :class:`DecodeError` and nothing else.

    Needs the 236-byte header and the magic cookie; a missing END is tolerated. Anything
    ``bytes()`` accepts (bytes, bytearray, memoryview) is read; anything else is a
    DecodeError (the parameter is typed ``object`` so that the optional compiled build
    checks it here, not at the call).
    """
    if type(raw) is bytes:
        data = raw
    else:
        try:
            data = bytes(raw)  # type: ignore[call-overload]
        except TypeError as exc:
            raise DecodeError(f"cannot decode {type(raw).__name__}") from exc
    size = len(data)
    if size < _MIN_LEN:
        raise DecodeError(f"datagram of {size} bytes is shorter than a DHCP header")
    (op, htype, hlen, hops, xid, secs, flags, ci, yi, si, gi, chaddr, sname, file, cookie) = (
        _HEADER.unpack_from(data)
    )
    if cookie != MAGIC_COOKIE:
        raise DecodeError("missing DHCP magic cookie")
    opts: dict[int, bytes] = {}
    _parse_area(data, _MIN_LEN, size, opts, "options")
    overload = opts.get(OPT_OVERLOAD)
    if overload is not None:
        if len(overload) != 1 or not 1 <= overload[0] <= 3:
            raise DecodeError(f"bad option overload value {overload.hex()}")
        if overload[0] & 1:
            _parse_area(data, _FILE_OFF, _FILE_OFF + 128, opts, "file")
        if overload[0] & 2:
            _parse_area(data, _SNAME_OFF, _SNAME_OFF + 64, opts, "sname")
        opts[OPT_OVERLOAD] = overload  # a stray 52 inside file/sname is ignored
    return DhcpMessage(
        op,
        htype,
        hlen,
        hops,
        xid,
        secs,
        flags,
        ZERO_IP if ci == 0 else _address(ci),
        ZERO_IP if yi == 0 else _address(yi),
        ZERO_IP if si == 0 else _address(si),
        ZERO_IP if gi == 0 else _address(gi),
        chaddr,
        sname,
        file,
        opts,
    )


# The code and length bytes of an option by ``code << 8 | length`` (length <= 255), filled
# as encode() meets them (at most 254 x 256 entries): codes 1-254 except 52 and 53, which
# encode() places itself.
_TL: Final[dict[int, bytes]] = {}
_MT_HEAD: Final = bytes((OPT_MESSAGE_TYPE, 1))


def _instances(code: int, value: bytes) -> list[bytes]:
    """``value`` as one or more TLV instances (RFC 3396 split at 255 bytes)."""
    n = len(value)
    if n <= 255:
        return [bytes((code, n)) + value]
    return [
        bytes((code, len(chunk))) + chunk
        for chunk in (value[i : i + 255] for i in range(0, n, 255))
    ]


def _fixed(name: str, value: bytes, size: int) -> bytes:
    if len(value) > size:
        raise ValueError(f"{name} is {len(value)} bytes, at most {size} fit")
    return value


def encode_options(items: Iterable[tuple[int, bytes]]) -> bytes:
    """The option TLVs (no END) that :func:`encode` writes for ``items`` in this order, where
    none is 52 or 53 (which encode places itself); for a :attr:`DhcpMessage.wire_options`.
    Raises ``ValueError`` for a code outside 1-254 (as encode does)."""
    parts: list[bytes] = []
    for code, value in items:
        if code in (OPT_MESSAGE_TYPE, OPT_OVERLOAD) or not 0 < code < 255:
            raise ValueError(f"option code {code} cannot be pre-encoded")
        parts.extend(_instances(code, value))
    return b"".join(parts)


def encode(msg: DhcpMessage, max_size: int = 576) -> bytes:
    """Serialise ``msg``; long options are split (RFC 3396), overload (52) used if needed.

    Options are written in insertion order except that 53 (message type) comes first;
    ``options[52]`` is not copied (see the note above). ``max_size`` is the whole IP
    datagram limit (a client's option 57); values below 576 are raised to 576. The result
    is padded with zeros to 300 bytes. Raises ``ValueError`` if the options cannot fit
    even with overload, or if a field is out of range.
    """
    opts = msg.options
    overload_in = opts.get(OPT_OVERLOAD)
    free_fields = overload_in[0] & 3 if overload_in is not None and len(overload_in) == 1 else 0
    body = msg.wire_options
    if body is None:
        body = _encode_body(opts)
    limit = max(max_size, MIN_MAX_SIZE) - IP_UDP_OVERHEAD
    room = limit - _MIN_LEN
    sname = msg.sname
    file = msg.file
    if len(sname) > 64:
        _fixed("sname", sname, 64)
    if len(file) > 128:
        _fixed("file", file, 128)
    if len(body) + 1 <= room:
        if free_fields & 1:
            file = _ZERO_FILE
        if free_fields & 2:
            sname = _ZERO_SNAME
        options = body + b"\xff"
    else:
        options, file, sname = _overload(opts, room, file, sname, free_fields)
    chaddr = msg.chaddr
    if len(chaddr) > 16:
        _fixed("chaddr", chaddr, 16)
    try:
        header = _HEADER.pack(
            msg.op,
            msg.htype,
            msg.hlen,
            msg.hops,
            msg.xid,
            msg.secs,
            msg.flags,
            0 if msg.ciaddr is ZERO_IP else ip_int(msg.ciaddr),
            0 if msg.yiaddr is ZERO_IP else ip_int(msg.yiaddr),
            0 if msg.siaddr is ZERO_IP else ip_int(msg.siaddr),
            0 if msg.giaddr is ZERO_IP else ip_int(msg.giaddr),
            chaddr,
            sname,
            file,
            MAGIC_COOKIE,
        )
    except struct.error as exc:
        raise ValueError(f"header field out of range: {exc}") from exc
    out = header + options
    if len(out) < MIN_BOOTP_SIZE:
        out += b"\x00" * (MIN_BOOTP_SIZE - len(out))
    return out


def _encode_body(opts: dict[int, bytes]) -> bytes:
    """The option TLVs of ``opts`` (no END): 53 first, then insertion order, 52 left out."""
    parts: list[bytes] = []
    append = parts.append
    tl = _TL
    mt = opts.get(OPT_MESSAGE_TYPE)
    if mt is not None:
        if len(mt) == 1:
            append(_MT_HEAD)
            append(mt)
        else:
            parts.extend(_instances(OPT_MESSAGE_TYPE, mt))
    for code, value in opts.items():
        n = len(value)
        if n <= 255:
            head = tl.get(code << 8 | n)  # only valid codes are ever stored
            if head is not None:
                append(head)
                append(value)
                continue
        if code in (OPT_MESSAGE_TYPE, OPT_OVERLOAD):
            continue
        if not 0 < code < 255:
            raise ValueError(f"option code {code} cannot be encoded")
        if n <= 255:
            head = tl[code << 8 | n] = bytes((code, n))
            append(head)
            append(value)
        else:
            parts.extend(_instances(code, value))
    return b"".join(parts)


def _overload(
    opts: dict[int, bytes], room: int, file: bytes, sname: bytes, free_fields: int
) -> tuple[bytes, bytes, bytes]:
    """Lay the options over the options field, then file, then sname (RFC 2131 §4.1).

    Options go whole into the first area (in order) where they fit; an option longer than
    255 bytes (already split per RFC 3396) is split further at area boundaries.
    """
    use_file = bool(free_fields & 1) or not file.strip(b"\x00")
    use_sname = bool(free_fields & 2) or not sname.strip(b"\x00")
    # Room for instances in each area, in order; each keeps one byte for its END.
    rooms = [room - 3 - 1]
    names = ["options"]
    if use_file:
        rooms.append(127)
        names.append("file")
    if use_sname:
        rooms.append(63)
        names.append("sname")
    if len(rooms) == 1:
        raise ValueError("options do not fit and sname/file are in use: no room to overload")
    filled: list[list[bytes]] = [[] for _ in rooms]
    order = [OPT_MESSAGE_TYPE] if OPT_MESSAGE_TYPE in opts else []
    order += [c for c in opts if c != OPT_MESSAGE_TYPE and c != OPT_OVERLOAD]
    idx = 0
    left = rooms[0]
    for code in order:
        value = opts[code]
        if len(value) <= 255:
            while len(value) + 2 > left:
                idx += 1
                if idx >= len(rooms):
                    raise ValueError("options do not fit in the message even with overload")
                left = rooms[idx]
            filled[idx].append(bytes((code, len(value))) + value)
            left -= len(value) + 2
            continue
        while value:
            if left < 3:
                idx += 1
                if idx >= len(rooms):
                    raise ValueError("options do not fit in the message even with overload")
                left = rooms[idx]
            chunk = value[: min(255, left - 2)]
            value = value[len(chunk) :]
            filled[idx].append(bytes((code, len(chunk))) + chunk)
            left -= len(chunk) + 2
    used = 0
    for name, items in zip(names[1:], filled[1:], strict=True):
        if name == "file":
            if items:
                used |= 1
                file = (b"".join(items) + b"\xff").ljust(128, b"\x00")
            elif free_fields & 1:
                file = _ZERO_FILE
        else:
            if items:
                used |= 2
                sname = (b"".join(items) + b"\xff").ljust(64, b"\x00")
            elif free_fields & 2:
                sname = _ZERO_SNAME
    first = filled[0]
    head = 1 if order and order[0] == OPT_MESSAGE_TYPE else 0  # 53 first, then 52
    options = b"".join([*first[:head], bytes((OPT_OVERLOAD, 1, used)), *first[head:]]) + b"\xff"
    return options, file, sname
