"""An RFC 2131 DHCP client (§4.4, figure 5) for the simulator.

States: INIT, SELECTING, REQUESTING, BOUND, RENEWING (unicast REQUEST to the server at
T1), REBINDING (broadcast REQUEST at T2), INIT-REBOOT / REBOOTING (a client that remembers
its address), and IDLE (released or stopped: the client sends nothing until started).
Retransmission follows §4.1: 4 s, 8 s, 16 s ... 64 s with +-1 s of jitter while selecting
or requesting; in RENEWING / REBINDING the next try is half the time left until T2 / lease
end, at least ``renew_retry_min_s`` (60 s in the RFC). Lease expiry drops the address and
restarts in INIT. ``release()`` and ``decline()`` are commands a test issues.

The lease end a client believes is the time it sent the REQUEST that got the ACK plus the
lease time (RFC 2131 §4.4.1), never later than what the server recorded.

:class:`Profile` mirrors the habits of real clients (``docs/real-clients.md``):
``UDHCPC`` renews to the ORIGINAL server identifier and broadcasts about 2 s after one
failed unicast renewal; ``DHCLIENT`` keeps one transaction id for its renewals; ``DHCPCD``
never resets ``secs``; ``min_lease_s`` is the shortest lease a client's timers honour.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from ipaddress import IPv4Address

from tandem.errors import DecodeError
from tandem.sim.network import BROADCAST, Frame, Lan
from tandem.sim.scheduler import Scheduler, Timer
from tandem.sim.trace import DhcpInfo, Trace
from tandem.wire.dhcp import (
    BOOTREPLY,
    FLAG_BROADCAST,
    OPT_CLIENT_ID,
    OPT_MESSAGE_TYPE,
    OPT_PARAMETER_REQUEST_LIST,
    OPT_REQUESTED_IP,
    OPT_SERVER_ID,
    ZERO_IP,
    DhcpMessage,
    MessageType,
    decode,
    encode,
)

__all__ = [
    "DHCLIENT",
    "DHCPCD",
    "RFC2131",
    "UDHCPC",
    "Binding",
    "ClientState",
    "Profile",
    "SimClient",
]

CLIENT_PORT = 68
SERVER_PORT = 67


class ClientState(Enum):
    INIT = "INIT"
    SELECTING = "SELECTING"
    REQUESTING = "REQUESTING"
    BOUND = "BOUND"
    RENEWING = "RENEWING"
    REBINDING = "REBINDING"
    INIT_REBOOT = "INIT-REBOOT"
    REBOOTING = "REBOOTING"
    IDLE = "IDLE"


_HOLDING = (ClientState.BOUND, ClientState.RENEWING, ClientState.REBINDING)
# States that wait for an ACK / NAK.
_WAITING = (
    ClientState.REQUESTING,
    ClientState.REBOOTING,
    ClientState.RENEWING,
    ClientState.REBINDING,
)


@dataclass(slots=True, frozen=True)
class Profile:
    """Client behaviour knobs (defaults: the RFC)."""

    name: str = "rfc2131"
    renew_to_original_server: bool = False  # udhcpc: T1 unicast to the first server id
    rebind_after_failed_renew_s: float | None = None  # udhcpc: broadcast ~2 s after one try
    renew_fraction: float = 0.5  # T1 when the server sends none
    rebind_fraction: float = 0.875  # T2 when the server sends none
    min_lease_s: int = 0  # timers use max(lease, min_lease_s) (udhcpc 30, dhcpcd 20)
    keep_xid: bool = False  # dhclient: one xid for all renewals of a binding
    secs_never_resets: bool = False  # dhcpcd: secs counts from the client's start
    broadcast_flag: bool = False  # ask for broadcast replies
    retransmit_s: float = 4.0  # first retransmission (doubles up to 64 s)
    retransmit_max_s: float = 64.0
    retransmit_jitter_s: float = 1.0
    request_tries: int = 4  # REQUESTING / REBOOTING sends before falling back to INIT
    renew_retry_min_s: float = 60.0
    decline_wait_s: float = 10.0  # RFC 2131 §3.1.5: wait before restarting after DECLINE
    nak_wait_s: float = 0.0


RFC2131 = Profile()
DHCLIENT = Profile(name="dhclient", keep_xid=True)
UDHCPC = Profile(
    name="udhcpc", renew_to_original_server=True, rebind_after_failed_renew_s=2.0, min_lease_s=30
)
DHCPCD = Profile(name="dhcpcd", secs_never_resets=True, min_lease_s=20)


@dataclass(slots=True)
class Binding:
    """What the client knows about its lease."""

    address: IPv4Address
    server_id: IPv4Address  # the server that answered last
    original_server_id: IPv4Address  # the server of the first ACK of this binding
    lease_s: int
    start: float  # when the REQUEST that got the ACK was first sent
    t1: float
    t2: float
    end: float
    xid: int


#: ``(client, address, why, now)``: the client stopped using ``address`` without waiting for
#: its lease to end (RELEASE, DECLINE, a NAK, or INIT-REBOOT unanswered: it starts over).
GiveUpListener = Callable[["SimClient", IPv4Address, str, float], None]


class SimClient:
    """One DHCP client on the LAN (see the module docstring)."""

    port = CLIENT_PORT

    def __init__(
        self,
        sched: Scheduler,
        trace: Trace,
        lan: Lan,
        name: str,
        hwaddr: bytes,
        profile: Profile = RFC2131,
        client_id: bytes | None = None,
    ) -> None:
        self.sched = sched
        self.trace = trace
        self.lan = lan
        self.name = name
        self.hwaddr = hwaddr
        self.profile = profile
        self.client_id = client_id
        self.state = ClientState.IDLE
        self.binding: Binding | None = None
        self.remembered: IPv4Address | None = None  # for INIT-REBOOT
        self.rng: random.Random = sched.rng(f"client:{name}")
        self.xid = 0
        self.tries = 0
        self.exchange_start = 0.0  # first send of the current exchange
        self.born = sched.now
        self.offer: DhcpMessage | None = None
        self.powered = True
        self.history: list[Binding] = []  # every binding obtained (ACKs), in order
        self._timer = Timer(sched, self._on_timer, f"{name}:timer")
        # Notified when the client gives an address up on purpose (RELEASE / DECLINE).
        self.on_give_up: list[GiveUpListener] = []

    # ------------------------------------------------------------------ node API

    def is_up(self) -> bool:
        return self.powered

    def owns(self, ip: IPv4Address) -> bool:
        b = self.binding
        return b is not None and self.state in _HOLDING and b.address == ip

    @property
    def address(self) -> IPv4Address | None:
        """The address the client uses now (configured on its interface)."""
        b = self.binding
        return b.address if b is not None and self.state in _HOLDING else None

    def holds(self, now: float) -> Binding | None:
        """The binding the client believes valid at ``now``."""
        b = self.binding
        if b is None or self.state not in _HOLDING or b.end <= now:
            return None
        return b

    @property
    def key(self) -> bytes:
        """The server-side client key (see ``tandem.leases.table.client_key``)."""
        if self.client_id:
            return b"C" + self.client_id
        return b"H" + b"\x01" + self.hwaddr

    # ------------------------------------------------------------------ commands

    def start(self, now: float | None = None) -> None:
        """Power on / start: INIT-REBOOT when it remembers an address, else INIT."""
        now = self.sched.now if now is None else now
        self.powered = True
        if self.remembered is not None:
            self._set(ClientState.INIT_REBOOT, now)
            self._new_exchange(now)
            self._set(ClientState.REBOOTING, now)
            self._send_request(now)
        else:
            self._init(now)

    def stop(self, now: float | None = None) -> None:
        """Power off without RELEASE (the address is remembered for INIT-REBOOT)."""
        now = self.sched.now if now is None else now
        b = self.binding
        if b is not None:
            self.remembered = b.address
        self.binding = None
        self._timer.cancel()
        self._set(ClientState.IDLE, now)
        self.powered = False

    def release(self, now: float | None = None) -> None:
        """Send DHCPRELEASE (unicast to the server) and forget the address."""
        now = self.sched.now if now is None else now
        b = self.binding
        if b is None or self.state not in _HOLDING:
            return
        msg = self._message(MessageType.RELEASE, now, xid=self.rng.getrandbits(32))
        msg.ciaddr = b.address
        msg.options[OPT_SERVER_ID] = b.server_id.packed
        self._give_up(b.address, "release", now)
        self._send(msg, b.address, b.server_id, now)
        self.binding = None
        self.remembered = None
        self._timer.cancel()
        self._set(ClientState.IDLE, now)

    def decline(self, now: float | None = None) -> None:
        """Report the bound address as in use (DHCPDECLINE, broadcast), restart later."""
        now = self.sched.now if now is None else now
        b = self.binding
        if b is None or self.state not in _HOLDING:
            return
        msg = self._message(MessageType.DECLINE, now, xid=self.rng.getrandbits(32))
        msg.options[OPT_REQUESTED_IP] = b.address.packed
        msg.options[OPT_SERVER_ID] = b.server_id.packed
        self._give_up(b.address, "decline", now)
        self.binding = None
        self.remembered = None
        self._set(ClientState.INIT, now)
        self._send(msg, ZERO_IP, BROADCAST, now)
        self._timer.arm(now + self.profile.decline_wait_s)

    def _give_up(self, address: IPv4Address, why: str, now: float) -> None:
        for fn in self.on_give_up:
            fn(self, address, why, now)

    # ------------------------------------------------------------------ state machine

    def _set(self, st: ClientState, now: float) -> None:
        if st is not self.state:
            if self.trace.enabled:
                self.trace.add(now, "state", self.name, detail=f"{self.state.value} -> {st.value}")
            self.state = st

    def _new_exchange(self, now: float, xid: int | None = None) -> None:
        self.xid = xid if xid is not None else self.rng.getrandbits(32)
        self.tries = 0
        self.exchange_start = now

    def _init(self, now: float) -> None:
        self.binding = None
        self.offer = None
        self._set(ClientState.INIT, now)
        self._new_exchange(now)
        self._set(ClientState.SELECTING, now)
        self._send_discover(now)

    def _backoff(self) -> float:
        p = self.profile
        base = min(p.retransmit_s * 2.0 ** max(0, self.tries - 1), p.retransmit_max_s)
        j = p.retransmit_jitter_s
        return max(0.5, base + (self.rng.uniform(-j, j) if j else 0.0))

    def _send_discover(self, now: float) -> None:
        self.tries += 1
        msg = self._message(MessageType.DISCOVER, now)
        if self.remembered is not None:
            msg.options[OPT_REQUESTED_IP] = self.remembered.packed
        self._send(msg, ZERO_IP, BROADCAST, now)
        self._timer.arm(now + self._backoff())

    def _send_request(self, now: float) -> None:
        """REQUESTING / REBOOTING: the broadcast REQUEST (retransmitted by the timer)."""
        self.tries += 1
        msg = self._message(MessageType.REQUEST, now)
        if self.state is ClientState.REQUESTING:
            offer = self.offer
            assert offer is not None
            msg.options[OPT_SERVER_ID] = offer.options[OPT_SERVER_ID]
            msg.options[OPT_REQUESTED_IP] = offer.yiaddr.packed
        else:  # REBOOTING
            assert self.remembered is not None
            msg.options[OPT_REQUESTED_IP] = self.remembered.packed
        self._send(msg, ZERO_IP, BROADCAST, now)
        self._timer.arm(now + self._backoff())

    def _send_renewal(self, now: float) -> None:
        """RENEWING (unicast to the server) or REBINDING (broadcast), ciaddr set."""
        b = self.binding
        assert b is not None
        self.tries += 1
        msg = self._message(MessageType.REQUEST, now)
        msg.ciaddr = b.address
        p = self.profile
        if self.state is ClientState.RENEWING:
            target = b.original_server_id if p.renew_to_original_server else b.server_id
            self._send(msg, b.address, target, now)
            if p.rebind_after_failed_renew_s is not None:
                nxt = now + p.rebind_after_failed_renew_s
                self._timer.arm(min(nxt, b.end))
                return
            limit = b.t2
        else:
            self._send(msg, b.address, BROADCAST, now)
            limit = b.end
        wait = max((limit - now) / 2, p.renew_retry_min_s)
        self._timer.arm(min(now + wait, limit))

    def _on_timer(self, now: float) -> None:
        st = self.state
        b = self.binding
        p = self.profile
        if st is ClientState.INIT:
            self._init(now)
        elif st is ClientState.SELECTING:
            self._send_discover(now)
        elif st in (ClientState.REQUESTING, ClientState.REBOOTING):
            if self.tries >= p.request_tries:
                if st is ClientState.REBOOTING and self.remembered is not None:
                    self._give_up(self.remembered, "reboot unanswered", now)
                    self.remembered = None
                self._init(now)
            else:
                self._send_request(now)
        elif b is not None and now >= b.end:
            self.trace.add(now, "note", self.name, detail=f"lease on {b.address} expired")
            self.remembered = None
            self._init(now)
        elif st is ClientState.BOUND and b is not None:
            if now >= b.t2:
                self._enter_rebinding(now)
            else:
                self._set(ClientState.RENEWING, now)
                self._new_exchange(now, b.xid if p.keep_xid else None)
                self._send_renewal(now)
        elif st is ClientState.RENEWING and b is not None:
            if now >= b.t2 or p.rebind_after_failed_renew_s is not None:
                self._enter_rebinding(now)
            else:
                self._send_renewal(now)
        elif st is ClientState.REBINDING and b is not None:
            self._send_renewal(now)

    def _enter_rebinding(self, now: float) -> None:
        b = self.binding
        assert b is not None
        self._set(ClientState.REBINDING, now)
        self._new_exchange(now, b.xid if self.profile.keep_xid else None)
        self._send_renewal(now)

    # ------------------------------------------------------------------ receiving

    def receive(self, frame: Frame, now: float) -> None:
        if frame.broadcast and frame.payload[28 : 28 + len(self.hwaddr)] != self.hwaddr:
            return  # someone else's broadcast reply (checked before decoding: cheap)
        try:
            msg = decode(frame.payload)
        except DecodeError as exc:
            self.trace.add(now, "drop", self.name, detail=f"malformed from {frame.src_node}: {exc}")
            return
        if msg.op != BOOTREPLY or msg.hwaddr != self.hwaddr:
            return
        if self.trace.enabled:
            self.trace.add(
                now,
                "rx",
                self.name,
                src=frame.src_node,
                dst=self.name,
                unicast=not frame.broadcast,
                dhcp=DhcpInfo.of(msg),
                state=self.state.value,
            )
        if msg.xid != self.xid:
            return
        mt = msg.message_type
        st = self.state
        if mt is MessageType.OFFER:
            if st is ClientState.SELECTING and OPT_SERVER_ID in msg.options:
                self.offer = msg
                self._set(ClientState.REQUESTING, now)
                self.tries = 0
                self._send_request(now)
        elif mt is MessageType.ACK and st in _WAITING:
            self._bind(msg, now)
        elif mt is MessageType.NAK and st in _WAITING:
            self.trace.add(now, "note", self.name, detail=f"NAK from {frame.src_node}")
            dropped = self.binding.address if self.binding is not None else self.remembered
            if dropped is not None:
                self._give_up(dropped, "nak", now)
            self.remembered = None
            self.binding = None
            self.offer = None
            self._set(ClientState.INIT, now)
            self._timer.arm(now + self.profile.nak_wait_s)

    def _bind(self, msg: DhcpMessage, now: float) -> None:
        lease_s = msg.lease_time
        sid = msg.server_id
        if lease_s is None or sid is None or msg.yiaddr == ZERO_IP:
            return  # not a usable ACK: keep waiting (RFC clients ignore it)
        p = self.profile
        old = self.binding
        start = self.exchange_start
        eff = max(lease_s, p.min_lease_s)
        t1_opt = _u32(msg.options.get(58))
        t2_opt = _u32(msg.options.get(59))
        if lease_s < p.min_lease_s or t1_opt is None or t2_opt is None:
            t1 = eff * p.renew_fraction
            t2 = float(int(eff * p.rebind_fraction))
        else:
            t1, t2 = float(t1_opt), float(t2_opt)
        same = old is not None and old.address == msg.yiaddr
        original = old.original_server_id if same and old is not None else sid
        xid = old.xid if same and old is not None and p.keep_xid else self.xid
        b = Binding(
            msg.yiaddr,
            sid,
            original,
            lease_s,
            start,
            start + t1,
            start + t2,
            start + lease_s,
            xid,
        )
        self.binding = b
        self.remembered = b.address
        self.history.append(b)
        self._set(ClientState.BOUND, now)
        # Timers: T1 (unless already past), then T2 and expiry through _on_timer.
        self._timer.arm(b.t1 if b.t1 > now else min(b.t2, b.end))

    # ------------------------------------------------------------------ messages

    def _message(self, mt: MessageType, now: float, xid: int | None = None) -> DhcpMessage:
        p = self.profile
        since = self.born if p.secs_never_resets else self.exchange_start
        opts: dict[int, bytes] = {OPT_MESSAGE_TYPE: bytes((mt,))}
        if self.client_id:
            opts[OPT_CLIENT_ID] = self.client_id
        if mt in (MessageType.DISCOVER, MessageType.REQUEST):
            opts[OPT_PARAMETER_REQUEST_LIST] = bytes((1, 3, 6, 51, 54, 58, 59))
        return DhcpMessage(
            xid=self.xid if xid is None else xid,
            secs=min(0xFFFF, int(now - since)),
            flags=FLAG_BROADCAST if p.broadcast_flag else 0,
            chaddr=self.hwaddr + b"\x00" * (16 - len(self.hwaddr)),
            hlen=len(self.hwaddr),
            options=opts,
        )

    def _send(self, msg: DhcpMessage, src_ip: IPv4Address, dst_ip: IPv4Address, now: float) -> None:
        frame = Frame(self.name, src_ip, CLIENT_PORT, dst_ip, SERVER_PORT, encode(msg))
        self.lan.send(frame, msg, self.state.value)


def _u32(v: bytes | None) -> int | None:
    return int.from_bytes(v, "big") if v is not None and len(v) == 4 else None
