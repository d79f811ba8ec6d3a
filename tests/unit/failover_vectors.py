"""Failover wire test data: the spec's §2.5 byte examples and typical messages of each type."""

from __future__ import annotations

from ipaddress import IPv4Address

from tandem.wire.failover import (
    BindingStatus,
    Ddns,
    Dialect,
    FailoverMessage,
    HardwareAddress,
    IscIpFlags,
    MessageDigest,
    MessageType,
    Option,
    OptionCode,
    RejectReason,
    ServerFlags,
    ServerState,
    WinAddressState,
    WinClientType,
    WinDnsFlags,
    WinRedistribution,
    win_lease_status,
)

T = 1_700_000_000  # 0x6553F100, the spec's `time`
MAC = bytes.fromhex("001122334455")
OC = OptionCode


def _h(s: str) -> bytes:
    return bytes.fromhex(s.replace(" ", "").replace("·", ""))


# ---- docs/failover-protocol.md §2.5 (ISC dialect), verbatim ---------------------------------

SPEC_CONTACT = _h("00 0c 0b 0c 65 53 f1 00 00 00 00 09")
SPEC_STATE = _h(
    "00 1e 0a 0c 65 53 f1 00 00 00 00 03 · 00 18 00 01 02 · 00 17 00 01 00 · "
    "00 19 00 04 65 53 e2 f0"
)
SPEC_CONNECT = (
    _h("00 73 05 0c 65 53 f1 00 00 00 00 00")
    + _h("00 16 00 0d")
    + b"dhcp-failover"
    + _h("00 0e 00 04 00 00 00 64")
    + _h("00 13 00 04 00 00 00 3c")
    + _h("00 1c 00 0c")
    + b"isc-4.4.3-P1"
    + _h("00 14 00 01 01")
    + _h("00 1b 00 01 00")
    + _h("00 0f 00 04 00 00 0e 10")
    + _h("00 0b 00 20")
    + b"\xff" * 16
    + b"\x00" * 16
)
SPEC_BNDUPD = _h(
    "00 44 03 0c 65 53 f1 00 00 00 00 07 · 00 02 00 04 c0 00 02 0a · 00 03 00 01 02 · "
    "00 05 00 07 01 00 11 22 33 44 55 · 00 0d 00 04 65 53 ff 10 · 00 12 00 04 65 55 49 88 · "
    "00 19 00 04 65 53 f1 00 · 00 06 00 04 65 53 f1 00"
)
SPEC_BNDACK = _h("00 14 04 0c 65 53 f1 00 00 00 00 07 00 02 00 04 c0 00 02 0a")

HBA_SPLIT_128 = b"\xff" * 16 + b"\x00" * 16

SPEC_VECTORS: list[tuple[str, bytes, FailoverMessage]] = [
    ("contact", SPEC_CONTACT, FailoverMessage(MessageType.CONTACT, 9, T, [], 12)),
    (
        "state",
        SPEC_STATE,
        FailoverMessage(
            MessageType.STATE,
            3,
            T,
            [
                Option(OC.SERVER_STATE, ServerState.NORMAL),
                Option(OC.SERVER_FLAGS, 0),
                Option(OC.START_TIME_OF_STATE, T - 3600),
            ],
            12,
        ),
    ),
    (
        "connect",
        SPEC_CONNECT,
        FailoverMessage(
            MessageType.CONNECT,
            0,
            T,
            [
                Option(OC.RELATIONSHIP_NAME, "dhcp-failover"),
                Option(OC.MAX_UNACKED_BNDUPD, 100),
                Option(OC.RECEIVE_TIMER, 60),
                Option(OC.VENDOR_CLASS_IDENTIFIER, "isc-4.4.3-P1"),
                Option(OC.PROTOCOL_VERSION, 1),
                Option(OC.TLS_REQUEST, 0),
                Option(OC.MCLT, 3600),
                Option(OC.HASH_BUCKET_ASSIGNMENT, HBA_SPLIT_128),
            ],
            12,
        ),
    ),
    (
        "bndupd",
        SPEC_BNDUPD,
        FailoverMessage(
            MessageType.BNDUPD,
            7,
            T,
            [
                Option(OC.ASSIGNED_IP_ADDRESS, IPv4Address("192.0.2.10")),
                Option(OC.BINDING_STATUS, BindingStatus.ACTIVE),
                Option(OC.CLIENT_HARDWARE_ADDRESS, HardwareAddress(1, MAC)),
                Option(OC.LEASE_EXPIRATION_TIME, T + 3600),
                Option(OC.POTENTIAL_EXPIRATION_TIME, T + 86400 + 1800),
                Option(OC.START_TIME_OF_STATE, T),
                Option(OC.CLIENT_LAST_TRANSACTION_TIME, T),
            ],
            12,
        ),
    ),
    (
        "bndack",
        SPEC_BNDACK,
        FailoverMessage(
            MessageType.BNDACK,
            7,
            T,
            [Option(OC.ASSIGNED_IP_ADDRESS, IPv4Address("192.0.2.10"))],
            12,
        ),
    ),
]

# ---- Windows dialect, hand-built from §2.5's "Windows differs in" paragraph ------------------
# BNDUPD ACTIVE 192.0.2.10 in subnet 192.0.2.0/24, status 0x01 | BOTH_REC, IP-flags 0 (1 byte),
# subnet mask 255.255.255.0, payload offset 8.
WIN_BNDUPD = _h(
    "00 4d 03 08 65 53 f1 00 00 00 00 07 · 00 02 00 04 c0 00 02 0a · 00 03 00 01 21 · "
    "00 0c 00 01 00 · 00 21 00 04 ff ff ff 00 · "
    "00 05 00 0b 00 02 00 c0 01 00 11 22 33 44 55 · 00 0d 00 04 65 53 ff 10 · "
    "00 12 00 04 65 55 49 88 · 00 06 00 04 65 53 f1 00"
)
WIN_BNDUPD_MSG = FailoverMessage(
    MessageType.BNDUPD,
    7,
    T,
    [
        Option(OC.ASSIGNED_IP_ADDRESS, IPv4Address("192.0.2.10")),
        Option(OC.BINDING_STATUS, 0x21),
        Option(OC.IP_FLAGS, 0),
        Option(OC.MS_CLIENT_SUBNET_MASK, IPv4Address("255.255.255.0")),
        Option(OC.CLIENT_HARDWARE_ADDRESS, HardwareAddress(1, MAC, IPv4Address("192.0.2.0"))),
        Option(OC.LEASE_EXPIRATION_TIME, T + 3600),
        Option(OC.POTENTIAL_EXPIRATION_TIME, T + 86400 + 1800),
        Option(OC.CLIENT_LAST_TRANSACTION_TIME, T),
    ],
    8,
)
# CONNECT name "fo" / vendor "MSFT" in UTF-16LE, no TLS-request; scope list 192.168.1.0 in UPDREQ.
WIN_CONNECT = (
    _h("00 3d 05 08 65 53 f1 00 00 00 00 01")
    + _h("00 16 00 04")
    + "fo".encode("utf-16-le")
    + _h("00 0e 00 04 00 00 00 10 · 00 13 00 04 00 00 00 b4 · 00 1c 00 08")
    + "MSFT".encode("utf-16-le")
    + _h("00 14 00 01 01 · 00 0f 00 04 00 00 0e 10")
)
WIN_CONNECT_MSG = FailoverMessage(
    MessageType.CONNECT,
    1,
    T,
    [
        Option(OC.RELATIONSHIP_NAME, "fo"),
        Option(OC.MAX_UNACKED_BNDUPD, 16),
        Option(OC.RECEIVE_TIMER, 180),
        Option(OC.VENDOR_CLASS_IDENTIFIER, "MSFT"),
        Option(OC.PROTOCOL_VERSION, 1),
        Option(OC.MCLT, 3600),
    ],
    8,
)
WIN_UPDREQ = _h("00 18 09 08 65 53 f1 00 00 00 00 02 · 00 1e 00 08 00 01 a8 c0 00 02 00 c0")
WIN_UPDREQ_MSG = FailoverMessage(
    MessageType.UPDREQ,
    2,
    T,
    [Option(OC.MS_SCOPE_ID_LIST, (IPv4Address("192.168.1.0"), IPv4Address("192.0.2.0")))],
    8,
)

WINDOWS_VECTORS: list[tuple[str, bytes, FailoverMessage]] = [
    ("win-bndupd", WIN_BNDUPD, WIN_BNDUPD_MSG),
    ("win-connect", WIN_CONNECT, WIN_CONNECT_MSG),
    ("win-updreq", WIN_UPDREQ, WIN_UPDREQ_MSG),
]


# ---- typical messages, one (or more) of each type -------------------------------------------


def _win_text(s: str) -> str:
    return s + "\x00"


def typical_messages(dialect: Dialect) -> list[FailoverMessage]:
    """One message of each of the twelve types with typical options, plus a few variants."""
    win = dialect == "windows"
    ip = IPv4Address("192.0.2.10")
    subnet = IPv4Address("192.0.2.0")
    hw = HardwareAddress(1, MAC, subnet if win else None)
    name = "tandem-fo"
    vendor = "tandem-0.1.0"
    connect_opts = [
        Option(OC.RELATIONSHIP_NAME, name),
        Option(OC.MAX_UNACKED_BNDUPD, 100),
        Option(OC.RECEIVE_TIMER, 180 if win else 60),
        Option(OC.VENDOR_CLASS_IDENTIFIER, vendor),
        Option(OC.PROTOCOL_VERSION, 1),
    ]
    if not win:
        connect_opts.append(Option(OC.TLS_REQUEST, 0))
    connect_opts += [Option(OC.MCLT, 3600), Option(OC.HASH_BUCKET_ASSIGNMENT, HBA_SPLIT_128)]
    connectack_opts = connect_opts[:5] + ([] if win else [Option(OC.TLS_REPLY, 0)])

    if win:
        active = [
            Option(OC.ASSIGNED_IP_ADDRESS, ip),
            Option(
                OC.BINDING_STATUS, win_lease_status(WinAddressState.ACTIVE, 0, WinDnsFlags.BOTH_REC)
            ),
            Option(OC.IP_FLAGS, 0),
            Option(OC.MS_CLIENT_SUBNET_MASK, IPv4Address("255.255.255.0")),
            Option(OC.CLIENT_HARDWARE_ADDRESS, hw),
            Option(OC.CLIENT_IDENTIFIER, b"\x01" + MAC),
            Option(OC.LEASE_EXPIRATION_TIME, T + 3600),
            Option(OC.POTENTIAL_EXPIRATION_TIME, T + 5400),
            Option(OC.CLIENT_LAST_TRANSACTION_TIME, T),
            Option(OC.MS_CLIENT_NAME, _win_text("host1.example.com")),
            Option(OC.MS_SERVER_IP, IPv4Address("192.0.2.1")),
            Option(OC.MS_SERVER_NAME, _win_text("dhcp1")),
            Option(OC.MS_CLIENT_TYPE, WinClientType.DHCP),
            Option(OC.MS_CLIENT_NAP_STATUS, 0),
            Option(OC.MS_CLIENT_NAP_PROBATION, 0),
            Option(OC.MS_CLIENT_NAP_CAPABLE, 0),
            Option(OC.MS_CLIENT_MATCHED_POLICY, _win_text("policy1")),
            Option(OC.MS_EXTENDED_ADDRESS_STATE, 1),
        ]
        backup = [
            Option(OC.ASSIGNED_IP_ADDRESS, IPv4Address("192.0.2.11")),
            Option(OC.BINDING_STATUS, WinRedistribution.BACKUP),
            Option(OC.IP_FLAGS, 0),
            Option(OC.MS_CLIENT_SUBNET_MASK, IPv4Address("255.255.255.0")),
        ]
    else:
        active = [
            Option(OC.ASSIGNED_IP_ADDRESS, ip),
            Option(OC.BINDING_STATUS, BindingStatus.ACTIVE),
            Option(OC.CLIENT_IDENTIFIER, b"\x01" + MAC),
            Option(OC.CLIENT_HARDWARE_ADDRESS, hw),
            Option(OC.LEASE_EXPIRATION_TIME, T + 3600),
            Option(OC.POTENTIAL_EXPIRATION_TIME, T + 5400),
            Option(OC.START_TIME_OF_STATE, T),
            Option(OC.CLIENT_LAST_TRANSACTION_TIME, T),
            Option(OC.IP_FLAGS, IscIpFlags.BOOTP),
            Option(OC.DDNS, Ddns(0x0005, b"\x05host1\x07example\x03com\x00")),
            Option(OC.CLIENT_REQUEST_OPTIONS, b"\x63\x82\x53\x63\x0c\x05host1"),
            Option(OC.CLIENT_REPLY_OPTIONS, b"\x63\x82\x53\x63\x3a\x04\x00\x00\x07\x08"),
        ]
        backup = []

    msgs = [
        FailoverMessage(MessageType.POOLREQ, 1, T),
        FailoverMessage(MessageType.POOLRESP, 1, T, [Option(OC.ADDRESSES_TRANSFERRED, 5)]),
        FailoverMessage(MessageType.BNDUPD, 2, T, active),
        FailoverMessage(MessageType.BNDACK, 2, T, [Option(OC.ASSIGNED_IP_ADDRESS, ip)]),
        FailoverMessage(
            MessageType.BNDACK,
            3,
            T,
            [
                Option(OC.ASSIGNED_IP_ADDRESS, ip),
                Option(OC.REJECT_REASON, RejectReason.OUTDATED_BINDING_INFO),
                Option(OC.MESSAGE, "outdated binding"),
            ],
        ),
        FailoverMessage(MessageType.CONNECT, 0, T, connect_opts),
        FailoverMessage(MessageType.CONNECTACK, 0, T, connectack_opts),
        FailoverMessage(
            MessageType.CONNECTACK,
            4,
            T,
            [
                Option(OC.RELATIONSHIP_NAME, name),
                Option(OC.PROTOCOL_VERSION, 1),
                Option(OC.REJECT_REASON, RejectReason.DUPLICATE_CONNECTION),
                Option(OC.MESSAGE, "duplicate connection"),
            ],
        ),
        FailoverMessage(MessageType.UPDREQALL, 5, T),
        FailoverMessage(MessageType.UPDDONE, 5, T),
        FailoverMessage(MessageType.UPDREQ, 6, T),
        FailoverMessage(
            MessageType.STATE,
            7,
            T,
            [
                Option(OC.SERVER_STATE, ServerState.RECOVER),
                Option(OC.SERVER_FLAGS, ServerFlags.STARTUP),
                Option(OC.START_TIME_OF_STATE, T - 60),
            ],
        ),
        FailoverMessage(MessageType.CONTACT, 8, T),
        FailoverMessage(
            MessageType.DISCONNECT,
            9,
            T,
            [Option(OC.REJECT_REASON, RejectReason.NO_TRAFFIC), Option(OC.MESSAGE, "timeout")],
        ),
    ]
    if win:
        msgs.append(FailoverMessage(MessageType.BNDUPD, 10, T, [*active, *backup]))
        msgs.append(
            FailoverMessage(MessageType.UPDREQ, 11, T, [Option(OC.MS_SCOPE_ID_LIST, (subnet,))])
        )
    return msgs


__all__ = [
    "SPEC_VECTORS",
    "WINDOWS_VECTORS",
    "MessageDigest",
    "typical_messages",
]
