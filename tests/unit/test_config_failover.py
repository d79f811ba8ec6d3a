"""The ``[failover]`` section: its validation (each problem with its path) and the comparison of
two partners' configs (:func:`check_partners`), as tables of input -> exact problem lines."""

from __future__ import annotations

from collections.abc import Callable
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from tandem.config import (
    DEFAULT_RECEIVE_TIMER_S,
    Config,
    check_partners,
    failover_subnets,
    keepalive_interval_s,
    load,
    load_text,
    read_shared_secret,
    receive_timer_s,
)
from tandem.config import validate as validate_module
from tandem.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]

SUBNET = """
[[subnets]]
prefix = "192.0.2.0/24"
pools = [{ start = "192.0.2.100", end = "192.0.2.199" }]
"""

FAILOVER = """
[failover]
name = "pair"
role = "primary"
listen_address = "192.0.2.2"
peer_address = "192.0.2.3"
"""

SECRET = "correct horse battery staple"


def failover(extra: str = "", *, without: str = "", subnets: str = SUBNET, **sub: str) -> str:
    """A config with one subnet and a valid ``[failover]``: ``extra`` lines are appended to
    the section, ``without`` names a setting to leave out, ``sub`` replaces a setting's value
    (``role='"secondary"'``)."""
    lines = []
    for line in FAILOVER.strip().splitlines():
        key = line.split(" = ")[0]
        if key == without:
            continue
        if key in sub:
            line = f"{key} = {sub[key]}"
        lines.append(line)
    return subnets + "\n".join(lines) + "\n" + extra


def problems(text: str) -> list[str]:
    try:
        load_text(text)
    except ConfigError as exc:
        return exc.problems
    return []


BAD: list[tuple[str, str]] = [
    # ---- types and single-field rules (schema)
    (failover(without="name"), "failover.name: required setting is missing"),
    (failover(without="role"), "failover.role: required setting is missing"),
    (failover(without="peer_address"), "failover.peer_address: required setting is missing"),
    (failover(without="listen_address"), "failover.listen_address: required setting is missing"),
    (failover("mclt = 300\n"), "failover.mclt: unknown setting"),
    (
        failover(role='"standby"'),
        'failover.role: must be "primary" or "secondary", got "standby"; use "secondary" '
        "(the standby server of a hot-standby pair)",
    ),
    (
        failover(role='"active"'),
        'failover.role: must be "primary" or "secondary", got "active"; use "primary" '
        "(the active server of a hot-standby pair)",
    ),
    (failover(role='"backup"'), 'failover.role: must be "primary" or "secondary", got "backup"'),
    (
        failover('mode = "hot_standby"\n'),
        'failover.mode: must be "hot-standby" or "load-balance", got "hot_standby"',
    ),
    (failover('dialect = "ms"\n'), 'failover.dialect: must be "isc" or "windows", got "ms"'),
    (
        failover(peer_address='"192.0.2.300"'),
        'failover.peer_address: "192.0.2.300" is not a valid IPv4 address',
    ),
    (failover("peer_port = 0\n"), "failover.peer_port: must be at least 1, got 0"),
    (failover("listen_port = 65536\n"), "failover.listen_port: must be at most 65535, got 65536"),
    (failover("mclt_s = 0\n"), "failover.mclt_s: must be at least 1, got 0"),
    (
        failover("mclt_s = 4294967296\n"),
        "failover.mclt_s: must be at most 4294967295, got 4294967296",
    ),
    (failover("reserve_percent = 101\n"), "failover.reserve_percent: must be at most 100, got 101"),
    (failover("reserve_percent = -1\n"), "failover.reserve_percent: must be at least 0, got -1"),
    (
        failover('mode = "load-balance"\nload_balance_percent = 101\n'),
        "failover.load_balance_percent: must be at most 100, got 101",
    ),
    (
        failover("state_switchover_interval_s = 0\n"),
        "failover.state_switchover_interval_s: must be at least 1, got 0",
    ),
    (
        failover("max_unacked_updates = 0\n"),
        "failover.max_unacked_updates: must be at least 1, got 0",
    ),
    (failover("max_clock_skew_s = 0\n"), "failover.max_clock_skew_s: must be at least 1, got 0"),
    (
        failover("receive_timer_s = 1.5\n"),
        "failover.receive_timer_s: expected a whole number, got 1.5",
    ),
    (failover('subnets = "1"\n'), 'failover.subnets: expected a list, got "1"'),
    (failover("[failover.extra]\n"), "failover.extra: unknown setting"),
    ('failover = "yes"\n', 'failover: expected a table, got "yes"'),
    # a secret given with the wrong type is not echoed
    (
        failover("shared_secret = 12345678\n"),
        "failover.shared_secret: expected a string (the value is not shown)",
    ),
    (
        failover('shared_secret = ["correct horse"]\n'),
        "failover.shared_secret: expected a string (the value is not shown)",
    ),
    # ---- name
    (failover(name='""'), "failover.name: must not be empty"),
    (failover(name='"   "'), "failover.name: must not be empty"),
    (failover(name=f'"{"n" * 65}"'), "failover.name: is 65 characters long; at most 64"),
    (
        failover(name='" pair"'),
        'failover.name: " pair" starts or ends with a space (partners compare names byte for byte)',
    ),
    (failover(name='"pa\\tir"'), 'failover.name: "pa\\tir" contains a control character'),
    # ---- addresses
    (
        failover(listen_address='"0.0.0.0"'),
        "failover.listen_address: 0.0.0.0 is not a unicast address",
    ),
    (
        failover(peer_address='"224.0.0.1"'),
        "failover.peer_address: 224.0.0.1 is not a unicast address",
    ),
    (
        failover(peer_address='"255.255.255.255"'),
        "failover.peer_address: 255.255.255.255 is not a unicast address",
    ),
    (
        failover(peer_address='"192.0.2.2"'),
        "failover.peer_address: 192.0.2.2 is also failover.listen_address; the partner is "
        "another server with an address of its own",
    ),
    (
        failover(peer_address='"192.0.2.2"', extra="peer_port = 648\n"),
        "failover.peer_address: 192.0.2.2 is also failover.listen_address; the partner is "
        "another server with an address of its own",
    ),
    # ---- settings of the other mode
    (
        failover('mode = "load-balance"\nreserve_percent = 5\n'),
        'failover.reserve_percent: only used in hot-standby mode (mode is "load-balance"); '
        "remove it",
    ),
    (
        failover("load_balance_percent = 50\n"),
        'failover.load_balance_percent: only used in load-balance mode (mode is "hot-standby"); '
        "remove it",
    ),
    (
        failover('mode = "hot-standby"\nload_balance_max_seconds = 3\n'),
        "failover.load_balance_max_seconds: only used in load-balance mode (mode is "
        '"hot-standby"); remove it',
    ),
    # ---- timers
    (
        failover("keepalive_interval_s = 20\n"),
        "failover.keepalive_interval_s: 20 must be less than failover.receive_timer_s "
        "(20, the isc default)",
    ),
    (
        failover("receive_timer_s = 10\nkeepalive_interval_s = 10\n"),
        "failover.keepalive_interval_s: 10 must be less than failover.receive_timer_s (10)",
    ),
    (
        failover("receive_timer_s = 1\n"),
        "failover.receive_timer_s: 1 is too short: the keep-alive (keepalive_interval_s, by "
        "default a third of it) must be shorter; use at least 3",
    ),
    (
        failover('dialect = "windows"\nreceive_timer_s = 60\n'),
        "failover.receive_timer_s: 60 is too short for the windows dialect: Windows sends "
        "CONTACT only every 60 s; use at least 90 (Windows' own is 180)",
    ),
    (
        failover('dialect = "windows"\nreceive_timer_s = 270\n'),
        "failover.keepalive_interval_s: 90 is too long for the windows dialect: Windows "
        "expects a message at least every 60 s",
    ),
    # ---- shared secret (its value never appears)
    (failover('shared_secret = ""\n'), "failover.shared_secret: must not be empty"),
    (
        failover('shared_secret = "hunter2"\n'),
        "failover.shared_secret: is 7 bytes long; use at least 8",
    ),
    (
        failover(f'shared_secret = "{"s" * 257}"\n'),
        "failover.shared_secret: is 257 bytes long; at most 256",
    ),
    (
        failover(f'shared_secret = "{SECRET}"\nshared_secret_file = "/etc/secret"\n'),
        "failover: give at most one of shared_secret and shared_secret_file",
    ),
    (failover('shared_secret_file = " "\n'), "failover.shared_secret_file: must not be empty"),
    # ---- subnets in the relationship
    (
        failover("subnets = []\n"),
        "failover.subnets: must list at least one subnet id (leave it out to share all)",
    ),
    (failover("subnets = [7]\n"), "failover.subnets[0]: no subnet has id 7"),
    (failover("subnets = [1, 1]\n"), "failover.subnets[1]: subnet 1 is listed twice"),
    (
        failover(
            "subnets = [2]\n",
            subnets=SUBNET + '[[subnets]]\nprefix = "198.51.100.0/24"\n',
        ),
        "failover.subnets[0]: subnet 2 (subnets[1], 198.51.100.0/24) has no pool addresses; "
        "a failover subnet needs pools",
    ),
    (
        failover(
            subnets=SUBNET + '[[subnets]]\nprefix = "198.51.100.0/24"\n'
            'pools = [{ start = "198.51.100.10", end = "198.51.100.19" }]\n'
            'exclusions = [{ start = "198.51.100.0", end = "198.51.100.255" }]\n'
        ),
        "subnets[1]: has no pool addresses, but every subnet is in the failover relationship; "
        "give it pools or list the shared subnets in failover.subnets",
    ),
    (
        failover(subnets=""),
        "failover: there are no subnets to share; add [[subnets]] with pools",
    ),
]


@pytest.mark.parametrize(("text", "expected"), BAD, ids=[e for _, e in BAD])
def test_each_bad_failover_section_reports_exactly_its_problem(text: str, expected: str) -> None:
    assert problems(text) == [expected]


def test_minimal_section_takes_the_documented_defaults() -> None:
    cfg = load_text(failover())
    fo = cfg.failover
    assert fo is not None
    assert (fo.name, fo.role, fo.mode, fo.dialect) == ("pair", "primary", "hot-standby", "isc")
    assert (fo.listen_address, fo.peer_address) == (
        IPv4Address("192.0.2.2"),
        IPv4Address("192.0.2.3"),
    )
    assert (fo.listen_port, fo.peer_port) == (647, 647)
    assert fo.mclt_s == 3600  # Windows' default
    assert fo.reserve_percent == 5  # Windows' default
    assert (fo.load_balance_percent, fo.load_balance_max_seconds) == (50, 3)
    assert fo.state_switchover_interval_s is None  # off, as on Windows
    assert fo.shared_secret is None and fo.shared_secret_file is None
    assert fo.max_unacked_updates == 100
    assert fo.max_clock_skew_s == 60
    assert fo.subnets is None
    assert (receive_timer_s(fo), keepalive_interval_s(fo)) == (20, 6)
    assert read_shared_secret(fo) is None


def test_config_without_failover_has_none() -> None:
    cfg = load_text(SUBNET)
    assert cfg.failover is None
    assert failover_subnets(cfg) == []


@pytest.mark.parametrize(
    ("extra", "timers"),
    [
        ("", (20, 6)),
        ('dialect = "windows"\n', (180, 60)),
        ("receive_timer_s = 60\n", (60, 20)),
        ("receive_timer_s = 60\nkeepalive_interval_s = 5\n", (60, 5)),
        ("keepalive_interval_s = 5\n", (20, 5)),
        ("receive_timer_s = 3\n", (3, 1)),
    ],
)
def test_effective_timers(extra: str, timers: tuple[int, int]) -> None:
    fo = load_text(failover(extra)).failover
    assert fo is not None
    assert (receive_timer_s(fo), keepalive_interval_s(fo)) == timers
    assert DEFAULT_RECEIVE_TIMER_S == {"isc": 20, "windows": 180}


def test_load_balance_mode_takes_its_settings() -> None:
    fo = load_text(
        failover('mode = "load-balance"\nload_balance_percent = 70\nload_balance_max_seconds = 0\n')
    ).failover
    assert fo is not None
    assert (fo.mode, fo.load_balance_percent, fo.load_balance_max_seconds) == (
        "load-balance",
        70,
        0,
    )


def test_two_loopback_addresses_make_a_pair_on_one_host() -> None:
    # Same address with different ports is rejected (table above); tests on one host use two
    # loopback addresses instead.
    text = failover(listen_address='"127.0.0.1"', peer_address='"127.0.0.2"')
    assert problems(text) == []


def test_failover_subnets_listed_and_default() -> None:
    two = SUBNET + (
        '[[subnets]]\nid = 9\nprefix = "198.51.100.0/24"\n'
        'pools = [{ start = "198.51.100.10", end = "198.51.100.19" }]\n'
    )
    assert failover_subnets(load_text(failover(subnets=two))) == [0, 1]
    assert failover_subnets(load_text(failover("subnets = [9]\n", subnets=two))) == [1]
    # the second subnet needs no pools when it is not in the relationship
    no_pools = SUBNET + '[[subnets]]\nprefix = "198.51.100.0/24"\n'
    assert failover_subnets(load_text(failover("subnets = [1]\n", subnets=no_pools))) == [0]


def test_many_failover_problems_are_reported_together_with_the_rest() -> None:
    text = failover(
        'mclt_s = 0\nmode = "load-balance"\n', subnets=SUBNET + "lease_time_s = 5\n"
    ).replace('"pair"', '""')
    # type problems first (semantic checks wait until the types parse)
    assert problems(text) == ["failover.mclt_s: must be at least 1, got 0"]
    text = text.replace("mclt_s = 0", "reserve_percent = 10\nsubnets = [3]")
    assert problems(text) == [
        "subnets[0].lease_time_s: 5 is outside lease.min_lease_time_s..lease.max_lease_time_s "
        "(10..86400)",
        "failover.name: must not be empty",
        'failover.reserve_percent: only used in hot-standby mode (mode is "load-balance"); '
        "remove it",
        "failover.subnets[0]: no subnet has id 3",
    ]


# ---- the shared secret is never shown


def test_secret_is_hidden_in_problems_and_repr() -> None:
    with pytest.raises(ConfigError) as info:
        load_text(failover('shared_secret = "hunter2"\npeer_port = 0\n'))
    assert "hunter2" not in str(info.value)
    with pytest.raises(ConfigError) as info:
        load_text(failover('shared_secret = "hunter2"\n'))
    assert "hunter2" not in str(info.value)
    cfg = load_text(failover(f'shared_secret = "{SECRET}"\n'))
    assert SECRET not in repr(cfg) and SECRET not in str(cfg)
    assert SECRET not in cfg.model_dump_json()
    assert cfg.failover is not None and read_shared_secret(cfg.failover) == SECRET


def test_secret_file_is_read_without_its_line_break(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_bytes(SECRET.encode() + b"\r\n")
    cfg = load_text(failover(f'shared_secret_file = "{path}"\n'))
    assert cfg.failover is not None
    assert read_shared_secret(cfg.failover) == SECRET


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "{p} does not exist"),
        (b"", "the secret in {p} is empty"),
        (b"\n", "the secret in {p} is empty"),
        (b"short\n", "the secret in {p} is 5 bytes long; use at least 8"),
        (b"x" * 300, "the secret in {p} is 300 bytes long; at most 256"),
        (b"\xff" * 10, "{p} is not UTF-8 text"),
    ],
)
def test_secret_file_problems(tmp_path: Path, content: bytes | None, expected: str) -> None:
    path = tmp_path / "secret"
    if content is not None:
        path.write_bytes(content)
    lines = problems(failover(f'shared_secret_file = "{path}"\n'))
    assert lines == ["failover.shared_secret_file: " + expected.format(p=path)]


def test_secret_file_that_is_a_directory(tmp_path: Path) -> None:
    assert problems(failover(f'shared_secret_file = "{tmp_path}"\n')) == [
        f"failover.shared_secret_file: {tmp_path} is a directory; give a file name"
    ]


def test_unreadable_secret_file_is_not_judged_by_check_but_by_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def denied(raw: str) -> str:
        raise PermissionError(13, "Permission denied", raw)

    monkeypatch.setattr(validate_module, "_read_secret_file", denied)
    path = tmp_path / "secret"
    cfg = load_text(failover(f'shared_secret_file = "{path}"\n'))  # no problem: not judged
    assert cfg.failover is not None
    with pytest.raises(ConfigError) as info:
        read_shared_secret(cfg.failover)
    assert info.value.problems == [
        f"failover.shared_secret_file: cannot read {path}: Permission denied"
    ]


# ---- partners

PRIMARY = failover()
SECONDARY = failover(role='"secondary"', listen_address='"192.0.2.3"', peer_address='"192.0.2.2"')
LB = 'mode = "load-balance"\n'


def pair(a_extra: str = "", b_extra: str = "", **kw: Callable[[str], str]) -> tuple[str, str]:
    """The valid primary/secondary pair, with lines appended to each ``[failover]`` and
    optional text edits ``a=`` / ``b=``."""
    a, b = PRIMARY + a_extra, SECONDARY + b_extra
    if "a" in kw:
        a = kw["a"](a)
    if "b" in kw:
        b = kw["b"](b)
    return a, b


def partner_problems(a: str, b: str) -> list[str]:
    return check_partners(load_text(a), load_text(b), names=("a.toml", "b.toml"))


def test_the_base_pair_agrees() -> None:
    assert partner_problems(PRIMARY, SECONDARY) == []
    assert partner_problems(SECONDARY, PRIMARY) == []


MISMATCHES: list[tuple[str, tuple[str, str], list[str]]] = [
    (
        "name",
        pair(b=lambda t: t.replace('"pair"', '"Pair"')),
        ['failover.name: "pair" in a.toml, "Pair" in b.toml; must be the same on both partners'],
    ),
    (
        "roles",
        pair(b=lambda t: t.replace('"secondary"', '"primary"')),
        [
            'failover.role: "primary" in both a.toml and b.toml; one must be "primary", the '
            'other "secondary"'
        ],
    ),
    (
        "mode",
        pair(LB),
        [
            'failover.mode: "load-balance" in a.toml, "hot-standby" in b.toml; must be the '
            "same on both partners"
        ],
    ),
    (
        "dialect (and the windows keep-alive is too slow for the isc receive timer)",
        pair('dialect = "windows"\n'),
        [
            'failover.dialect: "windows" in a.toml, "isc" in b.toml; must be the same on both '
            "partners",
            "failover.keepalive_interval_s: 60 in a.toml must be less than "
            "failover.receive_timer_s in b.toml (20), or b.toml's server drops the link",
        ],
    ),
    (
        "mclt",
        pair("mclt_s = 300\n"),
        ["failover.mclt_s: 300 in a.toml, 3600 in b.toml; must be the same on both partners"],
    ),
    (
        "peer address",
        pair(a=lambda t: t.replace('peer_address = "192.0.2.3"', 'peer_address = "192.0.2.4"')),
        [
            "failover.peer_address: 192.0.2.4 in a.toml is not b.toml's failover.listen_address "
            "(192.0.2.3)"
        ],
    ),
    (
        "both addresses swapped wrongly",
        pair(
            b=lambda t: t.replace('"192.0.2.3"', '"192.0.2.9"').replace(
                '"192.0.2.2"', '"192.0.2.8"'
            )
        ),
        [
            "failover.peer_address: 192.0.2.3 in a.toml is not b.toml's failover.listen_address "
            "(192.0.2.9)",
            "failover.peer_address: 192.0.2.8 in b.toml is not a.toml's failover.listen_address "
            "(192.0.2.2)",
        ],
    ),
    (
        "ports",
        pair("listen_port = 8647\n"),
        [
            "failover.peer_port: 647 in b.toml is not a.toml's failover.listen_port (8647)",
        ],
    ),
    (
        "reserve",
        pair("reserve_percent = 20\n"),
        ["failover.reserve_percent: 20 in a.toml, 5 in b.toml; must be the same on both partners"],
    ),
    (
        "load-balance shares",
        pair(LB + "load_balance_percent = 70\n", LB),
        [
            "failover.load_balance_percent: 70 in a.toml + 50 in b.toml = 120; each is that "
            "server's own share, so the two must add up to 100"
        ],
    ),
    (
        "load balance max seconds",
        pair(LB + "load_balance_max_seconds = 5\n", LB),
        [
            "failover.load_balance_max_seconds: 5 in a.toml, 3 in b.toml; must be the same on "
            "both partners"
        ],
    ),
    (
        "switchover interval",
        pair("state_switchover_interval_s = 3600\n"),
        [
            "failover.state_switchover_interval_s: 3600 in a.toml, off in b.toml; must be the "
            "same on both partners"
        ],
    ),
    (
        "keep-alive slower than the partner's receive timer",
        pair("receive_timer_s = 60\nkeepalive_interval_s = 30\n"),
        [
            "failover.keepalive_interval_s: 30 in a.toml must be less than "
            "failover.receive_timer_s in b.toml (20), or b.toml's server drops the link"
        ],
    ),
    (
        "secret on one side only",
        pair(b_extra=f'shared_secret = "{SECRET}"\n'),
        ["failover.shared_secret: set in b.toml, not in a.toml"],
    ),
    (
        "different secrets",
        pair(f'shared_secret = "{SECRET}"\n', f'shared_secret = "{SECRET}!"\n'),
        ["failover.shared_secret: differs between a.toml and b.toml (not shown)"],
    ),
    (
        "pool",
        pair(b=lambda t: t.replace('end = "192.0.2.199"', 'end = "192.0.2.189"')),
        [
            "subnet 192.0.2.0/24: pool addresses differ: 192.0.2.100-192.0.2.199 in a.toml, "
            "192.0.2.100-192.0.2.189 in b.toml"
        ],
    ),
    (
        "exclusion",
        pair(
            a=lambda t: t.replace(
                '"192.0.2.199" }]\n',
                '"192.0.2.199" }]\nexclusions = [{ start = "192.0.2.150", end = "192.0.2.150" }]\n',
            )
        ),
        [
            "subnet 192.0.2.0/24: pool addresses differ: 192.0.2.100-192.0.2.149, "
            "192.0.2.151-192.0.2.199 in a.toml, 192.0.2.100-192.0.2.199 in b.toml"
        ],
    ),
    (
        "lease time",
        pair(a=lambda t: t.replace('"192.0.2.199" }]\n', '"192.0.2.199" }]\nlease_time_s = 600\n')),
        [
            "subnet 192.0.2.0/24: lease time 600 s in a.toml, 3600 s in b.toml; must be the same "
            "on both partners"
        ],
    ),
    (
        "reservations",
        pair(
            a=lambda t: t.replace(
                '"192.0.2.199" }]\n',
                '"192.0.2.199" }]\nreservations = [\n'
                '  { ip_address = "192.0.2.10", hw_address = "00:11:22:33:44:55" },\n'
                '  { ip_address = "192.0.2.11", client_id = "01:02:03" },\n]\n',
            ),
            b=lambda t: t.replace(
                '"192.0.2.199" }]\n',
                '"192.0.2.199" }]\nreservations = [\n'
                '  { ip_address = "192.0.2.10", hw_address = "00:11:22:33:44:56" },\n'
                '  { ip_address = "192.0.2.12", client_id = "01:02:03" },\n]\n',
            ),
        ),
        [
            "subnet 192.0.2.0/24: reservation 192.0.2.10 is for a different client in a.toml "
            "and b.toml",
            "subnet 192.0.2.0/24: reservation 192.0.2.11 is in a.toml, not in b.toml",
            "subnet 192.0.2.0/24: reservation 192.0.2.12 is in b.toml, not in a.toml",
        ],
    ),
    (
        "subnet shared on one side only",
        pair(
            a=lambda t: (
                '[[subnets]]\nid = 7\nprefix = "198.51.100.0/24"\n'
                'pools = [{ start = "198.51.100.10", end = "198.51.100.19" }]\n' + t
            )
        ),
        [
            "failover.subnets: 198.51.100.0/24 (subnets[0] in a.toml) is in a.toml's "
            "relationship, not in b.toml's"
        ],
    ),
    (
        "no [failover] in one",
        (PRIMARY, SUBNET),
        ["failover: b.toml has no [failover] section"],
    ),
    (
        "no [failover] in either",
        (SUBNET, SUBNET),
        [
            "failover: a.toml has no [failover] section",
            "failover: b.toml has no [failover] section",
        ],
    ),
]


@pytest.mark.parametrize(
    ("texts", "expected"), [(t, e) for _, t, e in MISMATCHES], ids=[n for n, _, _ in MISMATCHES]
)
def test_each_partner_mismatch_reports_exactly_its_lines(
    texts: tuple[str, str], expected: list[str]
) -> None:
    assert partner_problems(*texts) == expected


def test_partner_comparison_agrees_on_equivalent_forms() -> None:
    # The same addresses written differently, reservations in another order and a hex client
    # id with or without ':' are the same relationship.
    a = PRIMARY.replace(
        '"192.0.2.199" }]\n',
        '"192.0.2.199" }]\nexclusions = [{ start = "192.0.2.150", end = "192.0.2.199" }]\n'
        "reservations = [\n"
        '  { ip_address = "192.0.2.10", hw_address = "00:11:22:33:44:55" },\n'
        '  { ip_address = "192.0.2.11", client_id = "01:02:03" },\n]\n',
    )
    b = SECONDARY.replace(
        'pools = [{ start = "192.0.2.100", end = "192.0.2.199" }]\n',
        'pools = [{ start = "192.0.2.100", end = "192.0.2.120" }, '
        '{ start = "192.0.2.121", end = "192.0.2.149" }]\n'
        "reservations = [\n"
        '  { ip_address = "192.0.2.11", client_id = "010203" },\n'
        '  { ip_address = "192.0.2.10", hw_address = "00-11-22-33-44-55" },\n]\n',
    )
    assert partner_problems(a, b) == []
    # Settings each side keeps to itself need not match.
    a2 = a + "max_unacked_updates = 10\nmax_clock_skew_s = 30\nreceive_timer_s = 30\n"
    assert partner_problems(a2, b) == []


def test_load_balance_pair_with_complementary_shares_agrees() -> None:
    a, b = pair(LB + "load_balance_percent = 70\n", LB + "load_balance_percent = 30\n")
    assert partner_problems(a, b) == []


def test_secret_from_a_file_matches_the_same_secret_inline(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_text(SECRET + "\n")
    a, b = pair(f'shared_secret_file = "{path}"\n', f'shared_secret = "{SECRET}"\n')
    assert partner_problems(a, b) == []
    lines = partner_problems(
        *pair(f'shared_secret_file = "{path}"\n', f'shared_secret = "{SECRET[::-1]}"\n')
    )
    assert lines == ["failover.shared_secret: differs between a.toml and b.toml (not shown)"]
    assert SECRET not in lines[0] and SECRET[::-1] not in lines[0]


def test_unreadable_secret_file_is_a_partner_problem(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "secret"
    a, b = pair(f'shared_secret_file = "{path}"\n', f'shared_secret = "{SECRET}"\n')

    def denied(raw: str) -> str:
        raise PermissionError(13, "Permission denied", raw)

    monkeypatch.setattr(validate_module, "_read_secret_file", denied)
    ca, cb = load_text(a), load_text(b)  # check() does not judge permissions
    assert check_partners(ca, cb, names=("a.toml", "b.toml")) == [
        f"failover.shared_secret_file: cannot read {path}: Permission denied (a.toml); the "
        "shared secrets cannot be compared"
    ]


def test_check_partners_default_names() -> None:
    a = load_text(PRIMARY + "mclt_s = 300\n")
    assert check_partners(a, load_text(SECONDARY)) == [
        "failover.mclt_s: 300 in this config, 3600 in the partner's config; must be the same "
        "on both partners"
    ]


# ---- the reference hot-standby examples


def test_hot_standby_examples_are_the_reference_configuration() -> None:
    primary = load(ROOT / "examples" / "hot-standby-primary.toml")
    standby = load(ROOT / "examples" / "hot-standby-standby.toml")
    assert check_partners(primary, standby) == []
    assert check_partners(standby, primary) == []
    for cfg, role in ((primary, "primary"), (standby, "secondary")):
        fo = cfg.failover
        assert fo is not None
        assert (fo.role, fo.mode, fo.mclt_s, fo.reserve_percent) == (role, "hot-standby", 300, 20)
        (index,) = failover_subnets(cfg)
        subnet = cfg.subnets[index]
        assert subnet.lease_time_s == 600
        assert validate_module.pool_address_count(subnet) == 100


def test_configs_compare_secrets_by_value() -> None:
    a = load_text(failover(f'shared_secret = "{SECRET}"\n'))
    b = load_text(failover(f'shared_secret = "{SECRET}"\n'))
    c = load_text(failover(f'shared_secret = "{SECRET}?"\n'))
    assert a == b and a != c
    assert isinstance(a, Config)
