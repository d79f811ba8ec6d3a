"""Failover wire codec: spec vectors both ways, real ISC captures, tshark as an oracle,
hypothesis round-trips per family and per message, and malformed input -> DecodeError only."""

from __future__ import annotations

import collections
import hmac
import shutil
import struct
import subprocess
import xml.etree.ElementTree as ET
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import pytest
from failover_vectors import (
    SPEC_VECTORS,
    WINDOWS_VECTORS,
    T,
    typical_messages,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tandem.errors import DecodeError
from tandem.wire import failover as fo
from tandem.wire.failover import (
    REGISTRY,
    BindingStatus,
    Ddns,
    DigestCheck,
    DigestType,
    FailoverMessage,
    HardwareAddress,
    MessageDigest,
    MessageType,
    Option,
    OptionCode,
    RejectReason,
    ServerState,
    WinAddressState,
    WinDhcid,
    WinDnsFlags,
    WinIpFlags,
    batch_violation,
    compute_digest,
    decode,
    encode,
    verify_digest,
    win_lease_status,
    win_status_fields,
    win_to_binding_status,
)
from tandem.wire.framing import FrameBuffer

OC = OptionCode
CAPTURES = sorted(Path("/work/shared/captures").glob("*.pcapng"))
TSHARK = shutil.which("tshark") or ("/usr/bin/tshark" if Path("/usr/bin/tshark").exists() else None)


# ---- spec vectors ---------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "wire", "msg"), SPEC_VECTORS, ids=[v[0] for v in SPEC_VECTORS])
def test_spec_vector_decodes(name: str, wire: bytes, msg: FailoverMessage) -> None:
    assert decode(wire, "isc") == msg


@pytest.mark.parametrize(("name", "wire", "msg"), SPEC_VECTORS, ids=[v[0] for v in SPEC_VECTORS])
def test_spec_vector_encodes(name: str, wire: bytes, msg: FailoverMessage) -> None:
    assert encode(msg, "isc") == wire
    msg.payload_offset = None  # the isc default must be 12
    assert encode(msg, "isc") == wire


@pytest.mark.parametrize(
    ("name", "wire", "msg"), WINDOWS_VECTORS, ids=[v[0] for v in WINDOWS_VECTORS]
)
def test_windows_vector_both_ways(name: str, wire: bytes, msg: FailoverMessage) -> None:
    assert decode(wire, "windows") == msg
    assert encode(msg, "windows") == wire
    msg.payload_offset = None  # the windows default must be 8
    assert encode(msg, "windows") == wire


def test_spec_values_read_back() -> None:
    m = decode(SPEC_VECTORS[2][1])
    assert m.msg_type is MessageType.CONNECT
    assert m.text(OC.RELATIONSHIP_NAME) == "dhcp-failover"
    assert m.get_int(OC.MCLT) == 3600
    assert m.get(OC.HASH_BUCKET_ASSIGNMENT) == b"\xff" * 16 + b"\x00" * 16
    u = decode(SPEC_VECTORS[3][1])
    assert u.get(OC.BINDING_STATUS) is BindingStatus.ACTIVE
    assert u.get(OC.CLIENT_HARDWARE_ADDRESS) == HardwareAddress(1, bytes.fromhex("001122334455"))
    assert u.get_int(OC.POTENTIAL_EXPIRATION_TIME) == T + 86400 + 1800


def test_dialect_changes_layout_of_same_bytes() -> None:
    # The Windows BNDUPD read as isc: chaddr is htype 0 + 10 bytes, IP-flags 1 byte is malformed.
    with pytest.raises(DecodeError):
        decode(WINDOWS_VECTORS[0][1], "isc")
    # Windows strings are UTF-16LE; isc reads the same bytes as 8-bit text with NULs.
    m = decode(WINDOWS_VECTORS[1][1], "isc")
    assert m.get(OC.RELATIONSHIP_NAME) == "f\x00o\x00"
    # Codes 30-41 are Microsoft options only in the windows dialect; isc keeps raw bytes.
    assert decode(WINDOWS_VECTORS[2][1], "isc").get(OC.MS_SCOPE_ID_LIST) == bytes.fromhex(
        "0001a8c0000200c0"
    )


def test_payload_offset_rule() -> None:
    body = bytes.fromhex("0014000101")  # protocol-version 1
    for payoff in (0, 8, 11, 12):
        wire = struct.pack("!HBBII", 17, 5, payoff, T, 1) + body
        m = decode(wire)
        assert m.options == [Option(OC.PROTOCOL_VERSION, 1)]
        assert m.payload_offset == payoff and m.extra_header == b""
        assert encode(m) == wire
    wire = struct.pack("!HBBII", 19, 5, 14, T, 1) + b"\xaa\xbb" + body
    m = decode(wire)
    assert m.extra_header == b"\xaa\xbb" and m.options == [Option(OC.PROTOCOL_VERSION, 1)]
    assert encode(m) == wire


def test_unknown_option_and_type_round_trip_raw() -> None:
    wire = struct.pack("!HBBII", 22, 200, 12, T, 5) + bytes.fromhex("0063 0006 0102 0304 0506")
    m = decode(wire)
    assert m.msg_type == 200 and m.options == [Option(99, bytes.fromhex("010203040506"))]
    assert encode(m) == wire


def test_repeated_options_kept_in_order_and_grouped() -> None:
    m = typical_messages("windows")[-2]  # batched BNDUPD: active group + backup group
    wire = encode(m, "windows")
    back = decode(wire, "windows")
    assert back.options == m.options
    head, groups = back.address_groups()
    assert head == []
    assert [g[0].value for g in groups] == [IPv4Address("192.0.2.10"), IPv4Address("192.0.2.11")]
    assert back.get_all(OC.BINDING_STATUS) == [0x21, 2]


def test_text_strips_windows_nul() -> None:
    m = FailoverMessage(MessageType.CONNECT, options=[Option(OC.RELATIONSHIP_NAME, "fo\x00")])
    wire = encode(m, "windows")
    assert wire.endswith("fo\x00".encode("utf-16-le"))
    back = decode(wire, "windows")
    assert back.get(OC.RELATIONSHIP_NAME) == "fo\x00" and back.text(OC.RELATIONSHIP_NAME) == "fo"


# ---- malformed input ------------------------------------------------------------------------


def _msg(body: bytes, mtype: int = 3, payoff: int = 12, length: int | None = None) -> bytes:
    n = 12 + len(body) if length is None else length
    return struct.pack("!HBBII", n, mtype, payoff, T, 1) + body


MALFORMED = [
    ("empty", b"", "isc"),
    ("short header", bytes(11), "isc"),
    ("length too small", _msg(b"", length=11), "isc"),
    ("length mismatch", _msg(b"\x00\x02\x00\x04\xc0\x00\x02\x0a", length=19), "isc"),
    ("length > data", _msg(b"", length=13), "isc"),
    ("payoff beyond length", _msg(b"", payoff=13), "isc"),
    ("truncated option header", _msg(b"\x00\x02\x00"), "isc"),
    ("option overruns", _msg(b"\x00\x02\x00\x05\xc0\x00\x02\x0a"), "isc"),
    ("ipv4 wrong size", _msg(b"\x00\x02\x00\x03\xc0\x00\x02"), "isc"),
    ("u8 wrong size", _msg(b"\x00\x03\x00\x02\x02\x00"), "isc"),
    ("u32 wrong size", _msg(b"\x00\x0d\x00\x02\x00\x00"), "isc"),
    ("isc ip-flags 1 byte", _msg(b"\x00\x0c\x00\x01\x00"), "isc"),
    ("windows ip-flags 2 bytes", _msg(b"\x00\x0c\x00\x02\x00\x00"), "windows"),
    ("empty hwaddr", _msg(b"\x00\x05\x00\x00"), "isc"),
    ("windows hwaddr < 5", _msg(b"\x00\x05\x00\x04\x00\x02\x00\xc0"), "windows"),
    ("ddns < 2", _msg(b"\x00\x09\x00\x01\x00"), "isc"),
    ("empty digest", _msg(b"\x00\x11\x00\x00"), "isc"),
    ("odd utf-16", _msg(b"\x00\x16\x00\x03fo\x00", mtype=5), "windows"),
    ("scope list not 4k", _msg(b"\x00\x1e\x00\x05\x00\x01\xa8\xc0\x00", mtype=9), "windows"),
    ("too long", _msg(bytes(4) * 600), "isc"),
]


@pytest.mark.parametrize(("name", "wire", "dialect"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_raises_decode_error(name: str, wire: bytes, dialect: fo.Dialect) -> None:
    with pytest.raises(DecodeError):
        decode(wire, dialect)


def test_encode_refuses_bad_values() -> None:
    with pytest.raises(ValueError):
        encode(FailoverMessage(MessageType.STATE, options=[Option(OC.SERVER_STATE, 256)]))
    with pytest.raises(ValueError):
        encode(FailoverMessage(MessageType.STATE, xid=2**32))
    with pytest.raises(TypeError):
        encode(FailoverMessage(MessageType.STATE, options=[Option(999, 5)]))
    with pytest.raises(ValueError):  # isc chaddr has no subnet, windows needs one
        hw = HardwareAddress(1, b"\x01" * 6, IPv4Address("192.0.2.0"))
        encode(
            FailoverMessage(MessageType.BNDUPD, options=[Option(OC.CLIENT_HARDWARE_ADDRESS, hw)])
        )
    with pytest.raises(ValueError):
        hw = HardwareAddress(1, b"\x01" * 6)
        encode(
            FailoverMessage(MessageType.BNDUPD, options=[Option(OC.CLIENT_HARDWARE_ADDRESS, hw)]),
            "windows",
        )
    with pytest.raises(ValueError):
        big = [Option(OC.MESSAGE, "x" * 1000), Option(OC.RELATIONSHIP_NAME, "y" * 1100)]
        encode(FailoverMessage(MessageType.DISCONNECT, options=big))


# ---- batching rules -------------------------------------------------------------------------


def _group(last_octet: int) -> list[Option]:
    return [
        Option(OC.ASSIGNED_IP_ADDRESS, IPv4Address(f"192.0.2.{last_octet}")),
        Option(OC.BINDING_STATUS, 2),
    ]


def test_batching_rules_per_dialect() -> None:
    two = FailoverMessage(MessageType.BNDUPD, 1, T, [*_group(1), *_group(2)])
    assert batch_violation(two, "windows") is None
    assert "limit 1" in (batch_violation(two, "isc") or "")
    with pytest.raises(ValueError):
        encode(two, "isc")
    sixteen = FailoverMessage(MessageType.BNDUPD, 1, T, [o for i in range(16) for o in _group(i)])
    assert batch_violation(sixteen, "windows") is None
    sixteen.options += _group(99)
    assert "limit 16" in (batch_violation(sixteen, "windows") or "")
    dup_in_group = FailoverMessage(
        MessageType.BNDUPD, 1, T, [*_group(1), Option(OC.BINDING_STATUS, 1)]
    )
    assert "repeated" in (batch_violation(dup_in_group, "windows") or "")
    dup_state = FailoverMessage(
        MessageType.STATE, 1, T, [Option(OC.SERVER_STATE, 2), Option(OC.SERVER_STATE, 3)]
    )
    assert batch_violation(dup_state, "windows") is not None
    # decode stays permissive: the peer decides what a violation costs
    assert decode(encode(two, "windows"), "isc").options == two.options


def test_digest_must_be_last_for_isc() -> None:
    d = Option(OC.MESSAGE_DIGEST, MessageDigest(1, bytes(16)))
    first = FailoverMessage(MessageType.STATE, 1, T, [d, Option(OC.SERVER_STATE, 2)])
    assert batch_violation(first, "isc") is not None
    assert batch_violation(first, "windows") is None
    last = FailoverMessage(MessageType.STATE, 1, T, [Option(OC.SERVER_STATE, 2), d])
    assert batch_violation(last, "isc") is None


# ---- message digest -------------------------------------------------------------------------

SECRET = b"s3cret"


@pytest.mark.parametrize("dialect", fo.DIALECTS)
@pytest.mark.parametrize(
    ("dtype", "hname", "size"),
    [(DigestType.HMAC_SHA256, "sha256", 32), (DigestType.HMAC_MD5, "md5", 16)],
)
def test_digest_sign_and_verify(dialect: fo.Dialect, dtype: int, hname: str, size: int) -> None:
    msg = typical_messages(dialect)[2]  # BNDUPD
    wire = encode(msg, dialect, secret=SECRET, digest_type=dtype)
    # the digest is the last option: code 17, length 1 + size, type byte, HMAC
    assert wire[-(size + 5) : -size] == struct.pack("!HHB", 17, size + 1, dtype)
    # independent recomputation: HMAC over the whole message with the digest bytes zeroed
    zeroed = wire[:-size] + bytes(size)
    assert wire[-size:] == hmac.new(SECRET, zeroed, hname).digest()
    assert compute_digest(wire, SECRET) == wire[-size:]
    assert verify_digest(wire, SECRET) is DigestCheck.OK
    assert verify_digest(wire, b"other") is DigestCheck.MISMATCH
    tampered = bytearray(wire)
    tampered[9] ^= 1  # xid
    assert verify_digest(bytes(tampered), SECRET) is DigestCheck.MISMATCH
    assert verify_digest(encode(msg, dialect), SECRET) is DigestCheck.MISSING
    back = decode(wire, dialect)
    assert back.get(OC.MESSAGE_DIGEST) == MessageDigest(dtype, wire[-size:])
    assert encode(back, dialect) == wire  # a received signed message round-trips


def test_digest_unsupported_type_and_wrong_size() -> None:
    m = FailoverMessage(
        MessageType.CONTACT, 1, T, [Option(OC.MESSAGE_DIGEST, MessageDigest(7, b"x"))]
    )
    assert verify_digest(encode(m), SECRET) is DigestCheck.UNSUPPORTED
    m.options = [Option(OC.MESSAGE_DIGEST, MessageDigest(2, bytes(31)))]
    assert verify_digest(encode(m), SECRET) is DigestCheck.MISMATCH
    assert int(DigestCheck.MISSING) == RejectReason.MISSING_DIGEST == 21
    with pytest.raises(ValueError):
        encode(m, secret=SECRET)  # already carries a digest


# ---- Windows binding-status helpers ---------------------------------------------------------


def test_windows_status_helpers() -> None:
    s = win_lease_status(WinAddressState.ACTIVE, WinDhcid.FROM_CLIENT_ID, WinDnsFlags.BOTH_REC)
    assert s == 0x01 | 0x08 | 0x20
    assert win_status_fields(s) == (
        WinAddressState.ACTIVE,
        WinDhcid.FROM_CLIENT_ID,
        WinDnsFlags.BOTH_REC,
    )
    assert win_to_binding_status(1, 0, False) is BindingStatus.FREE
    assert win_to_binding_status(4, 0, False) is BindingStatus.FREE
    assert win_to_binding_status(6, 0, False) is BindingStatus.BACKUP
    assert win_to_binding_status(s, WinIpFlags.RELEASED, True) is BindingStatus.RELEASED
    assert win_to_binding_status(0x03, 0, True) is BindingStatus.EXPIRED
    assert win_to_binding_status(0x02, 0, True) is BindingStatus.EXPIRED
    assert win_to_binding_status(s, 0, True) is BindingStatus.ACTIVE
    with pytest.raises(ValueError):
        win_lease_status(4)


# ---- real captures --------------------------------------------------------------------------


def _capture_streams(path: Path) -> dict[tuple[str, int, str, int], list[bytes]]:
    """TCP payload segments per direction, in sequence order, duplicates/overlaps trimmed."""
    from scapy.layers.inet import IP, TCP
    from scapy.utils import PcapNgReader

    segs: dict[tuple[str, int, str, int], dict[int, bytes]] = collections.defaultdict(dict)
    isn: dict[tuple[str, int, str, int], int] = {}
    with PcapNgReader(str(path)) as reader:
        for pkt in reader:
            if IP not in pkt or TCP not in pkt:
                continue
            tcp = pkt[TCP]
            if 647 not in (tcp.sport, tcp.dport):
                continue
            key = (pkt[IP].src, tcp.sport, pkt[IP].dst, tcp.dport)
            if tcp.flags & 0x02:
                isn[key] = tcp.seq
            payload = bytes(tcp.payload)
            if payload:
                segs[key].setdefault(tcp.seq, payload)
    out: dict[tuple[str, int, str, int], list[bytes]] = {}
    for key, by_seq in segs.items():
        nxt = isn.get(key, min(by_seq) - 1) + 1
        chunks = []
        for seq in sorted(by_seq):
            data = by_seq[seq]
            if seq < nxt:
                data = data[nxt - seq :]
            assert seq <= nxt, f"gap in {path.name} {key}"
            if data:
                chunks.append(data)
                nxt += len(data)
        out[key] = chunks
    return out


@pytest.fixture(scope="module")
def captured() -> list[tuple[str, bytes]]:
    pytest.importorskip("scapy")
    if not CAPTURES:
        pytest.skip("no captures in /work/shared/captures")
    msgs: list[tuple[str, bytes]] = []
    for path in CAPTURES:
        for chunks in _capture_streams(path).values():
            fb = FrameBuffer()
            for chunk in chunks:
                msgs.extend((path.name, m) for m in fb.feed(chunk))
            assert fb.pending == 0, f"{path.name}: stream ends mid-message"
    return msgs


def test_every_captured_message_round_trips(captured: list[tuple[str, bytes]]) -> None:
    counts: collections.Counter[str] = collections.Counter()
    for name, wire in captured:
        msg = decode(wire, "isc")
        assert encode(msg, "isc") == wire, f"{name}: {wire.hex()}"
        assert batch_violation(msg, "isc") is None  # ISC never batches, never repeats
        assert msg.payload_offset == 12  # ISC sends 12
        counts[MessageType(msg.msg_type).name] += 1
    print("\ncaptured failover messages per type:", dict(sorted(counts.items())), len(captured))
    assert len(captured) > 2000
    for t in (
        "BNDUPD",
        "BNDACK",
        "CONNECT",
        "CONNECTACK",
        "UPDREQALL",
        "UPDDONE",
        "STATE",
        "CONTACT",
    ):
        assert counts[t] > 0, t


def test_captured_option_values_are_sane(captured: list[tuple[str, bytes]]) -> None:
    seen_codes: set[int] = set()
    for _, wire in captured:
        msg = decode(wire, "isc")
        seen_codes.update(o.code for o in msg.options)
        if msg.msg_type == MessageType.BNDUPD:
            assert msg.options[0].code == OC.ASSIGNED_IP_ADDRESS
            assert isinstance(msg.get(OC.BINDING_STATUS), BindingStatus)
            hw = msg.get(OC.CLIENT_HARDWARE_ADDRESS)
            assert hw is None or (
                isinstance(hw, HardwareAddress) and hw.htype == 1 and len(hw.address) == 6
            )
        elif msg.msg_type == MessageType.STATE:
            assert isinstance(msg.get(OC.SERVER_STATE), ServerState)
        elif msg.msg_type == MessageType.CONNECT:
            assert msg.text(OC.VENDOR_CLASS_IDENTIFIER) == "isc-4.4.3-P1"
            assert len(msg.get(OC.HASH_BUCKET_ASSIGNMENT) or b"") == 32
    assert {2, 3, 5, 6, 13, 15, 18, 21, 22, 24, 25, 28} <= seen_codes


# ---- tshark as an independent oracle --------------------------------------------------------


def _tshark_supports_windows() -> bool:
    assert TSHARK is not None
    out = subprocess.run([TSHARK, "-G", "fields"], capture_output=True, text=True, check=False)
    return any(
        line.split("\t")[2].startswith("dhcpfo.ms_")
        for line in out.stdout.splitlines()
        if line.count("\t") >= 2
    )


def _write_pcap(path: Path, payloads: list[bytes]) -> None:
    from scapy.layers.inet import IP, TCP
    from scapy.layers.l2 import Ether
    from scapy.utils import wrpcap

    a, b, sport = "192.0.2.1", "192.0.2.2", 40000
    e = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
    r = Ether(src="02:00:00:00:00:02", dst="02:00:00:00:00:01")
    seq = 1000
    pkts = [
        e / IP(src=a, dst=b) / TCP(sport=sport, dport=647, flags="S", seq=seq - 1),
        r / IP(src=b, dst=a) / TCP(sport=647, dport=sport, flags="SA", seq=5000, ack=seq),
        e / IP(src=a, dst=b) / TCP(sport=sport, dport=647, flags="A", seq=seq, ack=5001),
    ]
    for p in payloads:
        pkts.append(
            e / IP(src=a, dst=b) / TCP(sport=sport, dport=647, flags="PA", seq=seq, ack=5001) / p
        )
        seq += len(p)
    wrpcap(str(path), pkts)


# tshark 4.0 shows client-identifier and DDNS as ASCII strings and flags any NUL byte in them
# as "Trailing stray characters"; real ISC traffic in the captures gets the same warning.
_TSHARK_STRING_FIELDS = {"dhcpfo.clientidentifier", "dhcpfo.ftddns"}


@pytest.mark.parametrize("dialect", fo.DIALECTS)
def test_tshark_decodes_what_we_encode(dialect: fo.Dialect, tmp_path: Path) -> None:
    pytest.importorskip("scapy")
    if TSHARK is None:
        pytest.skip("tshark not installed")
    if dialect == "windows" and not _tshark_supports_windows():
        pytest.skip(
            "this tshark's dhcpfo dissector predates MS-DHCPF support (Wireshark < 4.2): it calls "
            "payload offset 8 bogus and dissects no options"
        )
    msgs = typical_messages(dialect)
    payloads = [encode(m, dialect) for m in msgs]
    signed = FailoverMessage(MessageType.CONTACT, 77, T)
    dtype = DigestType.HMAC_MD5 if dialect == "isc" else DigestType.HMAC_SHA256
    msgs.append(decode(encode(signed, dialect, secret=SECRET, digest_type=dtype), dialect))
    payloads.append(encode(msgs[-1], dialect))
    pcap = tmp_path / f"{dialect}.pcap"
    _write_pcap(pcap, payloads)
    out = subprocess.run(
        [TSHARK, "-r", str(pcap), "-T", "pdml", "-o", "tcp.desegment_tcp_streams:TRUE"],
        capture_output=True,
        text=True,
        check=True,
    )
    root = ET.fromstring(out.stdout)
    parent = {c: p for p in root.iter() for c in p}
    problems = []
    for el in root.iter("field"):
        name = el.get("name", "")
        if name in ("_ws.malformed", "_ws.malformed.expert"):
            problems.append(f"malformed: {el.get('showname')}")
        elif name == "_ws.expert":
            owner = parent.get(el)
            owner_name = owner.get("name", "") if owner is not None else ""
            sev = {c.get("name"): c.get("show") for c in el}.get("_ws.expert.severity", "")
            msg = {c.get("name"): c.get("showname") for c in el}.get("_ws.expert.message", "")
            if owner_name.startswith("tcp") or owner_name == "":
                continue  # TCP handshake chatter
            if owner_name in _TSHARK_STRING_FIELDS and "Trailing stray" in str(msg):
                continue
            problems.append(f"expert {sev} on {owner_name}: {msg}")
    assert problems == []
    assert (
        "[Malformed"
        not in subprocess.run(
            [TSHARK, "-r", str(pcap), "-V"], capture_output=True, text=True, check=True
        ).stdout
    )

    # Field-by-field comparison of what tshark saw with what we meant.
    pdus = [p for p in root.iter("proto") if p.get("name") == "dhcpfo"]
    assert len(pdus) == len(msgs)
    for pdu, msg in zip(pdus, msgs, strict=True):
        fields: dict[str, list[str]] = collections.defaultdict(list)
        for f in pdu.iter("field"):
            fields[f.get("name", "")].append(f.get("show", ""))
        assert fields["dhcpfo.type"] == [str(int(msg.msg_type))]
        assert int(fields["dhcpfo.xid"][0], 16) == msg.xid
        assert fields["dhcpfo.optioncode"] == [str(o.code) for o in msg.options]
        for o in msg.options:
            if o.code == OC.ASSIGNED_IP_ADDRESS:
                assert str(o.value) in fields["dhcpfo.assignedipaddress"]
            elif o.code == OC.MCLT:
                assert fields["dhcpfo.mclt"] == [str(o.value)]
            elif o.code == OC.SERVER_STATE:
                assert fields["dhcpfo.serverstatus"] == [str(int(o.value))]  # type: ignore[arg-type]
            elif o.code == OC.REJECT_REASON:
                assert fields["dhcpfo.rejectreason"] == [str(int(o.value))]  # type: ignore[arg-type]
            elif o.code == OC.RELATIONSHIP_NAME:
                assert fields["dhcpfo.relationshipname"] == [str(o.value).rstrip("\x00")]
            elif o.code == OC.CLIENT_HARDWARE_ADDRESS:
                assert isinstance(o.value, HardwareAddress)
                assert fields["dhcpfo.clienthardwareaddress"] == [o.value.address.hex(":")]
            elif o.code == OC.MESSAGE_DIGEST:
                assert fields["dhcpfo.message_digest_type"] == [str(dtype)]


# ---- hypothesis: per family -----------------------------------------------------------------

_u32 = st.integers(0, 2**32 - 1)
_ipv4 = st.builds(IPv4Address, _u32)
_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)

VALUE_STRATEGIES: dict[str, st.SearchStrategy[Any]] = {
    "u8": st.integers(0, 255),
    "u16": st.integers(0, 0xFFFF),
    "u32": _u32,
    "time": _u32,
    "ipv4": _ipv4,
    "ipv4-le-list": st.lists(_ipv4, max_size=8).map(tuple),
    "bytes": st.binary(max_size=64),
    "text8": _text,
    "text16": _text,
    "hwaddr": st.builds(HardwareAddress, st.integers(0, 255), st.binary(max_size=16)),
    "hwaddr-windows": st.builds(
        HardwareAddress, st.integers(0, 255), st.binary(max_size=16), _ipv4
    ),
    "ddns": st.builds(Ddns, st.integers(0, 0xFFFF), st.binary(max_size=40)),
    "digest": st.builds(MessageDigest, st.integers(0, 255), st.binary(max_size=40)),
    "binding-status": st.integers(0, 255),
    "server-state": st.integers(0, 255),
    "reject-reason": st.integers(0, 255),
}
FIXED_SIZE = {
    "u8": 1,
    "u16": 2,
    "u32": 4,
    "time": 4,
    "ipv4": 4,
    "binding-status": 1,
    "server-state": 1,
    "reject-reason": 1,
}
MIN_SIZE = {"hwaddr": 1, "hwaddr-windows": 5, "ddns": 2, "digest": 1}
FAMILIES = sorted({f.name: f for reg in REGISTRY.values() for f in reg.values()}.items())


def test_every_family_has_a_strategy() -> None:
    assert {name for name, _ in FAMILIES} == set(VALUE_STRATEGIES)


def _raw_for(name: str) -> st.SearchStrategy[bytes]:
    if name in FIXED_SIZE:
        return st.binary(min_size=FIXED_SIZE[name], max_size=FIXED_SIZE[name])
    if name == "ipv4-le-list":
        return st.lists(st.binary(min_size=4, max_size=4), max_size=8).map(b"".join)
    if name == "text16":
        return st.lists(st.binary(min_size=2, max_size=2), max_size=30).map(b"".join)
    return st.binary(min_size=MIN_SIZE.get(name, 0), max_size=64)


@pytest.mark.parametrize(("name", "family"), FAMILIES, ids=[n for n, _ in FAMILIES])
@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_family_round_trips(name: str, family: fo.OptionFamily, data: st.DataObject) -> None:
    value = data.draw(VALUE_STRATEGIES[name])
    assert family.decode(family.encode(value)) == value
    raw = data.draw(_raw_for(name))
    assert family.encode(family.decode(raw)) == raw


# ---- hypothesis: per message ----------------------------------------------------------------


@st.composite
def wire_messages(draw: st.DrawFn, dialect: fo.Dialect) -> bytes:
    reg = REGISTRY[dialect]
    codes = draw(st.lists(st.integers(1, 45), unique=True, max_size=10))
    body = b""
    for code in codes:
        fam = reg.get(code)
        raw = draw(_raw_for(fam.name)) if fam else draw(st.binary(max_size=20))
        body += struct.pack("!HH", code, len(raw)) + raw
    if draw(st.booleans()):  # a trailing digest, as a signed message would carry
        body += struct.pack("!HHB", 17, 17, 1) + bytes(16)
    extra = draw(st.sampled_from([b"", b"", b"\x01\x02\x03\x04"]))
    payoff = 12 + len(extra) if extra else draw(st.sampled_from([8, 12, 0, 11]))
    mtype = draw(st.integers(0, 255))
    hdr = struct.pack("!HBBII", 12 + len(extra) + len(body), mtype, payoff, draw(_u32), draw(_u32))
    return hdr + extra + body


@pytest.mark.parametrize("dialect", fo.DIALECTS)
@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_message_bytes_round_trip(dialect: fo.Dialect, data: st.DataObject) -> None:
    wire = data.draw(wire_messages(dialect))
    msg = decode(wire, dialect)
    if batch_violation(msg, dialect) is None:
        assert encode(msg, dialect) == wire
    else:
        with pytest.raises(ValueError):
            encode(msg, dialect)


@pytest.mark.parametrize("dialect", fo.DIALECTS)
@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_message_value_round_trip(dialect: fo.Dialect, data: st.DataObject) -> None:
    reg = REGISTRY[dialect]
    codes = data.draw(st.lists(st.sampled_from(sorted(reg)), unique=True, max_size=12))
    codes = [c for c in codes if c != OC.MESSAGE_DIGEST]
    opts = [Option(c, data.draw(VALUE_STRATEGIES[reg[c].name])) for c in codes]
    mtype = data.draw(st.sampled_from(list(MessageType)))
    msg = FailoverMessage(mtype, data.draw(_u32), data.draw(_u32), opts)
    try:
        wire = encode(msg, dialect)
    except ValueError as exc:
        assert "exceeds" in str(exc)
        return
    back = decode(wire, dialect)
    assert back.options == opts and back.msg_type == mtype
    assert (back.xid, back.time, back.payload_offset) == (
        msg.xid,
        msg.time,
        fo.PAYLOAD_OFFSET[dialect],
    )


# ---- hypothesis: garbage in, DecodeError out ------------------------------------------------


TYPICAL_WIRE = {d: [encode(m, d) for m in typical_messages(d)] for d in fo.DIALECTS}


def _decode_only_decode_error(wire: bytes, dialect: fo.Dialect) -> None:
    try:
        msg = decode(wire, dialect)
    except DecodeError:
        return
    # whatever decodes re-encodes to the same bytes unless it breaks a batching rule
    if batch_violation(msg, dialect) is None:
        assert encode(msg, dialect) == wire


@pytest.mark.parametrize("dialect", fo.DIALECTS)
@settings(max_examples=300, deadline=None)
@given(wire=st.binary(max_size=300))
def test_random_bytes_only_decode_error(dialect: fo.Dialect, wire: bytes) -> None:
    _decode_only_decode_error(wire, dialect)


@pytest.mark.parametrize("dialect", fo.DIALECTS)
@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_mutations_only_decode_error(dialect: fo.Dialect, data: st.DataObject) -> None:
    base = bytearray(data.draw(st.sampled_from(TYPICAL_WIRE[dialect])))
    for _ in range(data.draw(st.integers(1, 6))):
        op = data.draw(st.sampled_from(["flip", "set", "cut", "grow"]))
        if op == "flip" and base:
            i = data.draw(st.integers(0, len(base) - 1))
            base[i] ^= 1 << data.draw(st.integers(0, 7))
        elif op == "set" and base:
            i = data.draw(st.integers(0, len(base) - 1))
            base[i] = data.draw(st.integers(0, 255))
        elif op == "cut" and base:
            del base[data.draw(st.integers(0, len(base) - 1)) :]
        else:
            base += data.draw(st.binary(min_size=1, max_size=8))
    if data.draw(st.booleans()) and len(base) >= 2:  # keep the length field honest half the time
        struct.pack_into("!H", base, 0, len(base) & 0xFFFF)
    _decode_only_decode_error(bytes(base), dialect)


def test_encode_rejects_a_value_of_the_wrong_type_with_type_error() -> None:
    # raw bytes where the DDNS family expects a Ddns value: a caller's error, reported as
    # TypeError (not an AttributeError leaking from inside the family encoder)
    msg = FailoverMessage(MessageType.BNDUPD, 1, 0, [Option(OC.DDNS, b"\x00\x01")])
    with pytest.raises(TypeError):
        encode(msg, "isc")
