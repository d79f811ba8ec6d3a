"""Seed inputs for the fuzzers, taken from the real captures (no tshark needed).

A minimal pcapng reader (section header, interface description and enhanced packet blocks,
Ethernet link type) pulls out

* ``dhcp``: every UDP payload to or from port 67/68 (one DHCP message each), and
* ``failover``: every failover message, by concatenating each TCP direction's payloads to or
  from port 647 in capture order and splitting them with :class:`FrameBuffer` (the captures
  are loss-free loopback/bridge traffic, so no sequence-number reassembly is needed).

``python fuzz/corpus.py OUTDIR`` writes them as files (one input each) into
``OUTDIR/dhcp`` and ``OUTDIR/failover`` for atheris/libFuzzer; the unit tests call
:func:`dhcp_messages` / :func:`failover_frames` directly.
"""

from __future__ import annotations

import hashlib
import struct
import sys
from collections.abc import Iterator
from pathlib import Path

CAPTURES = Path(__file__).resolve().parents[1].parent / "shared" / "captures"
DEFAULT_CAPTURES = (CAPTURES, Path("/work/shared/captures"))
FAILOVER_PORT = 647


def capture_dir() -> Path | None:
    for d in DEFAULT_CAPTURES:
        if d.is_dir() and any(d.glob("*.pcapng")):
            return d
    return None


def _packets(path: Path) -> Iterator[bytes]:
    """Link-layer frames of one pcapng file (Ethernet interfaces only)."""
    data = path.read_bytes()
    pos = 0
    endian = "<"
    linktypes: list[int] = []
    while pos + 12 <= len(data):
        btype = struct.unpack_from(endian + "I", data, pos)[0]
        if btype == 0x0A0D0D0A:  # section header: byte order from its magic
            magic = data[pos + 8 : pos + 12]
            endian = "<" if magic == b"\x4d\x3c\x2b\x1a" else ">"
            linktypes = []
        blen = struct.unpack_from(endian + "I", data, pos + 4)[0]
        if blen < 12 or pos + blen > len(data):
            break
        body = data[pos + 8 : pos + blen - 4]
        if btype == 1:  # interface description
            linktypes.append(struct.unpack_from(endian + "H", body, 0)[0])
        elif btype == 6:  # enhanced packet
            iface, _, _, caplen, _ = struct.unpack_from(endian + "IIIII", body, 0)
            if iface < len(linktypes) and linktypes[iface] == 1:
                yield body[20 : 20 + caplen]
        pos += blen


def _transport(frame: bytes) -> tuple[int, bytes, int, int, bytes] | None:
    """(ip protocol, src+dst addresses, sport, dport, payload) of an IPv4 TCP/UDP frame."""
    eth_type = struct.unpack_from("!H", frame, 12)[0] if len(frame) >= 14 else 0
    off = 14
    if eth_type == 0x8100 and len(frame) >= 18:
        eth_type = struct.unpack_from("!H", frame, 16)[0]
        off = 18
    if eth_type != 0x0800 or len(frame) < off + 20:
        return None
    ihl = (frame[off] & 0x0F) * 4
    total = struct.unpack_from("!H", frame, off + 2)[0]
    proto = frame[off + 9]
    addrs = frame[off + 12 : off + 20]
    ip_end = min(len(frame), off + total)
    l4 = off + ihl
    if proto == 17 and ip_end >= l4 + 8:
        sport, dport = struct.unpack_from("!HH", frame, l4)
        return proto, addrs, sport, dport, frame[l4 + 8 : ip_end]
    if proto == 6 and ip_end >= l4 + 20:
        sport, dport = struct.unpack_from("!HH", frame, l4)
        doff = (frame[l4 + 12] >> 4) * 4
        return proto, addrs, sport, dport, frame[l4 + doff : ip_end]
    return None


def _pcaps(directory: Path | None) -> list[Path]:
    d = directory if directory is not None else capture_dir()
    return sorted(d.glob("*.pcapng")) if d is not None else []


def dhcp_messages(directory: Path | None = None) -> list[bytes]:
    """Every distinct DHCP payload (UDP port 67/68) of the captures, in capture order."""
    seen: dict[bytes, None] = {}
    for path in _pcaps(directory):
        for frame in _packets(path):
            t = _transport(frame)
            if t is not None and t[0] == 17 and {t[2], t[3]} & {67, 68} and t[4]:
                seen.setdefault(bytes(t[4]), None)
    return list(seen)


def failover_frames(directory: Path | None = None) -> list[bytes]:
    """Every distinct failover message (TCP port 647) of the captures, in capture order."""
    from tandem.errors import DecodeError
    from tandem.wire.framing import FrameBuffer

    seen: dict[bytes, None] = {}
    for path in _pcaps(directory):
        streams: dict[tuple[bytes, int, int], FrameBuffer] = {}
        for frame in _packets(path):
            t = _transport(frame)
            if t is None or t[0] != 6 or FAILOVER_PORT not in (t[2], t[3]) or not t[4]:
                continue
            fb = streams.setdefault((t[1], t[2], t[3]), FrameBuffer())
            if fb.broken:
                continue
            try:
                for msg in fb.feed(t[4]):
                    seen.setdefault(msg, None)
            except DecodeError:
                pass  # a capture that starts mid-stream: ignore that direction
    return list(seen)


def write(outdir: Path) -> dict[str, int]:
    """Seed directories per harness target: dhcp/engine (DHCP payloads), failover (frames)
    and peer (frames behind a mode byte, cycling through the 16 modes of fuzz_peer)."""
    counts: dict[str, int] = {}
    dhcp, frames = dhcp_messages(), failover_frames()
    peer = [bytes((i % 16,)) + f for i, f in enumerate(frames)]
    for name, items in (("dhcp", dhcp), ("engine", dhcp), ("failover", frames), ("peer", peer)):
        d = outdir / name
        d.mkdir(parents=True, exist_ok=True)
        for item in items:
            (d / hashlib.sha1(item).hexdigest()).write_bytes(item)
        counts[name] = len(items)
    return counts


if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "fuzz/corpus")
    print(write(out))
