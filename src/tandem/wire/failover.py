"""DHCPv4 failover messages (draft-ietf-dhc-failover-12) in two dialects: ``isc`` and ``windows``.

Layout (all big-endian)::

    length(2, counts the header) type(1) payload-offset(1) time(4) xid(4) [extra header] options

Options are ``code(2) length(2) value``, no padding. A :class:`FailoverMessage` keeps its
options as an ordered list of :class:`Option` (code, typed value); repeated options (batched
BNDUPD/BNDACK address groups) stay in order, and options the dialect does not know keep their
raw value bytes so they round-trip byte for byte.

Typed values come from an option registry by *layout family* (u8, u32, IPv4, text, hardware
address, ...); each family has its decoder and encoder side by side. The dialect decides the
family of a few codes (binding-status, client-hardware-address, IP-flags, the string options)
and whether codes 30-41 mean Microsoft's extension options (``windows``) or are unknown
(``isc``). See ``docs/failover-wire.md`` for every dialect choice and why.

:func:`decode` raises :class:`~tandem.errors.DecodeError` and nothing else on malformed input.
:func:`encode` raises ``ValueError``/``TypeError`` for values that cannot be put on the wire
(a programming error on our side, never peer input).
"""

from __future__ import annotations

import hmac
import struct
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from enum import IntEnum, IntFlag
from ipaddress import IPv4Address
from typing import Any, Literal, NamedTuple, TypeAlias

from tandem.errors import DecodeError
from tandem.wire.addr import ipv4_from_packed
from tandem.wire.framing import HEADER_SIZE, MAX_MESSAGE_SIZE

Dialect: TypeAlias = Literal["isc", "windows"]
DIALECTS: tuple[Dialect, ...] = ("isc", "windows")

#: Payload-offset byte we send (draft-12 says 8, which cannot be right; ISC sends 12, Windows 8).
PAYLOAD_OFFSET: dict[Dialect, int] = {"isc": 12, "windows": 8}
#: Windows ignores address groups beyond this many in one BNDUPD (MS-DHCPF 3.1.4.2).
WINDOWS_MAX_BATCH = 16


# --------------------------------------------------------------------------------------------
# Code points
# --------------------------------------------------------------------------------------------


class MessageType(IntEnum):
    """Message codes (draft-12 §6.1; ISC ``FTM_*``). Note 7 = UPDREQALL, 9 = UPDREQ."""

    POOLREQ = 1
    POOLRESP = 2
    BNDUPD = 3
    BNDACK = 4
    CONNECT = 5
    CONNECTACK = 6
    UPDREQALL = 7
    UPDDONE = 8
    UPDREQ = 9
    STATE = 10
    CONTACT = 11
    DISCONNECT = 12


class OptionCode(IntEnum):
    """Failover option codes: draft-12 1-29, Microsoft MS-DHCPF 30-41 (windows dialect only)."""

    ADDRESSES_TRANSFERRED = 1
    ASSIGNED_IP_ADDRESS = 2
    BINDING_STATUS = 3
    CLIENT_IDENTIFIER = 4
    CLIENT_HARDWARE_ADDRESS = 5
    CLIENT_LAST_TRANSACTION_TIME = 6
    CLIENT_REPLY_OPTIONS = 7
    CLIENT_REQUEST_OPTIONS = 8
    DDNS = 9
    DELAYED_SERVICE_PARAMETER = 10
    HASH_BUCKET_ASSIGNMENT = 11
    IP_FLAGS = 12
    LEASE_EXPIRATION_TIME = 13
    MAX_UNACKED_BNDUPD = 14
    MCLT = 15
    MESSAGE = 16
    MESSAGE_DIGEST = 17
    POTENTIAL_EXPIRATION_TIME = 18
    RECEIVE_TIMER = 19
    PROTOCOL_VERSION = 20
    REJECT_REASON = 21
    RELATIONSHIP_NAME = 22
    SERVER_FLAGS = 23
    SERVER_STATE = 24
    START_TIME_OF_STATE = 25
    TLS_REPLY = 26
    TLS_REQUEST = 27
    VENDOR_CLASS_IDENTIFIER = 28
    VENDOR_SPECIFIC_OPTIONS = 29
    # Microsoft extension (MS-DHCPF 2.2.1-2.2.12)
    MS_SCOPE_ID_LIST = 30
    MS_CLIENT_NAME = 31
    MS_CLIENT_DESCRIPTION = 32
    MS_CLIENT_SUBNET_MASK = 33
    MS_SERVER_IP = 34
    MS_SERVER_NAME = 35
    MS_CLIENT_TYPE = 36
    MS_CLIENT_NAP_STATUS = 37
    MS_CLIENT_NAP_PROBATION = 38
    MS_CLIENT_NAP_CAPABLE = 39
    MS_CLIENT_MATCHED_POLICY = 40
    MS_EXTENDED_ADDRESS_STATE = 41


class RejectReason(IntEnum):
    """Option 21 values (draft-12 §12.21)."""

    RESERVED = 0
    ILLEGAL_IP_ADDRESS = 1
    FATAL_CONFLICT = 2
    MISSING_BINDING_INFO = 3
    TIME_MISMATCH = 4
    INVALID_MCLT = 5
    UNKNOWN_REASON = 6
    DUPLICATE_CONNECTION = 7
    INVALID_PARTNER = 8
    TLS_NOT_SUPPORTED = 9
    TLS_NOT_CONFIGURED = 10
    TLS_REQUIRED = 11
    DIGEST_NOT_SUPPORTED = 12
    DIGEST_NOT_CONFIGURED = 13
    PROTOCOL_VERSION_MISMATCH = 14
    OUTDATED_BINDING_INFO = 15
    LESS_CRITICAL_BINDING_INFO = 16
    NO_TRAFFIC = 17
    HBA_CONFLICT = 18
    IP_NOT_RESERVED = 19
    DIGEST_MISMATCH = 20
    MISSING_DIGEST = 21
    UNKNOWN_ERROR = 254


class BindingStatus(IntEnum):
    """Option 3 in the isc dialect (draft-12 §5.11 codes; ISC ``FTS_*``)."""

    FREE = 1
    ACTIVE = 2
    EXPIRED = 3
    RELEASED = 4
    ABANDONED = 5
    RESET = 6
    BACKUP = 7


class ServerState(IntEnum):
    """Option 24 values on the wire (draft-12 §12.24). STARTUP is signalled by a flag."""

    UNKNOWN = 0
    STARTUP = 1
    NORMAL = 2
    COMMUNICATIONS_INTERRUPTED = 3
    PARTNER_DOWN = 4
    POTENTIAL_CONFLICT = 5
    RECOVER = 6
    PAUSED = 7
    SHUTDOWN = 8
    RECOVER_DONE = 9
    RESOLUTION_INTERRUPTED = 10
    CONFLICT_DONE = 11
    RECOVER_WAIT = 254  # no draft code; ISC's value


class ServerFlags(IntFlag):
    """Option 23."""

    NONE = 0
    STARTUP = 0x01


class TlsRequest(IntEnum):
    NONE = 0
    DESIRED = 1
    REQUIRED = 2


class TlsReply(IntEnum):
    NONE = 0
    REQUIRED = 1


class DigestType(IntEnum):
    """First byte of option 17."""

    HMAC_MD5 = 1  # draft-12
    HMAC_SHA256 = 2  # Microsoft ("Microsoft-specific" in Wireshark)


class IscIpFlags(IntFlag):
    """Option 12, isc dialect (2 bytes)."""

    RESERVED = 0x0001
    BOOTP = 0x0002


class WinIpFlags(IntFlag):
    """Option 12, windows dialect (1 byte)."""

    DELETED = 0x01
    RELEASED = 0x02
    DELETED_COMM_DOWN = 0x04


class WinAddressState(IntEnum):
    """Bits 0-1 of a Windows lease-record binding-status."""

    OFFERED = 0
    ACTIVE = 1
    DECLINED = 2
    DOOM = 3


class WinDhcid(IntEnum):
    """Bits 2-3 of a Windows lease-record binding-status (value before shifting)."""

    NONE = 0
    FROM_CHADDR = 1
    FROM_CLIENT_ID = 2
    FROM_DUID = 3


class WinDnsFlags(IntFlag):
    """Bits 4-7 of a Windows lease-record binding-status (already shifted into place)."""

    CLEANUP = 0x10
    BOTH_REC = 0x20
    UNREGISTERED = 0x40
    DELETED = 0x80


class WinRedistribution(IntEnum):
    """Windows binding-status of an address-redistribution update (no lease record)."""

    FREE = 1
    BACKUP = 2
    RECONCILE = 4
    FREE_UPDATE = 5
    BACKUP_UPDATE = 6


class WinClientType(IntEnum):
    """Option 36."""

    UNSPECIFIED = 0x00
    DHCP = 0x01
    BOOTP = 0x02
    BOTH = 0x03
    RESERVATION = 0x04
    NONE = 0x64


def win_lease_status(state: int, dhcid: int = WinDhcid.NONE, dns_flags: int = 0) -> int:
    """Windows lease-record binding-status byte: state | dhcid << 2 | DNS flag bits."""
    if not 0 <= state <= 3 or not 0 <= dhcid <= 3 or dns_flags & ~0xF0:
        raise ValueError("state and dhcid must be 0..3, dns_flags only bits 0xF0")
    return state | (dhcid << 2) | dns_flags


def win_status_fields(status: int) -> tuple[WinAddressState, WinDhcid, WinDnsFlags]:
    """Split a Windows lease-record binding-status into (state, dhcid, dns flags)."""
    return (
        WinAddressState(status & 0x03),
        WinDhcid((status >> 2) & 0x03),
        WinDnsFlags(status & 0xF0),
    )


def win_to_binding_status(status: int, ip_flags: int, has_lease_record: bool) -> BindingStatus:
    """Windows' own mapping of (binding-status, IP-flags) to a draft state (MS-DHCPF 3.1.4.2).

    ``has_lease_record`` is best judged by the presence of client-hardware-address.
    IP-flags DELETED has no draft equivalent; callers treat it like RESET (see the docs).
    """
    if not has_lease_record:
        if status in (1, 4, 5):
            return BindingStatus.FREE
        if status in (2, 6):
            return BindingStatus.BACKUP
    if ip_flags & WinIpFlags.RELEASED:
        return BindingStatus.RELEASED
    if status & 0x03 in (WinAddressState.DOOM, WinAddressState.DECLINED):
        return BindingStatus.EXPIRED
    return BindingStatus.ACTIVE


# --------------------------------------------------------------------------------------------
# Option values
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HardwareAddress:
    """Option 5. isc: ``htype || address``. windows: ``subnet (4, LE) || htype || address``."""

    htype: int
    address: bytes
    subnet: IPv4Address | None = None  # present exactly in the windows dialect


@dataclass(frozen=True, slots=True)
class Ddns:
    """Option 9: 16-bit flags, then the FQDN in DNS wire format (kept raw)."""

    flags: int
    fqdn: bytes


@dataclass(frozen=True, slots=True)
class MessageDigest:
    """Option 17: digest type byte, then the digest."""

    algorithm: int
    digest: bytes


OptionValue: TypeAlias = (
    int
    | IPv4Address
    | bytes
    | str
    | HardwareAddress
    | Ddns
    | MessageDigest
    | tuple[IPv4Address, ...]
)


class Option(NamedTuple):
    """One option. ``value`` is typed by the dialect's registry, or raw bytes if unknown."""

    code: int
    value: OptionValue


# --------------------------------------------------------------------------------------------
# Layout families: decoder and encoder side by side
# --------------------------------------------------------------------------------------------

_U8 = struct.Struct("!B")
_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")
_OPT_HDR = struct.Struct("!HH")
_MSG_HDR = struct.Struct("!HBBII")


@dataclass(frozen=True, slots=True)
class OptionFamily:
    """A value layout: how bytes become a value and back."""

    name: str
    decode: Callable[[bytes], OptionValue]
    encode: Callable[[Any], bytes]


def _bad(what: str, data: bytes) -> DecodeError:
    return DecodeError(f"{what}: bad length {len(data)}")


# u8 -----------------------------------------------------------------------------------------
def _dec_u8(data: bytes) -> int:
    if len(data) != 1:
        raise _bad("u8", data)
    return data[0]


def _enc_u8(value: int) -> bytes:
    return _U8.pack(value)


def _u8_enum(enum: type[IntEnum], name: str) -> OptionFamily:
    table: tuple[int, ...] = tuple(
        enum(i) if i in enum._value2member_map_ else i for i in range(256)
    )

    def dec(data: bytes) -> int:
        if len(data) != 1:
            raise _bad(name, data)
        return table[data[0]]

    return OptionFamily(name, dec, _enc_u8)


# u16 ----------------------------------------------------------------------------------------
def _dec_u16(data: bytes) -> int:
    if len(data) != 2:
        raise _bad("u16", data)
    return (data[0] << 8) | data[1]


def _enc_u16(value: int) -> bytes:
    return _U16.pack(value)


# u32 / time ---------------------------------------------------------------------------------
def _dec_u32(data: bytes) -> int:
    if len(data) != 4:
        raise _bad("u32", data)
    return int.from_bytes(data, "big")


def _enc_u32(value: int) -> bytes:
    return _U32.pack(value)


# IPv4 ---------------------------------------------------------------------------------------
def _dec_ipv4(data: bytes) -> IPv4Address:
    if len(data) != 4:
        raise _bad("ipv4", data)
    return ipv4_from_packed(data)


def _enc_ipv4(value: IPv4Address) -> bytes:
    if type(value) is IPv4Address:  # the usual case: no round trip through the constructor
        return _U32.pack(int(value))
    return IPv4Address(value).packed


# list of IPv4 in little-endian (host) byte order: Microsoft scope-ID list ---------------------
def _dec_ipv4_le_list(data: bytes) -> tuple[IPv4Address, ...]:
    if len(data) % 4:
        raise _bad("ipv4-le-list", data)
    return tuple(IPv4Address(data[i : i + 4][::-1]) for i in range(0, len(data), 4))


def _enc_ipv4_le_list(value: Iterable[IPv4Address]) -> bytes:
    return b"".join(IPv4Address(a).packed[::-1] for a in value)


# opaque bytes -------------------------------------------------------------------------------
def _dec_bytes(data: bytes) -> bytes:
    return data


def _enc_bytes(value: bytes) -> bytes:
    if not isinstance(value, bytes | bytearray | memoryview):
        raise TypeError(f"expected bytes, got {type(value).__name__}")
    return bytes(value)


# 8-bit text: UTF-8 with surrogateescape (ASCII in practice; any byte string round-trips) ----
def _dec_text8(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")


def _enc_text8(value: str) -> bytes:
    return value.encode("utf-8", "surrogateescape")


# UTF-16LE text (windows). NULs are kept in the value; Message.text() strips them ------------
def _dec_text16(data: bytes) -> str:
    if len(data) % 2:
        raise _bad("utf-16le text", data)
    return data.decode("utf-16-le", "surrogatepass")


def _enc_text16(value: str) -> bytes:
    return value.encode("utf-16-le", "surrogatepass")


# hardware address ---------------------------------------------------------------------------
def _dec_hw_isc(data: bytes) -> HardwareAddress:
    if len(data) < 1:
        raise _bad("client-hardware-address", data)
    return HardwareAddress(data[0], data[1:])


def _enc_hw_isc(value: HardwareAddress) -> bytes:
    if value.subnet is not None:
        raise ValueError("isc client-hardware-address has no subnet")
    return _U8.pack(value.htype) + bytes(value.address)


def _dec_hw_win(data: bytes) -> HardwareAddress:
    if len(data) < 5:
        raise _bad("windows client-hardware-address", data)
    return HardwareAddress(data[4], data[5:], IPv4Address(data[3::-1]))


def _enc_hw_win(value: HardwareAddress) -> bytes:
    if value.subnet is None:
        raise ValueError("windows client-hardware-address needs a subnet")
    return IPv4Address(value.subnet).packed[::-1] + _U8.pack(value.htype) + bytes(value.address)


# DDNS ---------------------------------------------------------------------------------------
def _dec_ddns(data: bytes) -> Ddns:
    if len(data) < 2:
        raise _bad("ddns", data)
    return Ddns((data[0] << 8) | data[1], data[2:])


def _enc_ddns(value: Ddns) -> bytes:
    return _U16.pack(value.flags) + bytes(value.fqdn)


# message digest -----------------------------------------------------------------------------
def _dec_digest(data: bytes) -> MessageDigest:
    if len(data) < 1:
        raise _bad("message-digest", data)
    return MessageDigest(data[0], data[1:])


def _enc_digest(value: MessageDigest) -> bytes:
    return _U8.pack(value.algorithm) + bytes(value.digest)


U8 = OptionFamily("u8", _dec_u8, _enc_u8)
U16 = OptionFamily("u16", _dec_u16, _enc_u16)
U32 = OptionFamily("u32", _dec_u32, _enc_u32)
TIME = OptionFamily("time", _dec_u32, _enc_u32)
IPV4 = OptionFamily("ipv4", _dec_ipv4, _enc_ipv4)
IPV4_LE_LIST = OptionFamily("ipv4-le-list", _dec_ipv4_le_list, _enc_ipv4_le_list)
BYTES = OptionFamily("bytes", _dec_bytes, _enc_bytes)
TEXT8 = OptionFamily("text8", _dec_text8, _enc_text8)
TEXT16 = OptionFamily("text16", _dec_text16, _enc_text16)
HWADDR_ISC = OptionFamily("hwaddr", _dec_hw_isc, _enc_hw_isc)
HWADDR_WIN = OptionFamily("hwaddr-windows", _dec_hw_win, _enc_hw_win)
DDNS = OptionFamily("ddns", _dec_ddns, _enc_ddns)
DIGEST = OptionFamily("digest", _dec_digest, _enc_digest)
BINDING_STATUS = _u8_enum(BindingStatus, "binding-status")
SERVER_STATE = _u8_enum(ServerState, "server-state")
REJECT_REASON = _u8_enum(RejectReason, "reject-reason")

_C = OptionCode
_DRAFT: dict[int, OptionFamily] = {
    _C.ADDRESSES_TRANSFERRED: U32,
    _C.ASSIGNED_IP_ADDRESS: IPV4,
    _C.CLIENT_IDENTIFIER: BYTES,
    _C.CLIENT_LAST_TRANSACTION_TIME: TIME,
    _C.CLIENT_REPLY_OPTIONS: BYTES,
    _C.CLIENT_REQUEST_OPTIONS: BYTES,
    _C.DDNS: DDNS,
    _C.DELAYED_SERVICE_PARAMETER: U8,
    _C.HASH_BUCKET_ASSIGNMENT: BYTES,
    _C.LEASE_EXPIRATION_TIME: TIME,
    _C.MAX_UNACKED_BNDUPD: U32,
    _C.MCLT: U32,
    _C.MESSAGE: TEXT8,
    _C.MESSAGE_DIGEST: DIGEST,
    _C.POTENTIAL_EXPIRATION_TIME: TIME,
    _C.RECEIVE_TIMER: U32,
    _C.PROTOCOL_VERSION: U8,
    _C.REJECT_REASON: REJECT_REASON,
    _C.SERVER_FLAGS: U8,
    _C.SERVER_STATE: SERVER_STATE,
    _C.START_TIME_OF_STATE: TIME,
    _C.TLS_REPLY: U8,
    _C.TLS_REQUEST: U8,
    _C.VENDOR_SPECIFIC_OPTIONS: BYTES,
}

#: Option registry: dialect -> code -> layout family. Codes absent here are raw bytes.
REGISTRY: dict[Dialect, dict[int, OptionFamily]] = {
    "isc": {
        **_DRAFT,
        _C.BINDING_STATUS: BINDING_STATUS,
        _C.CLIENT_HARDWARE_ADDRESS: HWADDR_ISC,
        _C.IP_FLAGS: U16,
        _C.RELATIONSHIP_NAME: TEXT8,
        _C.VENDOR_CLASS_IDENTIFIER: TEXT8,
    },
    "windows": {
        **_DRAFT,
        _C.BINDING_STATUS: U8,
        _C.CLIENT_HARDWARE_ADDRESS: HWADDR_WIN,
        _C.IP_FLAGS: U8,
        _C.RELATIONSHIP_NAME: TEXT16,
        _C.VENDOR_CLASS_IDENTIFIER: TEXT16,
        _C.MS_SCOPE_ID_LIST: IPV4_LE_LIST,
        _C.MS_CLIENT_NAME: TEXT16,
        _C.MS_CLIENT_DESCRIPTION: TEXT16,
        _C.MS_CLIENT_SUBNET_MASK: IPV4,
        _C.MS_SERVER_IP: IPV4,
        _C.MS_SERVER_NAME: TEXT16,
        _C.MS_CLIENT_TYPE: U8,
        _C.MS_CLIENT_NAP_STATUS: U8,
        _C.MS_CLIENT_NAP_PROBATION: U32,
        _C.MS_CLIENT_NAP_CAPABLE: U8,
        _C.MS_CLIENT_MATCHED_POLICY: TEXT16,
        _C.MS_EXTENDED_ADDRESS_STATE: U32,
    },
}
del _C

# Flat lookup tables for the hot path.
_DECODERS: dict[str, dict[int, Callable[[bytes], OptionValue]]] = {
    d: {c: f.decode for c, f in reg.items()} for d, reg in REGISTRY.items()
}
# The integer encoders are thin wrappers of Struct.pack: the table calls pack itself (same
# bytes, same errors, one Python call less per option).
_PACKERS: dict[Callable[[Any], bytes], Callable[[Any], bytes]] = {
    _enc_u8: _U8.pack, _enc_u16: _U16.pack, _enc_u32: _U32.pack,
}
_ENCODERS: dict[str, dict[int, Callable[[Any], bytes]]] = {
    d: {c: _PACKERS.get(f.encode, f.encode) for c, f in reg.items()}
    for d, reg in REGISTRY.items()
}
_tuple_new = tuple.__new__
_MSG_TYPES: tuple[int, ...] = tuple(
    MessageType(i) if i in MessageType._value2member_map_ else i for i in range(256)
)


# --------------------------------------------------------------------------------------------
# Message
# --------------------------------------------------------------------------------------------


@dataclass(slots=True)
class FailoverMessage:
    """One failover message.

    ``payload_offset`` is the header byte as received (decode) or to send (encode; ``None`` =
    the dialect's default). ``extra_header`` holds bytes between offset 12 and a payload offset
    above 12 (none are defined today).
    """

    msg_type: int
    xid: int = 0
    time: int = 0
    options: list[Option] = field(default_factory=list)
    payload_offset: int | None = None
    extra_header: bytes = b""

    def get(self, code: int) -> OptionValue | None:
        """Value of the first option with ``code``, or ``None``."""
        for c, v in self.options:
            if c == code:
                return v
        return None

    def get_all(self, code: int) -> list[OptionValue]:
        return [v for c, v in self.options if c == code]

    def has(self, code: int) -> bool:
        for c, _ in self.options:  # noqa: SIM110 - a loop beats any(<genexpr>) per message
            if c == code:
                return True
        return False

    def get_int(self, code: int) -> int | None:
        v = self.get(code)
        return v if isinstance(v, int) else None

    def text(self, code: int) -> str | None:
        """A string option with trailing NULs stripped (Windows may NUL-terminate)."""
        v = self.get(code)
        return v.rstrip("\x00") if isinstance(v, str) else None

    def add(self, code: int, value: OptionValue) -> FailoverMessage:
        self.options.append(Option(code, value))
        return self

    def address_groups(self) -> tuple[list[Option], list[list[Option]]]:
        """Split options into message-wide options and per-address groups.

        Each group starts at an assigned-IP-address option (draft-12 §6.3).
        """
        head: list[Option] = []
        groups: list[list[Option]] = []
        for opt in self.options:
            if opt.code == OptionCode.ASSIGNED_IP_ADDRESS:
                groups.append([opt])
            elif groups:
                groups[-1].append(opt)
            else:
                head.append(opt)
        return head, groups


def decode(data: bytes | bytearray | memoryview, dialect: Dialect = "isc") -> FailoverMessage:
    """Decode one complete message (exactly ``length`` bytes, as framed by FrameBuffer)."""
    try:
        decoders = _DECODERS[dialect]
    except KeyError:
        raise DecodeError(f"unknown dialect {dialect!r}") from None
    if not isinstance(data, bytes):
        data = bytes(data)
    n = len(data)
    if n < HEADER_SIZE:
        raise DecodeError(f"failover message too short: {n} bytes")
    length, mtype, payoff, time_, xid = _MSG_HDR.unpack_from(data)
    if length != n:
        raise DecodeError(f"length field {length} does not match {n} bytes")
    if n > MAX_MESSAGE_SIZE:
        raise DecodeError(f"failover message too long: {n} bytes")
    start = payoff if payoff > HEADER_SIZE else HEADER_SIZE
    if start > n:
        raise DecodeError(f"payload offset {payoff} beyond message length {n}")
    options: list[Option] = []
    append = options.append
    unpack = _OPT_HDR.unpack_from
    new = _tuple_new  # Option(code, value) without the NamedTuple's Python-level __new__
    pos = start
    try:
        while pos < n:
            if n - pos < 4:
                raise DecodeError(f"truncated option header at offset {pos}")
            code, olen = unpack(data, pos)
            pos += 4
            end = pos + olen
            if end > n:
                raise DecodeError(f"option {code} overruns the message ({olen} bytes)")
            raw = data[pos:end]
            dec = decoders.get(code)
            append(new(Option, (code, dec(raw) if dec is not None else raw)))
            pos = end
    except DecodeError:
        raise
    except (ValueError, struct.error, IndexError) as exc:  # belt and braces: never leak these
        raise DecodeError(f"malformed option: {exc}") from exc
    return FailoverMessage(_MSG_TYPES[mtype], xid, time_, options, payoff, data[HEADER_SIZE:start])


def decode_one_group(
    data: bytes, dialect: Dialect, codes: frozenset[int]
) -> tuple[int, int, int, dict[int, OptionValue]] | None:
    """A fast path of :func:`decode` for the common BNDUPD / BNDACK: one address group and
    nothing else. Returns ``(type, time, xid, {code: value})`` when ``data`` is a complete
    message whose options all come from ``codes``, start with assigned-IP-address, appear
    once each, and decode; ``None`` for anything else (then :func:`decode` and the batching
    rules decide, as for any message). For every message it accepts, the values are those
    :func:`decode` gives (tests/unit/test_failover_fast_path.py)."""
    if not isinstance(data, bytes):
        data = bytes(data)
    n = len(data)
    if n < HEADER_SIZE or n > MAX_MESSAGE_SIZE:
        return None
    length, mtype, payoff, time_, xid = _MSG_HDR.unpack_from(data)
    if length != n or payoff > HEADER_SIZE or n - HEADER_SIZE < 8:
        return None
    decoders = _DECODERS[dialect]
    unpack = _OPT_HDR.unpack_from
    values: dict[int, OptionValue] = {}
    pos = HEADER_SIZE
    if unpack(data, pos)[0] != _ADDRESS_CODE:
        return None
    try:
        while pos < n:
            if n - pos < 4:
                return None
            code, olen = unpack(data, pos)
            pos += 4
            end = pos + olen
            if end > n or code not in codes or code in values:
                return None
            dec = decoders.get(code)
            if dec is None:
                return None
            values[code] = dec(data[pos:end])
            pos = end
    except (DecodeError, ValueError, struct.error, IndexError):
        return None
    return mtype, time_, xid, values


def iter_raw_options(data: bytes) -> Iterator[tuple[int, int, int]]:
    """Yield ``(code, value_start, value_end)`` for each option of an encoded message."""
    n = len(data)
    if n < HEADER_SIZE:
        raise DecodeError("failover message too short")
    pos = max(HEADER_SIZE, data[3])
    while pos < n:
        if n - pos < 4:
            raise DecodeError(f"truncated option header at offset {pos}")
        code, olen = _OPT_HDR.unpack_from(data, pos)
        end = pos + 4 + olen
        if end > n:
            raise DecodeError(f"option {code} overruns the message")
        yield code, pos + 4, end
        pos = end


_DIGEST_CODE = int(OptionCode.MESSAGE_DIGEST)
_ADDRESS_CODE = int(OptionCode.ASSIGNED_IP_ADDRESS)
_BATCHED_TYPES = frozenset((int(MessageType.BNDUPD), int(MessageType.BNDACK)))


def batch_violation(msg: FailoverMessage, dialect: Dialect) -> str | None:
    """Describe how ``msg`` breaks the option-repetition/batching rules, or ``None``.

    * an option appears at most once, except that BNDUPD/BNDACK may repeat per-address groups
      (each starting with assigned-IP-address), and nothing repeats within one group;
    * message-digest appears at most once, and (isc) only as the last option;
    * isc: at most one address group (ISC cannot parse batches);
    * windows: at most 16 address groups.
    """
    options = msg.options
    codes = {code for code, _ in options}
    if len(codes) == len(options):
        # Fast path (every message Tandem sends, ISC's too): no code repeats, so at most one
        # address group and one digest; only the digest's position can be wrong.
        if dialect == "isc" and _DIGEST_CODE in codes and options[-1][0] != _DIGEST_CODE:
            return "message-digest must be the last option for ISC"
        return None
    last = len(options) - 1
    batched = msg.msg_type in _BATCHED_TYPES
    limit = 1 if dialect == "isc" else WINDOWS_MAX_BATCH
    seen: set[int] = set()
    groups = 0
    digests = 0
    for i, (code, _) in enumerate(options):
        if code == _DIGEST_CODE:
            digests += 1
            if digests > 1:
                return "message-digest appears more than once"
            if dialect == "isc" and i != last:
                return "message-digest must be the last option for ISC"
        elif batched and code == _ADDRESS_CODE:
            groups += 1
            if groups > limit:
                return f"more than {limit} address groups in one message (limit {limit})"
            seen = {code}
        elif code in seen:
            return f"option {code} repeated"
        else:
            seen.add(code)
    return None


def encode(
    msg: FailoverMessage,
    dialect: Dialect = "isc",
    *,
    secret: bytes | None = None,
    digest_type: int = DigestType.HMAC_SHA256,
) -> bytes:
    """Encode ``msg``. With ``secret``, append a message-digest option and sign (see §2.4)."""
    encoders = _ENCODERS[dialect]
    parts: list[bytes] = []
    pack_hdr = _OPT_HDR.pack
    try:
        for code, value in msg.options:
            enc = encoders.get(code)
            if enc is not None:
                raw = enc(value)
            elif isinstance(value, bytes | bytearray | memoryview):
                raw = bytes(value)
            else:
                raise TypeError(f"option {code} is unknown in {dialect}: value must be bytes")
            parts.append(pack_hdr(code, len(raw)))
            parts.append(raw)
    except struct.error as exc:
        raise ValueError(f"option value out of range: {exc}") from exc
    except AttributeError as exc:  # a value of the wrong type for its option's family
        raise TypeError(f"option value of the wrong type: {exc}") from exc
    problem = batch_violation(msg, dialect)
    if problem is not None:
        raise ValueError(problem)
    if secret is not None:
        if msg.has(OptionCode.MESSAGE_DIGEST):
            raise ValueError("message already carries a digest; encode() adds it")
        dlen = _digest_size(digest_type)
        parts.append(pack_hdr(OptionCode.MESSAGE_DIGEST, dlen + 1))
        parts.append(_U8.pack(digest_type) + bytes(dlen))
    extra = bytes(msg.extra_header)
    payoff = msg.payload_offset
    if payoff is None:
        payoff = HEADER_SIZE + len(extra) if extra else PAYLOAD_OFFSET[dialect]
    elif extra and payoff != HEADER_SIZE + len(extra):
        raise ValueError("payload_offset must be 12 + len(extra_header)")
    elif payoff > HEADER_SIZE and not extra:
        raise ValueError("payload_offset above 12 needs extra_header bytes")
    body = b"".join(parts)
    length = HEADER_SIZE + len(extra) + len(body)
    if length > MAX_MESSAGE_SIZE:
        raise ValueError(f"message of {length} bytes exceeds {MAX_MESSAGE_SIZE}")
    try:
        header = _MSG_HDR.pack(length, msg.msg_type, payoff, msg.time, msg.xid)
    except struct.error as exc:
        raise ValueError(f"header field out of range: {exc}") from exc
    out = header + extra + body
    if secret is not None:
        mac = _hmac(digest_type, secret, out)
        out = out[: length - len(mac)] + mac
    return out


# --------------------------------------------------------------------------------------------
# Message digest (draft-12 §11.1/§12.17; Windows: HMAC-SHA256, type byte 2)
# --------------------------------------------------------------------------------------------

_DIGESTS: dict[int, tuple[str, int]] = {
    DigestType.HMAC_MD5: ("md5", 16),
    DigestType.HMAC_SHA256: ("sha256", 32),
}


def _digest_size(digest_type: int) -> int:
    try:
        return _DIGESTS[digest_type][1]
    except KeyError:
        raise ValueError(f"unsupported digest type {digest_type}") from None


def _hmac(digest_type: int, secret: bytes, data: bytes) -> bytes:
    return hmac.new(secret, data, _DIGESTS[digest_type][0]).digest()


def secret_key(secret: str) -> bytes:
    """Key bytes for a configured shared secret: UTF-8. [UNVERIFIED] for Windows (see docs)."""
    return secret.encode("utf-8")


class DigestCheck(IntEnum):
    """Outcome of :func:`verify_digest`; non-OK values equal the reject reason to use."""

    OK = 0
    UNSUPPORTED = RejectReason.DIGEST_NOT_SUPPORTED
    MISMATCH = RejectReason.DIGEST_MISMATCH
    MISSING = RejectReason.MISSING_DIGEST


def compute_digest(data: bytes, secret: bytes) -> bytes:
    """HMAC of the whole message (header included) with the digest bytes zeroed.

    ``data`` must contain exactly one message-digest option; its type byte picks the hash.
    """
    spans = [(s, e) for code, s, e in iter_raw_options(data) if code == OptionCode.MESSAGE_DIGEST]
    if len(spans) != 1 or spans[0][1] - spans[0][0] < 1:
        raise DecodeError("message needs exactly one message-digest option")
    start, end = spans[0]
    dtype = data[start]
    if dtype not in _DIGESTS:
        raise DecodeError(f"unsupported digest type {dtype}")
    zeroed = data[: start + 1] + bytes(end - start - 1) + data[end:]
    return _hmac(dtype, secret, zeroed)


def verify_digest(data: bytes, secret: bytes) -> DigestCheck:
    """Check the message-digest option of an encoded message against ``secret``."""
    try:
        spans = [
            (s, e) for code, s, e in iter_raw_options(data) if code == OptionCode.MESSAGE_DIGEST
        ]
    except DecodeError:
        return DigestCheck.MISMATCH
    if not spans:
        return DigestCheck.MISSING
    if len(spans) > 1:
        return DigestCheck.MISMATCH
    start, end = spans[0]
    if end == start or data[start] not in _DIGESTS:
        return DigestCheck.UNSUPPORTED
    if end - start - 1 != _DIGESTS[data[start]][1]:
        return DigestCheck.MISMATCH
    expected = compute_digest(data, secret)
    if hmac.compare_digest(expected, data[start + 1 : end]):
        return DigestCheck.OK
    return DigestCheck.MISMATCH
