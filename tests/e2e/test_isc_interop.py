"""Tandem with a real ISC dhcpd 4.4 (Debian ``isc-dhcp-server``) as its failover partner.

Topology (every piece in namespaces this module creates, once per direction):

    client LAN 192.0.2.0/24 (bridge br0 in "lan")
      primary eth0 192.0.2.2   secondary eth0 192.0.2.3   clients eth0 (udhcpc)
    failover link 198.51.100.0/24 (a veth pair between the two server namespaces)
      primary fo0 198.51.100.2  <-- TCP 647 -->  secondary fo0 198.51.100.3

Two directions: ``tandem-primary`` (Tandem primary, hot standby, isc dialect; dhcpd
secondary) and ``isc-primary`` (dhcpd primary with ``split 256``, i.e. every hash bucket
to the primary = hot standby; Tandem secondary). MCLT 30 s, lease 60 s, 100 addresses.

Scenario, the same in both directions (both run side by side, each in its own lab):

  both reach NORMAL (Tandem: ``tandem status --json``; dhcpd: its log and the ``failover
  peer ... state`` record of its lease file) -> the secondary holds BACKUP addresses and
  both sides agree which (dhcpd's lease file ``binding state backup`` = Tandem's store) ->
  a udhcpc client is served by the primary, and the secondary's store shows that binding
  active for the client's MAC (the BNDUPD was accepted); a second client is served and
  killed (its lease will expire) -> the first client renews with the primary at T1 and the
  secondary learns the new lease end (the link idles ~15 s meanwhile: both sides send
  CONTACT, and the link stays up) -> ``kill -9`` the primary -> the secondary
  goes communications-interrupted -> a new udhcpc client is served by the secondary from
  its BACKUP addresses -> the primary restarts on the same store -> both back in NORMAL ->
  the primary's store holds the secondary's binding -> the first client releases and the
  second one's lease expires: both stores end FREE/BACKUP for those addresses. The failover
  link is captured: nobody sends DISCONNECT and no binding update is rejected, except the
  one known expiry race (``_known_expiry_race``).

dhcpd runs in the foreground (``-f -d``), by PID, with its config, lease and pid files in
the lab directory. About 60 s in all.
"""

from __future__ import annotations

import calendar
import json
import re
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from .capture import ACK, OFFER, Capture, Pkt
from .clients import BOUND_EVENTS, HookEvent, Udhcpc
from .conftest import make_lab, require
from .netns import Lab, Netns, Proc, wait_for
from .servers import TANDEM, server_kind
from .test_failover_pair import FO_IP, LAN_IP, PairServer

pytestmark = [pytest.mark.root, pytest.mark.slow, pytest.mark.timeout(180)]

DHCPD = "/usr/sbin/dhcpd"
RELATIONSHIP = "tdm-e2e-hot-standby"  # PairServer's [failover] name
POOL = ("192.0.2.100", "192.0.2.199")
MCLT_S, LEASE_S = 30, 60  # PairServer: mclt 30 s, lease 60 s (reserve 20 % as primary)
TANDEM_RESERVE = 20
FIRST_MAC = "02:00:5e:fa:21:01"  # served by the primary
LATER_MAC = "02:00:5e:fa:21:02"  # served by the secondary while the primary is down
GONE_MAC = "02:00:5e:fa:21:03"  # served by the primary, then vanishes: its lease expires
MACS = {"first": FIRST_MAC, "later": LATER_MAC, "gone": GONE_MAC}
DIRECTIONS = ("tandem-primary", "isc-primary")


def isc_conf(role: str) -> str:
    partner = "secondary" if role == "primary" else "primary"
    # ISC: mclt and split/hba only on the primary; split 256 = the primary serves every
    # hash bucket (hot standby)
    primary_only = f"  mclt {MCLT_S};\n  split 256;\n" if role == "primary" else ""
    return f"""\
# written by tests/e2e/test_isc_interop.py
authoritative;
ddns-update-style none;
failover peer "{RELATIONSHIP}" {{
  {role};
  address {FO_IP[role]};
  port 647;
  peer address {FO_IP[partner]};
  peer port 647;
  max-response-delay 20;
  max-unacked-updates 10;
  load balance max seconds 5;
{primary_only}}}
subnet 192.0.2.0 netmask 255.255.255.0 {{
  option routers {LAN_IP["primary"]};
  default-lease-time {LEASE_S};
  max-lease-time {LEASE_S};
  pool {{
    failover peer "{RELATIONSHIP}";
    range {POOL[0]} {POOL[1]};
  }}
}}
"""


# --- ISC dhcpd -----------------------------------------------------------------------


@dataclass(frozen=True)
class IscLease:
    address: str
    state: str  # "active", "backup", "free", ...
    hwaddr: str
    ends: float  # 0 when the record has none
    starts: float  # 0 when the record has none


_LEASE_BLOCK = re.compile(r"^lease (\S+) \{(.*?)^\}", re.M | re.S)
_PEER_BLOCK = re.compile(r'^failover peer "([^"]+)" state \{(.*?)^\}', re.M | re.S)
_BINDING = re.compile(r"^\s*binding state (\S+);", re.M)
_HW = re.compile(r"^\s*hardware ethernet (\S+);", re.M)
_ENDS = re.compile(r"^\s*ends \d (\d+/\d+/\d+ \d+:\d+:\d+);", re.M)
_STARTS = re.compile(r"^\s*starts \d (\d+/\d+/\d+ \d+:\d+:\d+);", re.M)


def _isc_time(m: re.Match[str] | None) -> float:
    return float(calendar.timegm(time.strptime(m.group(1), "%Y/%m/%d %H:%M:%S"))) if m else 0.0


_MY_STATE = re.compile(r"^\s*my state (\S+)", re.M)
_PARTNER_STATE = re.compile(r"^\s*partner state (\S+)", re.M)
_ISC_MOVE = re.compile(r"failover peer \S+: I move from (\S+) to (\S+)")


def dhcpd_binary(workdir: Path) -> str:
    """The dhcpd to run. Debian and Ubuntu ship an AppArmor profile for /usr/sbin/dhcpd that
    allows only /etc/dhcp, /var/lib/dhcp and the like; where AppArmor is on, run a copy from
    the lab directory (profiles attach by path), so the config and lease file can live
    there."""
    enabled = Path("/sys/module/apparmor/parameters/enabled")
    try:
        on = enabled.read_text().strip() == "Y"
    except OSError:
        on = False
    if not on:
        return DHCPD
    copy = workdir / "dhcpd"
    if not copy.exists():
        shutil.copy2(DHCPD, copy)
    return str(copy)


class IscSide:
    """``dhcpd -f -d`` in a namespace, with its files in ``workdir``."""

    kind = "isc"

    def __init__(self, ns: Netns, role: str, workdir: Path):
        self.ns = ns
        self.role = role
        self.lan_ip = LAN_IP[role]
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.conf = workdir / "dhcpd.conf"
        self.lease_file = workdir / "dhcpd.leases"
        self.pid_file = workdir / "dhcpd.pid"
        self.conf.write_text(isc_conf(role))
        self.lease_file.write_text("")
        self.proc: Proc | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        self.proc = self.ns.spawn(
            f"dhcpd-{self.role}-{self.starts}",
            dhcpd_binary(self.workdir),
            "-f",
            "-d",
            "-4",
            "-cf",
            str(self.conf),
            "-lf",
            str(self.lease_file),
            "-pf",
            str(self.pid_file),
            "eth0",
        )
        proc = self.proc
        wait_for(lambda: (not proc.alive()) or self.ns.udp_bound(67), 20, "dhcpd to start")
        if not proc.alive():
            raise RuntimeError(f"dhcpd exited at start:\n{proc.tail(40)}")

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill9()

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()

    def log(self) -> str:
        return "\n".join(
            (self.ns.lab.workdir / f"dhcpd-{self.role}-{n}.log").read_text(errors="replace")
            for n in range(1, self.starts + 1)
        )

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def moves(self) -> list[tuple[str, str]]:
        return _ISC_MOVE.findall(self.log())

    def mark(self) -> int:
        return len(self.moves())

    def reached(self, state: str, since: int = 0) -> bool:
        """``state`` in Tandem's spelling (NORMAL, COMMUNICATIONS_INTERRUPTED)."""
        isc = state.lower().replace("_", "-")
        return any(to == isc for _f, to in self.moves()[since:])

    def normal(self, since: int = 0) -> bool:
        return self.reached("NORMAL", since) and self.peer_states() == ("normal", "normal")

    def leases(self) -> dict[str, IscLease]:
        """The last record of every address in the lease file (dhcpd appends)."""
        text = self.lease_file.read_text(errors="replace") if self.lease_file.exists() else ""
        out = {}
        for addr, body in _LEASE_BLOCK.findall(text):
            st = _BINDING.search(body)
            hw = _HW.search(body)
            out[addr] = IscLease(
                addr,
                st.group(1) if st else "?",
                hw.group(1) if hw else "",
                _isc_time(_ENDS.search(body)),
                _isc_time(_STARTS.search(body)),
            )
        return out

    def backup(self) -> set[str]:
        return {a for a, le in self.leases().items() if le.state == "backup"}

    def active(self) -> set[tuple[str, str]]:
        return {(a, le.hwaddr) for a, le in self.leases().items() if le.state == "active"}

    def binding(self, address: str) -> tuple[str, float] | None:
        """(state in Tandem's spelling, lease end) of ``address``."""
        le = self.leases().get(address)
        return (le.state.upper(), le.ends) if le else None

    def peer_states(self) -> tuple[str, str] | None:
        """(my state, partner state) of the last ``failover peer ... state`` record."""
        text = self.lease_file.read_text(errors="replace") if self.lease_file.exists() else ""
        blocks = [b for name, b in _PEER_BLOCK.findall(text) if name == RELATIONSHIP]
        if not blocks:
            return None
        my, partner = _MY_STATE.search(blocks[-1]), _PARTNER_STATE.search(blocks[-1])
        return (my.group(1) if my else "?", partner.group(1) if partner else "?")


# --- Tandem --------------------------------------------------------------------------


class TandemSide(PairServer):
    def __init__(self, ns: Netns, role: str, workdir: Path):
        super().__init__(ns, role, workdir)
        self.lan_ip = LAN_IP[role]

    def status(self) -> dict[str, object] | None:
        proc = subprocess.run(
            [str(TANDEM), "status", "-c", str(self.config_path), "--json"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if proc.returncode != 0:
            return None
        fo = json.loads(proc.stdout).get("failover")
        return fo if isinstance(fo, dict) else None

    def mark(self) -> int:
        return len(self.transitions())

    def reached(self, state: str, since: int = 0) -> bool:
        return any(to == state for _f, to in self.transitions()[since:])

    def normal(self, since: int = 0) -> bool:
        fo = self.status()
        return bool(
            self.reached("NORMAL", since)
            and fo
            and fo["state"] == "NORMAL"
            and fo["partner_state"] == "NORMAL"
        )

    def backup(self) -> set[str]:
        return {le.address for le in self.leases() if le.state == "BACKUP"}

    def active(self) -> set[tuple[str, str]]:
        return {(le.address, le.hwaddr) for le in self.leases() if le.state == "ACTIVE"}

    def binding(self, address: str) -> tuple[str, float] | None:
        for le in self.leases():
            if le.address == address:
                return (le.state, float(le.raw["ends"]))  # type: ignore[arg-type]
        return None


Side = TandemSide | IscSide


# --- the failover link, as tshark reads it -------------------------------------------------


@dataclass(frozen=True)
class FoFrame:
    time: float
    src: str
    types: tuple[int, ...]  # one per failover message in the frame
    rejects: tuple[int, ...]
    messages: tuple[str, ...]  # option 16 texts (reject explanations)


def read_failover(path: Path) -> list[FoFrame]:
    argv = [
        "tshark", "-n", "-r", str(path), "-d", "tcp.port==647,dhcpfo", "-Y", "dhcpfo",
        "-T", "fields", "-E", "separator=/t", "-E", "occurrence=a", "-E", "aggregator=|",
        "-e", "frame.time_epoch", "-e", "ip.src", "-e", "dhcpfo.type", "-e", "dhcpfo.rejectreason",
        "-e", "dhcpfo.message",
    ]  # fmt: skip
    out = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=120).stdout
    frames = []
    for line in out.splitlines():
        v = [*line.split("\t"), "", "", "", "", ""][:5]
        frames.append(
            FoFrame(
                float(v[0]),
                v[1],
                tuple(int(x) for x in v[2].split("|") if x),
                tuple(int(x) for x in v[3].split("|") if x),
                tuple(x for x in v[4].split("|") if x),
            )
        )
    return frames


# --- the scenario --------------------------------------------------------------------------


@dataclass
class Scenario:
    direction: str
    primary: Side
    secondary: Side
    clients: dict[str, Udhcpc]
    workdir: Path
    packets: list[Pkt] = field(default_factory=list)
    fo_frames: list[FoFrame] = field(default_factory=list)
    backup_at_secondary: set[str] = field(default_factory=set)
    backup_at_primary: set[str] = field(default_factory=set)
    bound: dict[str, HookEvent] = field(default_factory=dict)
    killed_at: float = 0.0
    restarted_at: float = 0.0
    primary_active_end: set[tuple[str, str]] = field(default_factory=set)
    first_end_at_secondary: float = 0.0
    renewed: HookEvent | None = None
    renewed_end_at_secondary: float = 0.0
    after_release: dict[str, str] = field(default_factory=dict)
    interrupted_before_kill: list[str] = field(default_factory=list)
    after_expiry: dict[str, str] = field(default_factory=dict)
    isc_record_of_first: IscLease | None = None
    steps: list[str] = field(default_factory=list)
    failed: str = ""

    def context(self) -> str:
        pk = "\n".join(p.short() + f" sid={p.server_id} lt={p.lease_time}" for p in self.packets)
        return (
            f"\n--- {self.direction} steps: {self.steps}\n--- failed: {self.failed}"
            f"\n--- packets:\n{pk}"
            f"\n--- primary ({self.primary.kind}) log (tail):\n{self.primary.log_tail(30)}"
            f"\n--- secondary ({self.secondary.kind}) log (tail):\n"
            f"{self.secondary.log_tail(30)}\n--- workdir: {self.workdir}"
        )


def build(lab: Lab) -> tuple[Netns, dict[str, Netns], dict[str, Netns]]:
    lan, servers = lab.failover_pair(LAN_IP, FO_IP)
    clients = {}
    for name, mac in MACS.items():
        ns = lab.netns(f"c{name[:3]}")
        lab.plug(lan, "br0", ns, mac=mac)
        clients[name] = ns
    return lan, servers, clients


def start_client(sc: Scenario, name: str) -> HookEvent:
    c = sc.clients[name]
    t0 = time.time()
    c.proc = c.ns.spawn(f"client-{name}", *c.command())
    return c.wait_event(BOUND_EVENTS, 25, after=t0 - 1)


def run_scenario(sc: Scenario) -> None:
    primary, secondary = sc.primary, sc.secondary
    step = "start both servers"
    try:
        # a dhcpd primary whose first dial fails retries only after 90 s: start the
        # secondary (which only listens, in both programs) first
        secondary.start()
        primary.start()
        step = "both reach NORMAL"
        wait_for(lambda: primary.normal() and secondary.normal(), 40, step, interval=0.5)
        sc.steps.append("normal")

        step = "the secondary holds BACKUP addresses and both sides agree which"

        def settled() -> set[str] | None:
            if primary.kind == "tandem":  # Tandem's reserve target: 20 % of 100
                got = secondary.backup()
                return got if len(got) >= TANDEM_RESERVE else None
            # dhcpd aims at 50/50 and balances in several rounds
            sec, pri = secondary.backup(), primary.backup()
            return sec if sec and sec == pri else None

        wait_for(settled, 25, step, interval=0.5)
        time.sleep(1)  # dhcpd's pool balancing may still be moving a last batch
        wait_for(settled, 10, step, interval=0.5)
        sc.backup_at_secondary = secondary.backup()
        sc.backup_at_primary = primary.backup()
        sc.steps.append(f"backup {len(sc.backup_at_secondary)}")

        step = "a client is served by the primary"
        sc.bound["first"] = start_client(sc, "first")
        sc.steps.append(f"first bound {sc.bound['first'].address}")

        step = "a second client is served by the primary and vanishes (kill -9)"
        sc.bound["gone"] = start_client(sc, "gone")
        gone_client = sc.clients["gone"].proc
        assert gone_client is not None
        gone_client.kill9()  # no release, no renewal: its MCLT-long lease will expire
        sc.steps.append(f"gone bound {sc.bound['gone'].address}")

        step = "the secondary's store shows that binding active (BNDUPD accepted)"
        first = (sc.bound["first"].address, FIRST_MAC)
        wait_for(lambda: first in secondary.active(), 15, step, interval=0.3)
        sc.first_end_at_secondary = (secondary.binding(first[0]) or ("", 0.0))[1]
        if isinstance(secondary, IscSide):
            sc.isc_record_of_first = secondary.leases().get(first[0])
        sc.steps.append("secondary knows first")

        step = "the client renews with the primary; the secondary learns the new lease end"
        # udhcpc renews at T1 = half the MCLT-long first lease; meanwhile the link idles and
        # both sides send CONTACT (keep-alive a third of the partner's 20 s receive timer)
        sc.renewed = sc.clients["first"].wait_event(
            {"RENEW"}, MCLT_S, after=sc.bound["first"].time + 1
        )

        def renewed_end() -> float | None:
            b = secondary.binding(first[0])
            return b[1] if b and b[0] == "ACTIVE" and b[1] > sc.first_end_at_secondary else None

        sc.renewed_end_at_secondary = wait_for(renewed_end, 15, step, interval=0.3)
        sc.steps.append("renewal known")

        step = "kill -9 the primary; the secondary goes communications-interrupted"
        sc.interrupted_before_kill = [
            side.kind for side in (primary, secondary) if side.reached("COMMUNICATIONS_INTERRUPTED")
        ]
        mark = secondary.mark()
        primary.kill9()
        sc.killed_at = time.time()
        wait_for(lambda: secondary.reached("COMMUNICATIONS_INTERRUPTED", mark), 30, step)
        sc.steps.append("secondary comm-interrupted")

        step = "a new client is served by the secondary"
        sc.bound["later"] = start_client(sc, "later")
        sc.steps.append(f"later bound {sc.bound['later'].address}")

        step = "restart the primary (same store); both back in NORMAL"
        p_mark, s_mark = primary.mark(), secondary.mark()
        sc.restarted_at = time.time()
        primary.start()
        wait_for(
            lambda: primary.normal(p_mark) and secondary.normal(s_mark), 45, step, interval=0.5
        )
        sc.steps.append("normal again")

        step = "the primary's store holds the secondary's binding"
        later = (sc.bound["later"].address, LATER_MAC)

        def primary_knows() -> set[tuple[str, str]] | None:
            got = primary.active()
            return got if later in got else None

        sc.primary_active_end = wait_for(primary_knows, 15, step, interval=0.5)
        sc.steps.append("primary knows later")

        step = "the first client releases; both stores make the address available"
        sc.clients["first"].release()

        def released() -> dict[str, str] | None:
            got = {}
            for role, side in (("primary", primary), ("secondary", secondary)):
                b = side.binding(first[0])
                got[role] = b[0] if b else "?"
            return got if set(got.values()) <= {"FREE", "BACKUP"} else None

        sc.after_release = wait_for(released, 15, step, interval=0.5)
        sc.steps.append("released")

        step = "the vanished client's lease expires; both stores make the address available"
        gone = sc.bound["gone"].address

        def expired() -> dict[str, str] | None:
            got = {}
            for role, side in (("primary", primary), ("secondary", secondary)):
                b = side.binding(gone)
                got[role] = b[0] if b else "?"
            return got if set(got.values()) <= {"FREE", "BACKUP"} else None

        remaining = sc.bound["gone"].time + MCLT_S + 10 - time.time()
        sc.after_expiry = wait_for(expired, max(remaining, 5), step, interval=0.5)
        sc.steps.append("expired")
    except Exception as exc:
        sc.failed = f"{step}: {exc!r}"


@dataclass
class Run:
    """One direction's lab, ready to run."""

    sc: Scenario
    lan_cap: Capture
    fo_cap: Capture

    def run(self) -> None:
        sc = self.sc
        try:
            run_scenario(sc)
        finally:
            try:
                sc.packets = self.lan_cap.stop()
                self.fo_cap.stop()
                sc.fo_frames = read_failover(sc.workdir / "failover.pcapng")
            except Exception as exc:  # the scenario's own failure comes first
                sc.failed = sc.failed or f"captures: {exc!r}"
            for c in sc.clients.values():
                c.stop()
            for side in (sc.primary, sc.secondary):
                side.stop()


def prepare(direction: str, lab: Lab) -> Run:
    lan, server_ns, client_ns = build(lab)
    sides: dict[str, Side] = {}
    for role, ns in server_ns.items():
        tandem_here = (role == "primary") == (direction == "tandem-primary")
        cls = TandemSide if tandem_here else IscSide
        sides[role] = cls(ns, role, lab.workdir / role)
    clients = {}
    for name, ns in client_ns.items():
        d = lab.workdir / name
        d.mkdir(parents=True, exist_ok=True)
        clients[name] = Udhcpc(ns, d)
    sc = Scenario(direction, sides["primary"], sides["secondary"], clients, lab.workdir)
    lan_cap = Capture(lan, "br0", lab.workdir / "lan.pcapng").start()
    fo_cap = Capture(
        server_ns["secondary"], "fo0", lab.workdir / "failover.pcapng", bpf="tcp port 647"
    ).start()
    return Run(sc, lan_cap, fo_cap)


@pytest.fixture(scope="module")
def scenarios(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Scenario]:
    """Both directions, each in its own lab, run side by side (halves the wall time)."""
    require("udhcpc", DHCPD)
    if server_kind() != "tandem":
        pytest.skip("failover interop is a Tandem feature (TANDEM_E2E_SERVER=kea has none)")
    runs = {d: prepare(d, make_lab(request, tmp_path_factory)) for d in DIRECTIONS}
    threads = [threading.Thread(target=r.run, name=d) for d, r in runs.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join(150)
    return {d: r.sc for d, r in runs.items()}


@pytest.fixture(params=DIRECTIONS)
def scenario(request: pytest.FixtureRequest, scenarios: dict[str, Scenario]) -> Scenario:
    return scenarios[request.param]


def _need(sc: Scenario, step: str) -> None:
    if not any(s.startswith(step) for s in sc.steps):
        pytest.fail(f"the scenario did not get to '{step}'" + sc.context())


def _acks(sc: Scenario, mac: str) -> list[Pkt]:
    return [p for p in sc.packets if p.mtype == ACK and p.chaddr == mac and p.yiaddr != "0.0.0.0"]


# --- the expectations -------------------------------------------------------------------


def test_both_reach_normal(scenario: Scenario) -> None:
    _need(scenario, "normal")
    isc = scenario.primary if isinstance(scenario.primary, IscSide) else scenario.secondary
    assert isinstance(isc, IscSide)
    assert ("recover-done", "normal") in isc.moves(), isc.moves()


def test_secondary_holds_backup_addresses_both_agree(scenario: Scenario) -> None:
    """The BNDUPD BACKUP messages were accepted and stored on both sides."""
    _need(scenario, "backup")
    sc = scenario
    assert sc.backup_at_secondary == sc.backup_at_primary, sc.context()
    if sc.direction == "tandem-primary":
        assert len(sc.backup_at_secondary) == TANDEM_RESERVE, sc.context()
    else:  # dhcpd balances FREE/BACKUP to 50/50 within its max-lease-ownership (10 %)
        assert 40 <= len(sc.backup_at_secondary) <= 60, sc.context()


def test_first_client_served_by_primary_known_to_secondary(scenario: Scenario) -> None:
    _need(scenario, "secondary knows first")
    sc = scenario
    acks = _acks(sc, FIRST_MAC)
    assert acks, sc.context()
    assert acks[0].server_id == LAN_IP["primary"], sc.context()
    assert acks[0].yiaddr == sc.bound["first"].address
    assert acks[0].lease_time == MCLT_S, sc.context()  # first lease: MCLT (both programs)
    assert acks[0].yiaddr not in sc.backup_at_secondary
    # the secondary (hot standby: every hash bucket is the primary's) stayed silent
    from_secondary = [
        p
        for p in sc.packets
        if p.mtype in (OFFER, ACK) and p.time < sc.killed_at and p.server_id == LAN_IP["secondary"]
    ]
    assert not from_secondary, "\n".join(p.short() for p in from_secondary)


def test_secondary_serves_new_client_from_backup_after_kill(scenario: Scenario) -> None:
    _need(scenario, "later bound")
    sc = scenario
    acks = [a for a in _acks(sc, LATER_MAC) if a.time > sc.killed_at]
    assert acks, sc.context()
    assert acks[0].server_id == LAN_IP["secondary"], sc.context()
    assert acks[0].yiaddr == sc.bound["later"].address
    assert acks[0].yiaddr in sc.backup_at_secondary, sc.context()
    assert acks[0].lease_time is not None and acks[0].lease_time <= MCLT_S, sc.context()


def test_back_to_normal_and_primary_learns_secondary_binding(scenario: Scenario) -> None:
    _need(scenario, "primary knows later")
    sc = scenario
    assert (sc.bound["later"].address, LATER_MAC) in sc.primary_active_end
    assert (sc.bound["first"].address, FIRST_MAC) in sc.primary_active_end


def test_no_rejects_or_disconnects_on_the_failover_link(scenario: Scenario) -> None:
    sc = scenario
    _need(sc, "normal")
    types = [t for f in sc.fo_frames for t in f.types]
    assert types.count(3) >= 10 and types.count(4) >= 10, types  # BNDUPD, BNDACK flowed
    assert 12 not in types, "DISCONNECT on the failover link" + sc.context()
    rejects = [f for f in sc.fo_frames if f.rejects and not _known_expiry_race(sc, f)]
    assert not rejects, f"rejected messages: {rejects}" + sc.context()


def _known_expiry_race(sc: Scenario, frame: FoFrame) -> bool:
    """The one rejection we accept (docs/decisions.md, ISC dhcpd interop): when a lease
    ends, Tandem as secondary reports EXPIRED at once, and a dhcpd primary whose own expiry
    timer has not fired yet refuses it (reason 2, "invalid state transition: active to
    expired"; dhcpd lets a secondary change an ACTIVE lease only to RELEASED). dhcpd's own
    EXPIRED follows and both sides end FREE (test_expiry_makes_the_address_available...)."""
    return (
        sc.direction == "isc-primary"
        and frame.src == FO_IP["primary"]
        and frame.rejects == (2,)
        and len(frame.messages) == 1
        and frame.messages[0].endswith("invalid state transition: active to expired")
    )


def test_renewal_by_primary_reaches_secondary(scenario: Scenario) -> None:
    """The renewed lease end travelled in a BNDUPD (lease-expiration-time) and was stored."""
    _need(scenario, "renewal known")
    sc = scenario
    assert sc.renewed is not None
    acks = [
        a for a in _acks(sc, FIRST_MAC) if a.time >= sc.renewed.time - 2 and a.time < sc.killed_at
    ]
    assert acks and acks[0].server_id == LAN_IP["primary"], sc.context()
    assert acks[0].lease_time is not None
    end = acks[0].time + acks[0].lease_time
    assert abs(sc.renewed_end_at_secondary - end) <= 2, (sc.renewed_end_at_secondary, end)
    assert sc.renewed_end_at_secondary > sc.first_end_at_secondary


def test_link_stays_up_while_idle(scenario: Scenario) -> None:
    """Both sides keep the link alive with CONTACT while it idles (waiting for the renewal):
    neither goes silent for as long as the other's receive timer (20 s on both), and
    neither side left NORMAL before the primary was killed."""
    _need(scenario, "secondary comm-interrupted")
    sc = scenario
    contacts = {f.src for f in sc.fo_frames if 11 in f.types}
    assert contacts == {FO_IP["primary"], FO_IP["secondary"]}, sc.fo_frames
    for src in contacts:
        times = [f.time for f in sc.fo_frames if f.src == src and f.time < sc.killed_at]
        gaps = [b - a for a, b in zip(times, [*times[1:], sc.killed_at], strict=True)]
        assert times and max(gaps) < 20, (src, max(gaps))
    assert not sc.interrupted_before_kill, sc.context()


def test_release_reaches_both_stores(scenario: Scenario) -> None:
    _need(scenario, "released")
    # RELEASED went across (accepted although dhcpd keeps the renewal's CLTT in it) and
    # both sides made the address available again
    assert set(scenario.after_release.values()) <= {"FREE", "BACKUP"}, scenario.after_release


def test_expiry_makes_the_address_available_on_both_sides(scenario: Scenario) -> None:
    """EXPIRED went across and both ended FREE (or BACKUP): neither side keeps a stale
    EXPIRED record (dhcpd sends no FREE after our ACK; the receiver must set FREE)."""
    _need(scenario, "expired")
    assert set(scenario.after_expiry.values()) <= {"FREE", "BACKUP"}, scenario.after_expiry


def test_isc_secondary_records_the_lease_start(scenarios: dict[str, Scenario]) -> None:
    """Our BNDUPD carries start-time-of-state (25) = lease start, from which dhcpd takes a
    lease's ``starts`` (without it, dhcpd's record of our binding had no start). Only in
    the tandem-primary direction: there dhcpd records a lease Tandem made."""
    sc = scenarios["tandem-primary"]
    _need(sc, "secondary knows first")
    rec = sc.isc_record_of_first
    assert rec is not None and rec.state == "active", rec
    ack = _acks(sc, FIRST_MAC)[0]
    assert abs(rec.starts - ack.time) <= 1.5, (rec, ack.time)
    assert abs(rec.ends - (ack.time + MCLT_S)) <= 1.5, (rec, ack.time)
