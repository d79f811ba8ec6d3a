"""Packet capture with tshark inside a namespace, parsed into DHCP records.

Captures are written to a file by tshark and read back with ``tshark -T fields`` (the
assertions never grep logs). A live ACK counter is available for the crash test, which
needs to know when "some hundreds" of ACKs have left the server.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from .netns import Netns, Proc, wait_for

DISCOVER, OFFER, REQUEST, DECLINE, ACK, NAK, RELEASE, INFORM = range(1, 9)
BROADCAST_IP = "255.255.255.255"
BROADCAST_MAC = "ff:ff:ff:ff:ff:ff"
MARKER_PORT = 9  # discard: the flush marker, never dissected as DHCP

_FIELDS = (
    "frame.time_epoch",
    "eth.src",
    "eth.dst",
    "ip.src",
    "ip.dst",
    "udp.srcport",
    "udp.dstport",
    "dhcp.id",
    "dhcp.option.dhcp",
    "dhcp.flags",
    "dhcp.ip.client",
    "dhcp.ip.your",
    "dhcp.ip.relay",
    "dhcp.hw.mac_addr",
    "dhcp.option.dhcp_server_id",
    "dhcp.option.ip_address_lease_time",
    "dhcp.option.agent_information_option.agent_circuit_id",
    "dhcp.option.agent_information_option.agent_remote_id",
    "dhcp.option.type",
)


@dataclass(frozen=True, slots=True)
class Pkt:
    time: float
    eth_src: str
    eth_dst: str
    ip_src: str
    ip_dst: str
    sport: int
    dport: int
    xid: int
    mtype: int
    broadcast_flag: bool
    ciaddr: str
    yiaddr: str
    giaddr: str
    chaddr: str
    server_id: str
    lease_time: int | None
    circuit_id: str  # option 82.1 as tshark shows it ("" when absent)
    remote_id: str
    option_codes: tuple[int, ...]

    @property
    def has_agent_info(self) -> bool:
        return 82 in self.option_codes

    def short(self) -> str:
        names = {
            1: "DISCOVER",
            2: "OFFER",
            3: "REQUEST",
            4: "DECLINE",
            5: "ACK",
            6: "NAK",
            7: "RELEASE",
            8: "INFORM",
        }
        return (
            f"{self.time:.3f} {names.get(self.mtype, self.mtype)} xid={self.xid:#x} "
            f"{self.ip_src}->{self.ip_dst} ci={self.ciaddr} yi={self.yiaddr} "
            f"gi={self.giaddr} ch={self.chaddr}"
        )


def _int(text: str, default: int = 0) -> int:
    text = text.split(",")[0]
    if not text:
        return default
    return int(text, 16) if text.startswith("0x") else int(text)


def read_pcap(path: Path) -> list[Pkt]:
    argv = [
        "tshark",
        "-n",
        "-r",
        str(path),
        "-Y",
        "dhcp",
        "-T",
        "fields",
        "-E",
        "separator=/t",
        "-E",
        "occurrence=a",
        "-E",
        "aggregator=,",
    ]
    for f in _FIELDS:
        argv += ["-e", f]
    out = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=120).stdout
    pkts: list[Pkt] = []
    for line in out.splitlines():
        v = line.split("\t")
        v += [""] * (len(_FIELDS) - len(v))
        types = v[-1]
        # one value per field (chaddr also shows up inside option 61), but all option codes
        v = [x.split(",")[0] for x in v[:-1]] + [types]
        pkts.append(
            Pkt(
                time=float(v[0]),
                eth_src=v[1],
                eth_dst=v[2],
                ip_src=v[3],
                ip_dst=v[4],
                sport=_int(v[5]),
                dport=_int(v[6]),
                xid=_int(v[7]),
                mtype=_int(v[8]),
                broadcast_flag=bool(_int(v[9]) & 0x8000),
                ciaddr=v[10],
                yiaddr=v[11],
                giaddr=v[12],
                chaddr=v[13],
                server_id=v[14],
                lease_time=_int(v[15]) if v[15] else None,
                circuit_id=v[16],
                remote_id=v[17],
                option_codes=tuple(_int(c) for c in v[18].split(",") if c),
            )
        )
    return pkts


_ACK_SUMMARY = re.compile(r"\bDHCP ACK\b")


class Capture:
    """``tshark`` writing ``path`` on ``dev`` inside ``ns``.

    With ``count_acks`` tshark also prints one summary line per packet (``-P``), which a
    thread reads to count ACKs as they pass (the trigger for the crash test only).
    """

    def __init__(
        self,
        ns: Netns,
        dev: str,
        path: Path,
        *,
        count_acks: bool = False,
        bpf: str = "udp port 67 or udp port 68",
    ):
        bpf = f"({bpf}) or udp port {MARKER_PORT}"
        self.ns = ns
        self.dev = dev
        self.path = path
        self.count_acks = count_acks
        self.bpf = bpf
        self.proc: Proc | None = None
        self.acks_seen = 0
        self._reader: threading.Thread | None = None
        self._summary: subprocess.Popen[str] | None = None
        ns.lab.on_close(self.close)

    def start(self, timeout: float = 20) -> Capture:
        argv = ["tshark", "-n", "-i", self.dev, "-f", self.bpf, "-w", str(self.path), "-B", "16"]
        if not self.count_acks:
            self.proc = self.ns.spawn(f"tshark-{self.ns.name[-6:]}-{self.path.stem}", *argv)
            wait_for(
                lambda: "Capturing on" in self._output() or self._died(),
                timeout,
                f"tshark on {self.ns.name}/{self.dev}",
            )
        else:
            # stdout is the live summary; stderr (status) goes to the log file
            log = self.path.with_suffix(".tshark.log")
            self._log = log.open("wb")
            self._summary = subprocess.Popen(
                self.ns.argv(*argv, "-P", "-l"),
                stdout=subprocess.PIPE,
                stderr=self._log,
                stdin=subprocess.DEVNULL,
                text=True,
                start_new_session=True,
            )
            self._reader = threading.Thread(target=self._count, daemon=True)
            self._reader.start()
            wait_for(
                lambda: (
                    "Capturing on" in log.read_text(errors="replace")
                    or self._summary is None
                    or self._summary.poll() is not None
                ),
                timeout,
                f"tshark on {self.ns.name}/{self.dev}",
            )
        if self._died():
            raise RuntimeError(f"tshark did not start: {self._output()}")
        # "Capturing on" comes before packets are really captured: wait for a marker
        self.flush()
        return self

    def _count(self) -> None:
        assert self._summary is not None and self._summary.stdout is not None
        for line in self._summary.stdout:
            if _ACK_SUMMARY.search(line):
                self.acks_seen += 1

    def _output(self) -> str:
        if self.proc is not None:
            return self.proc.output()
        return self.path.with_suffix(".tshark.log").read_text(errors="replace")

    def _died(self) -> bool:
        if self.proc is not None:
            return not self.proc.alive()
        return self._summary is not None and self._summary.poll() is not None

    def _marker_seen(self, token: str) -> bool:
        out = subprocess.run(
            [
                "tshark",
                "-n",
                "-r",
                str(self.path),
                "-Y",
                f"udp.dstport == {MARKER_PORT}",
                "-T",
                "fields",
                "-e",
                "data.data",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        ).stdout
        return token.encode().hex() in out

    def flush(self, timeout: float = 15) -> None:
        """Make sure everything that passed so far is in the file: tshark writes what the
        kernel hands it in blocks, and stopping it drops a block not yet handed over.
        Send a marker datagram from this namespace and wait until it is in the file."""
        token = f"tdm-e2e-marker-{time.monotonic_ns()}"
        script = (
            "import socket,sys;s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);"
            "s.setsockopt(socket.SOL_SOCKET,socket.SO_BROADCAST,1);"
            "s.setsockopt(socket.SOL_SOCKET,socket.SO_BINDTODEVICE,sys.argv[1].encode());"
            f"s.sendto(sys.argv[2].encode(),('255.255.255.255',{MARKER_PORT}))"
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.ns.sh(sys.executable, "-c", script, self.dev, token)
            for _ in range(4):
                time.sleep(0.5)
                if self._marker_seen(token):
                    return
        raise TimeoutError(f"capture on {self.ns.name}/{self.dev} never showed its marker")

    def stop(self) -> list[Pkt]:
        """Flush, stop tshark (SIGINT) and parse what it wrote."""
        self.flush()
        if self.proc is not None:
            self.proc.stop(signal.SIGINT, timeout=10)
        elif self._summary is not None:
            if self._summary.poll() is None:
                self._summary.send_signal(signal.SIGINT)
                try:
                    self._summary.wait(10)
                except subprocess.TimeoutExpired:
                    self._summary.kill()
                    self._summary.wait(10)
            if self._reader is not None:
                self._reader.join(10)
            self._log.close()
        return read_pcap(self.path)

    def close(self) -> None:
        """Finalizer: stop tshark if still running (by PID)."""
        if self._summary is not None and self._summary.poll() is None:
            self._summary.kill()
            self._summary.wait(10)
        if self.proc is not None:
            self.proc.stop(signal.SIGINT, timeout=5)
