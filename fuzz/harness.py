"""Run one fuzz target under atheris (libFuzzer): ``python fuzz/harness.py TARGET [libFuzzer
args] [corpus dirs]``. Targets: dhcp, engine, failover, peer. ``make fuzz`` runs them all.

A finding is an uncaught exception (the oracles in fuzz/targets.py raise AssertionError on
anything but documented behaviour); libFuzzer then writes the input as ``crash-*``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parent))

with atheris.instrument_imports(include=["tandem"]):
    import targets

_engine: targets.EngineTarget | None = None
_peers: dict[bool, targets.PeerTarget] = {}


def fuzz_dhcp(data: bytes) -> None:
    targets.check_dhcp_decode(data)


def fuzz_engine(data: bytes) -> None:
    global _engine
    if _engine is None or _engine.handled >= 5000:  # a fresh engine now and then
        _engine = targets.EngineTarget()
    _engine.check(data)


def fuzz_failover(data: bytes) -> None:
    targets.check_failover_decode(data)
    cuts = [b * 7 for b in data[-3:]] if len(data) > 3 else []
    targets.check_framing(data, cuts)


def fuzz_peer(data: bytes) -> None:
    """First byte: mode (bits 0-2, see targets.Mode; bit 3: FailoverPeer instead of a bare
    PeerConnection); the rest is the stream from the partner."""
    if not data:
        return
    bits, rest = data[0], data[1:]
    if bits & 8:
        secret = bool(bits & 2)
        peer = _peers.get(secret)
        if peer is None:
            peer = _peers[secret] = targets.PeerTarget(secret)
        peer.check(rest)
    else:
        targets.check_connection(rest, bits & 7)


TARGETS = {"dhcp": fuzz_dhcp, "engine": fuzz_engine, "failover": fuzz_failover,
           "peer": fuzz_peer}


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in TARGETS:
        sys.exit(f"usage: {sys.argv[0]} {{{','.join(TARGETS)}}} [libFuzzer args] [corpus]")
    target = TARGETS[sys.argv[1]]
    atheris.Setup([sys.argv[0], *sys.argv[2:]], target)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
