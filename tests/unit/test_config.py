"""Config loading and validation: every problem reported at once, each as ``path: message``."""

from __future__ import annotations

from ipaddress import IPv4Address
from pathlib import Path

import pytest

from tandem.config import (
    Config,
    CustomOption,
    custom_option_bytes,
    load,
    load_text,
    parse_client_id,
    parse_hex,
    parse_hw_address,
    pool_address_count,
    subnet_id,
)
from tandem.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]

SUBNET = """
[[subnets]]
prefix = "192.0.2.0/24"
pools = [{ start = "192.0.2.10", end = "192.0.2.99" }]
"""


def problems(text: str) -> list[str]:
    try:
        load_text(text)
    except ConfigError as exc:
        return exc.problems
    return []


# (bad config, the one problem it must produce). Cases with two problems (pools across
# subnets, T1 and T2 both above the lease, a pool wholly outside) have their own tests below.
BAD: list[tuple[str, str]] = [
    # ---- TOML syntax
    ("a = = 1\n", "line 1, column 5: TOML syntax error: invalid value"),
    ("x = 1\nx = 2\n", "line 2, column 6: TOML syntax error: cannot overwrite a value"),
    # ---- types (pydantic, translated)
    ("colour = 1\n", "colour: unknown setting"),
    ("[server]\nprot = 67\n", "server.prot: unknown setting"),
    ('[server]\nport = "x"\n', 'server.port: expected an integer, got "x"'),
    ("[server]\nport = 70000\n", "server.port: must be at most 65535, got 70000"),
    ("[server]\nraw_replies = 3\n", "server.raw_replies: expected true or false, got 3"),
    ('[server]\ninterfaces = "eth0"\n', 'server.interfaces: expected a list, got "eth0"'),
    (
        '[server]\nserver_id = "192.0.2.300"\n',
        'server.server_id: "192.0.2.300" is not a valid IPv4 address',
    ),
    ('[store]\nbackend = "pg"\n', 'store.backend: must be "sqlite", got "pg"'),
    ("[lease]\nmax_lease_time_s = 0\n", "lease.max_lease_time_s: must be at least 1, got 0"),
    (
        "[lease]\nmin_lease_time_s = 1.5\n",
        "lease.min_lease_time_s: expected a whole number, got 1.5",
    ),
    ("[[subnets]]\npools = []\n", "subnets[0].prefix: required setting is missing"),
    (
        '[[subnets]]\nprefix = "192.0.2.1/24"\n',
        "subnets[0].prefix: 192.0.2.1/24 has host bits set (the network is 192.0.2.0/24)",
    ),
    (
        '[[subnets]]\nprefix = "192.0.2/24x"\n',
        'subnets[0].prefix: "192.0.2/24x" is not a valid IPv4 network '
        "(expected address/prefix-length)",
    ),
    ("subnets = [1]\n", "subnets[0]: expected a table, got 1"),
    (
        "[[options.custom]]\ncode = 43\nvalue = 1.5\n",
        "options.custom[0].value: expected a string, an integer or a list of strings, got 1.5",
    ),
    (
        '[[options.custom]]\ncode = 43\nvalue = ["a", 2]\n',
        'options.custom[0].value: expected a string, an integer or a list of strings, got ["a", 2]',
    ),
    (
        '[[options.custom]]\ncode = 0\nhex = "00"\n',
        "options.custom[0].code: must be at least 1, got 0",
    ),
    (
        '[[options.custom]]\ncode = 255\nhex = "00"\n',
        "options.custom[0].code: must be at most 254, got 255",
    ),
    # ---- pools
    (
        SUBNET.replace('end = "192.0.2.99"', 'end = "192.0.3.9"'),
        "subnets[0].pools[0].end: 192.0.3.9 is outside 192.0.2.0/24",
    ),
    (
        SUBNET.replace('start = "192.0.2.10"', 'start = "192.0.2.0"'),
        "subnets[0].pools[0].start: 192.0.2.0 is the network address of 192.0.2.0/24",
    ),
    (
        SUBNET.replace('end = "192.0.2.99"', 'end = "192.0.2.255"'),
        "subnets[0].pools[0].end: 192.0.2.255 is the broadcast address of 192.0.2.0/24",
    ),
    (
        SUBNET.replace('end = "192.0.2.99"', 'end = "192.0.2.9"'),
        "subnets[0].pools[0]: start 192.0.2.10 is after end 192.0.2.9",
    ),
    (
        SUBNET.replace(
            '"192.0.2.99" }]', '"192.0.2.99" }, { start = "192.0.2.50", end = "192.0.2.120" }]'
        ),
        "subnets[0].pools[1]: overlaps subnets[0].pools[0] (192.0.2.10-192.0.2.99)",
    ),
    # ---- exclusions
    (
        SUBNET + 'exclusions = [{ start = "192.0.2.20", end = "198.51.100.1" }]\n',
        "subnets[0].exclusions[0].end: 198.51.100.1 is outside 192.0.2.0/24",
    ),
    (
        SUBNET + 'exclusions = [{ start = "192.0.2.20", end = "192.0.2.19" }]\n',
        "subnets[0].exclusions[0]: start 192.0.2.20 is after end 192.0.2.19",
    ),
    # ---- subnets
    (
        SUBNET + '[[subnets]]\nprefix = "192.0.2.128/25"\n',
        "subnets[1].prefix: 192.0.2.128/25 overlaps subnets[0].prefix (192.0.2.0/24)",
    ),
    (
        '[[subnets]]\nid = 7\nprefix = "192.0.2.0/24"\n'
        '[[subnets]]\nid = 7\nprefix = "198.51.100.0/24"\n',
        "subnets[1].id: 7 is already the id of subnets[0]",
    ),
    (
        '[[subnets]]\nid = 2\nprefix = "192.0.2.0/24"\n[[subnets]]\nprefix = "198.51.100.0/24"\n',
        "subnets[1]: its implicit id 2 (position + 1) is already the id of subnets[0].id; "
        "give it an explicit id",
    ),
    (
        '[[subnets]]\nprefix = "192.0.2.0/24"\n[[subnets]]\nid = 1\nprefix = "198.51.100.0/24"\n',
        "subnets[1].id: 1 is already the implicit id (position + 1) of subnets[0]; "
        "give that subnet an explicit id",
    ),
    # ---- reservations
    (
        SUBNET
        + 'reservations = [{ ip_address = "198.51.100.7", hw_address = "00:11:22:33:44:5" }]\n',
        "subnets[0].reservations[0].ip_address: 198.51.100.7 is outside 192.0.2.0/24",
    ),
    (
        SUBNET + 'reservations = [{ ip_address = "192.0.2.0", hw_address = "00:11:22:33:44:5" }]\n',
        "subnets[0].reservations[0].ip_address: 192.0.2.0 is the network address of 192.0.2.0/24",
    ),
    (
        SUBNET + 'reservations = [{ ip_address = "192.0.2.255", client_id = "01:02" }]\n',
        "subnets[0].reservations[0].ip_address: 192.0.2.255 is the broadcast address of "
        "192.0.2.0/24",
    ),
    (
        SUBNET + 'reservations = [{ ip_address = "192.0.2.5" }]\n',
        "subnets[0].reservations[0]: needs hw_address or client_id to identify the client",
    ),
    (
        SUBNET + 'reservations = [{ ip_address = "192.0.2.5", hw_address = "001122334455" }]\n',
        'subnets[0].reservations[0].hw_address: "001122334455" is not a hardware address '
        "(hex octets separated by ':' or '-', e.g. 00:11:22:33:44:55)",
    ),
    (
        SUBNET + 'reservations = [{ ip_address = "192.0.2.5", hw_address = "00:11:22:33:zz" }]\n',
        'subnets[0].reservations[0].hw_address: "00:11:22:33:zz" is not a hardware address '
        "(hex octets separated by ':' or '-', e.g. 00:11:22:33:44:55)",
    ),
    (
        SUBNET + 'reservations = [{ ip_address = "192.0.2.5", client_id = "01:0g" }]\n',
        'subnets[0].reservations[0].client_id: "01:0g" is not a client identifier '
        "(hex bytes, e.g. 01:00:11:22:33:44:55)",
    ),
    (
        SUBNET + 'reservations = [{ ip_address = "192.0.2.5", client_id = "010" }]\n',
        'subnets[0].reservations[0].client_id: "010" is not a client identifier '
        "(hex bytes, e.g. 01:00:11:22:33:44:55)",
    ),
    (
        SUBNET + 'reservations = [{ ip_address = "192.0.2.5", client_id = "01" }]\n',
        'subnets[0].reservations[0].client_id: "01" is too short: a client identifier has at '
        "least 2 bytes",
    ),
    (
        SUBNET + "reservations = [\n"
        '  { ip_address = "192.0.2.5", hw_address = "00:11:22:33:44:55" },\n'
        '  { ip_address = "192.0.2.6", hw_address = "00-11-22-33-44-55" },\n]\n',
        "subnets[0].reservations[1].hw_address: 00-11-22-33-44-55 already has a reservation "
        "(subnets[0].reservations[0])",
    ),
    (
        SUBNET + "reservations = [\n"
        '  { ip_address = "192.0.2.5", client_id = "01:aa:bb" },\n'
        '  { ip_address = "192.0.2.6", client_id = "01AABB" },\n]\n',
        "subnets[0].reservations[1].client_id: 01AABB already has a reservation "
        "(subnets[0].reservations[0])",
    ),
    (
        SUBNET + "reservations = [\n"
        '  { ip_address = "192.0.2.5", client_id = "01:aa:bb" },\n'
        '  { ip_address = "192.0.2.5", client_id = "01:aa:cc" },\n]\n',
        "subnets[0].reservations[1].ip_address: 192.0.2.5 is already reserved by "
        "subnets[0].reservations[0]",
    ),
    # ---- lease times
    (
        "[lease]\ndefault_lease_time_s = 5\n",
        "lease.default_lease_time_s: 5 is below lease.min_lease_time_s (10)",
    ),
    (
        "[lease]\ndefault_lease_time_s = 90000\n",
        "lease.default_lease_time_s: 90000 is above lease.max_lease_time_s (86400)",
    ),
    (
        "[lease]\nmin_lease_time_s = 100\nmax_lease_time_s = 50\ndefault_lease_time_s = 50\n",
        "lease.min_lease_time_s: 100 is above lease.max_lease_time_s (50)",
    ),
    (
        SUBNET + "lease_time_s = 5\n",
        "subnets[0].lease_time_s: 5 is outside lease.min_lease_time_s..lease.max_lease_time_s "
        "(10..86400)",
    ),
    (
        SUBNET + "lease_time_s = 100000\n",
        "subnets[0].lease_time_s: 100000 is outside lease.min_lease_time_s..lease.max_lease_time_s "
        "(10..86400)",
    ),
    (
        SUBNET + "renew_time_s = 2000\nrebind_time_s = 1000\n",
        "subnets[0].renew_time_s: 2000 must be less than rebind_time_s (1000)",
    ),
    (
        SUBNET + "renew_time_s = 1000\nrebind_time_s = 3600\n",
        "subnets[0].rebind_time_s: 3600 must be less than the lease time "
        "(lease.default_lease_time_s = 3600)",
    ),
    (
        SUBNET + "renew_time_s = 3500\n",
        "subnets[0].renew_time_s: 3500 must be less than the default rebind time "
        "(3150, 87.5 % of 3600); set rebind_time_s too",
    ),
    (
        SUBNET + "rebind_time_s = 1000\n",
        "subnets[0].rebind_time_s: 1000 must be more than the default renew time "
        "(1800, 50 % of 3600); set renew_time_s too",
    ),
    # ---- relays
    (
        SUBNET + 'relay_addresses = ["203.0.113.1"]\n'
        '[[subnets]]\nprefix = "198.51.100.0/24"\nrelay_addresses = ["203.0.113.1"]\n',
        "subnets[1].relay_addresses[0]: 203.0.113.1 is already a relay address of subnets[0] "
        "(subnets[0].relay_addresses[0])",
    ),
    (
        SUBNET + 'relay_addresses = ["198.51.100.1"]\n[[subnets]]\nprefix = "198.51.100.0/24"\n',
        "subnets[0].relay_addresses[0]: 198.51.100.1 is inside subnets[1].prefix "
        "(198.51.100.0/24), which that subnet already answers for",
    ),
    # ---- custom options
    (
        '[[options.custom]]\ncode = 43\nhex = "01"\nvalue = "x"\n',
        "options.custom[0]: give exactly one of hex or value, not both",
    ),
    ("[[options.custom]]\ncode = 43\n", "options.custom[0]: give one of hex or value"),
    ('[[options.custom]]\ncode = 43\nhex = "0g"\n', 'options.custom[0].hex: "0g" is not hex'),
    (
        '[[options.custom]]\ncode = 43\nhex = "012"\n',
        'options.custom[0].hex: "012" has an odd number of hex digits',
    ),
    (
        '[[options.custom]]\ncode = 43\nhex = "01:2:zz"\n',
        "options.custom[0].hex: \"01:2:zz\" is not hex octets separated by ':'",
    ),
    (
        '[[options.custom]]\ncode = 52\nhex = "01"\n',
        "options.custom[0].code: option 52 (option overload) is set by the server and cannot "
        "be configured",
    ),
    (
        "[[options.custom]]\ncode = 53\nvalue = 1\n",
        "options.custom[0].code: option 53 (DHCP message type) is set by the server and cannot "
        "be configured",
    ),
    (
        '[[options.custom]]\ncode = 54\nhex = "c0000201"\n',
        "options.custom[0].code: option 54 (server identifier; use server.server_id) is set by "
        "the server and cannot be configured",
    ),
    (
        '[[options.custom]]\ncode = 51\nhex = "00000e10"\n',
        "options.custom[0].code: option 51 (lease time; use lease_time_s) is set by the server "
        "and cannot be configured",
    ),
    (
        '[[options.custom]]\ncode = 58\nhex = "00000e10"\n',
        "options.custom[0].code: option 58 (renewal (T1) time; use renew_time_s) is set by the "
        "server and cannot be configured",
    ),
    (
        '[[options.custom]]\ncode = 59\nhex = "00000e10"\n',
        "options.custom[0].code: option 59 (rebinding (T2) time; use rebind_time_s) is set by "
        "the server and cannot be configured",
    ),
    (
        '[[options.custom]]\ncode = 61\nhex = "0102"\n',
        "options.custom[0].code: option 61 (client identifier) is set by the server and cannot "
        "be configured",
    ),
    (
        '[[options.custom]]\ncode = 82\nhex = "0102"\n',
        "options.custom[0].code: option 82 (relay agent information) is set by the server and "
        "cannot be configured",
    ),
    (
        '[[options.custom]]\ncode = 43\nhex = "01"\n[[options.custom]]\ncode = 43\nhex = "02"\n',
        "options.custom[1].code: option 43 is already set by options.custom[0]",
    ),
    (
        '[options]\nrouters = ["192.0.2.1"]\n[[options.custom]]\ncode = 3\nhex = "c0000201"\n',
        "options.custom[0].code: option 3 is already set by options.routers",
    ),
    ('[options]\ndomain_name = " "\n', "options.domain_name: must not be empty"),
    # per-subnet and per-reservation option sets are checked too
    (
        SUBNET + '[[subnets.options.custom]]\ncode = 43\nhex = "zz"\n',
        'subnets[0].options.custom[0].hex: "zz" is not hex',
    ),
    (
        SUBNET + '[[subnets.reservations]]\nip_address = "192.0.2.5"\nclient_id = "0102"\n'
        '[[subnets.reservations.options.custom]]\ncode = 53\nhex = "01"\n',
        "subnets[0].reservations[0].options.custom[0].code: option 53 (DHCP message type) is "
        "set by the server and cannot be configured",
    ),
    # ---- server.interfaces
    (
        '[server]\ninterfaces = ["averyveryverylongname"]\n',
        'server.interfaces[0]: "averyveryverylongname" is longer than 15 characters',
    ),
    (
        '[server]\ninterfaces = ["eth0/1"]\n',
        "server.interfaces[0]: \"eth0/1\" is not an interface name (no '/' or spaces)",
    ),
    (
        '[server]\ninterfaces = ["eth 0"]\n',
        "server.interfaces[0]: \"eth 0\" is not an interface name (no '/' or spaces)",
    ),
    ('[server]\ninterfaces = [""]\n', "server.interfaces[0]: must not be empty"),
    ('[server]\ninterfaces = ["eth0", "eth0"]\n', 'server.interfaces[1]: "eth0" is listed twice'),
]


@pytest.mark.parametrize(("text", "expected"), BAD, ids=[e for _, e in BAD])
def test_each_bad_config_reports_exactly_its_problem(text: str, expected: str) -> None:
    assert problems(text) == [expected]


def test_pool_outside_reports_both_ends() -> None:
    text = SUBNET.replace('start = "192.0.2.10"', 'start = "198.51.100.1"')
    text = text.replace('end = "192.0.2.99"', 'end = "198.51.100.9"')
    assert problems(text) == [
        "subnets[0].pools[0].start: 198.51.100.1 is outside 192.0.2.0/24",
        "subnets[0].pools[0].end: 198.51.100.9 is outside 192.0.2.0/24",
    ]


def test_pools_overlap_across_subnets() -> None:
    text = (
        SUBNET + '[[subnets]]\nprefix = "198.51.100.0/24"\n'
        'pools = [{ start = "198.51.100.10", end = "198.51.100.20" }]\n'
        '[[subnets]]\nprefix = "203.0.113.0/24"\n'
        'pools = [{ start = "198.51.100.15", end = "198.51.100.30" }]\n'
    )
    assert problems(text) == [
        "subnets[2].pools[0].start: 198.51.100.15 is outside 203.0.113.0/24",
        "subnets[2].pools[0].end: 198.51.100.30 is outside 203.0.113.0/24",
        "subnets[2].pools[0]: overlaps subnets[1].pools[0] (198.51.100.10-198.51.100.20)",
    ]


def test_t1_t2_above_subnet_lease() -> None:
    text = SUBNET + "lease_time_s = 600\nrenew_time_s = 700\nrebind_time_s = 800\n"
    assert problems(text) == [
        "subnets[0].renew_time_s: 700 must be less than the lease time (lease_time_s = 600)",
        "subnets[0].rebind_time_s: 800 must be less than the lease time (lease_time_s = 600)",
    ]


def test_store_path_whose_parent_is_a_file(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    text = f'[store]\npath = "{blocker}/sub/leases.db"\n'
    assert problems(text) == [
        f"store.path: cannot create {blocker}/sub/leases.db: {blocker} is not a directory"
    ]
    assert not (tmp_path / "file" / "sub").exists()


def test_store_path_that_is_a_directory(tmp_path: Path) -> None:
    assert problems(f'[store]\npath = "{tmp_path}"\n') == [
        f"store.path: {tmp_path} is a directory; give a file name"
    ]


def test_store_path_in_missing_directories_is_fine_and_not_created(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "leases.db"
    load_text(f'[store]\npath = "{target}"\n')
    assert not (tmp_path / "a").exists()


def test_custom_option_value_goes_through_the_option_registry() -> None:
    # 26 = interface MTU, a u16: the registry rejects text and out-of-range numbers.
    text = '[[options.custom]]\ncode = 26\nvalue = "abc"\n'
    (problem,) = problems(text)
    assert problem.startswith("options.custom[0].value: ")
    assert "abc" in problem
    (problem,) = problems("[[options.custom]]\ncode = 26\nvalue = 70000\n")
    assert problem.startswith("options.custom[0].value: ") and "70000" in problem
    cfg = load_text("[[options.custom]]\ncode = 26\nvalue = 1500\n")
    assert custom_option_bytes(cfg.options.custom[0]) == b"\x05\xdc"
    cfg = load_text('[[options.custom]]\ncode = 3\nvalue = ["192.0.2.1", "192.0.2.2"]\n')
    assert custom_option_bytes(cfg.options.custom[0]) == bytes([192, 0, 2, 1, 192, 0, 2, 2])


def test_custom_option_hex_bytes() -> None:
    assert custom_option_bytes(CustomOption(code=43, hex="01:02:ff")) == b"\x01\x02\xff"
    assert custom_option_bytes(CustomOption(code=80, hex="")) == b""


def test_many_problems_in_one_file_are_all_reported_with_paths() -> None:
    text = """
[server]
interfaces = ["eth0", "bad/name"]

[lease]
default_lease_time_s = 100000

[[subnets]]
prefix = "192.0.2.0/24"
pools = [
  { start = "192.0.2.10", end = "192.0.2.50" },
  { start = "192.0.2.40", end = "192.0.3.9" },
]
exclusions = [{ start = "198.51.100.1", end = "198.51.100.2" }]
reservations = [
  { ip_address = "192.0.2.5", hw_address = "00:11:22:33:44:55" },
  { ip_address = "192.0.2.6", hw_address = "00:11:22:33:44:55" },
  { ip_address = "192.0.2.7" },
]
renew_time_s = 5000
rebind_time_s = 4000

[[subnets.options.custom]]
code = 53
hex = "01"

[[subnets]]
id = 1
prefix = "192.0.2.128/25"
"""
    assert problems(text) == [
        "lease.default_lease_time_s: 100000 is above lease.max_lease_time_s (86400)",
        "subnets[1].id: 1 is already the implicit id (position + 1) of subnets[0]; "
        "give that subnet an explicit id",
        "subnets[1].prefix: 192.0.2.128/25 overlaps subnets[0].prefix (192.0.2.0/24)",
        "subnets[0].pools[1].end: 192.0.3.9 is outside 192.0.2.0/24",
        "subnets[0].exclusions[0].start: 198.51.100.1 is outside 192.0.2.0/24",
        "subnets[0].exclusions[0].end: 198.51.100.2 is outside 192.0.2.0/24",
        "subnets[0].reservations[1].hw_address: 00:11:22:33:44:55 already has a reservation "
        "(subnets[0].reservations[0])",
        "subnets[0].reservations[2]: needs hw_address or client_id to identify the client",
        "subnets[0].renew_time_s: 5000 must be less than rebind_time_s (4000)",
        "subnets[0].pools[1]: overlaps subnets[0].pools[0] (192.0.2.10-192.0.2.50)",
        "subnets[0].options.custom[0].code: option 53 (DHCP message type) is set by the server "
        "and cannot be configured",
        "server.interfaces[1]: \"bad/name\" is not an interface name (no '/' or spaces)",
    ]


def test_many_type_problems_are_all_reported_with_paths() -> None:
    text = """
port = 67
[server]
port = "sixty-seven"
[[subnets]]
prefix = "192.0.2.0/24"
pools = [{ start = "192.0.2.1" }, { start = "x", end = "192.0.2.9", size = 3 }]
[[subnets]]
prefix = "198.51.100.0/33"
"""
    assert problems(text) == [
        'server.port: expected an integer, got "sixty-seven"',
        "subnets[0].pools[0].end: required setting is missing",
        'subnets[0].pools[1].start: "x" is not a valid IPv4 address',
        "subnets[0].pools[1].size: unknown setting",
        'subnets[1].prefix: "198.51.100.0/33" is not a valid IPv4 network '
        "(expected address/prefix-length)",
        "port: unknown setting",
    ]


def test_same_hw_and_client_id_in_different_subnets_is_allowed() -> None:
    cfg = load_text(
        SUBNET
        + 'reservations = [{ ip_address = "192.0.2.5", hw_address = "00:11:22:33:44:55", '
        'client_id = "01:00:11:22:33:44:55" }]\n'
        '[[subnets]]\nprefix = "198.51.100.0/24"\n'
        'reservations = [{ ip_address = "198.51.100.5", hw_address = "00:11:22:33:44:55", '
        'client_id = "0100112233445 5" }]\n'.replace("5 5", "55")
    )
    assert [len(s.reservations) for s in cfg.subnets] == [1, 1]


def test_point_to_point_prefixes_have_no_network_or_broadcast_address() -> None:
    cfg = load_text(
        '[[subnets]]\nprefix = "192.0.2.0/31"\n'
        'pools = [{ start = "192.0.2.0", end = "192.0.2.1" }]\n'
        '[[subnets]]\nprefix = "198.51.100.7/32"\n'
        'reservations = [{ ip_address = "198.51.100.7", hw_address = "02:00:00:00:00:01" }]\n'
    )
    assert pool_address_count(cfg.subnets[0]) == 2


def test_empty_config_is_valid_with_defaults() -> None:
    cfg = load_text("")
    assert cfg == Config()
    assert cfg.store.path == "/var/lib/tandem/leases.db"


def test_subnet_id_helper() -> None:
    cfg = load_text(
        '[[subnets]]\nprefix = "192.0.2.0/24"\n'
        '[[subnets]]\nid = 10\nprefix = "198.51.100.0/24"\n'
        '[[subnets]]\nprefix = "203.0.113.0/24"\n'
    )
    assert [subnet_id(cfg, i) for i in range(3)] == [1, 10, 3]


def test_pool_address_count_subtracts_exclusions_and_counts_overlap_once() -> None:
    cfg = load_text(
        '[[subnets]]\nprefix = "192.0.2.0/24"\n'
        'pools = [{ start = "192.0.2.10", end = "192.0.2.19" }, '
        '{ start = "192.0.2.30", end = "192.0.2.39" }]\n'
        'exclusions = [{ start = "192.0.2.15", end = "192.0.2.32" }]\n'
    )
    assert pool_address_count(cfg.subnets[0]) == 5 + 7


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("00:11:22:33:44:55", bytes.fromhex("001122334455")),
        ("00-11-22-33-44-5F", bytes.fromhex("00112233445f")),
        ("0:1:2:3:4:5", bytes([0, 1, 2, 3, 4, 5])),
    ],
)
def test_parse_hw_address(text: str, expected: bytes) -> None:
    assert parse_hw_address(text) == expected


@pytest.mark.parametrize("text", ["", "001122334455", "00:11:22:33:44:555", "00:11-22", "g0:00"])
def test_parse_hw_address_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="is not a hardware address"):
        parse_hw_address(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("01:00:11:22:33:44:55", bytes.fromhex("01001122334455")), ("0100aabb", b"\x01\x00\xaa\xbb")],
)
def test_parse_client_id(text: str, expected: bytes) -> None:
    assert parse_client_id(text) == expected


def test_parse_hex_forms() -> None:
    assert parse_hex("0x0a0b") == b"\x0a\x0b"
    assert parse_hex("0a 0b 0c") == b"\x0a\x0b\x0c"
    assert parse_hex("a:b") == b"\x0a\x0b"
    assert parse_hex("") == b""


def test_values_are_typed() -> None:
    cfg = load_text(SUBNET + 'reservations = [{ ip_address = "192.0.2.5", client_id = "0102" }]\n')
    assert cfg.subnets[0].reservations[0].ip_address == IPv4Address("192.0.2.5")


# ---- files


def test_load_reads_a_file(tmp_path: Path) -> None:
    path = tmp_path / "t.toml"
    path.write_text(SUBNET)
    cfg = load(path)
    assert cfg.subnets[0].pools[0].end == IPv4Address("192.0.2.99")
    assert load(str(path)) == cfg


def test_load_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path / "nope.toml")
    assert info.value.problems == ["cannot read file: No such file or directory"]


def test_load_non_utf8_file(tmp_path: Path) -> None:
    path = tmp_path / "t.toml"
    path.write_bytes(b'domain = "\xff"\n')
    with pytest.raises(ConfigError) as info:
        load(path)
    assert info.value.problems == ["file is not UTF-8 text (byte 10)"]


def test_config_error_names_its_source(tmp_path: Path) -> None:
    path = tmp_path / "t.toml"
    path.write_text("bogus = 1\n")
    with pytest.raises(ConfigError) as info:
        load(path)
    assert str(info.value) == "bogus: unknown setting"
    assert info.value.__notes__ == [f"in {path}"]


@pytest.mark.parametrize("name", ["tandem.toml", "relay.toml"])
def test_examples_validate(name: str) -> None:
    cfg = load(ROOT / "examples" / name)
    assert len(cfg.subnets) == 2
    assert all(pool_address_count(s) > 0 for s in cfg.subnets)
    for subnet in cfg.subnets:
        for opt in subnet.options.custom:
            assert custom_option_bytes(opt)


def test_example_uses_every_reservation_kind_and_a_custom_option() -> None:
    cfg = load(ROOT / "examples" / "tandem.toml")
    reservations = [r for s in cfg.subnets for r in s.reservations]
    assert any(r.hw_address for r in reservations)
    assert any(r.client_id for r in reservations)
    assert any(s.exclusions for s in cfg.subnets)
    assert any(opt.value is not None for s in cfg.subnets for opt in s.options.custom)


def test_reference_documents_every_setting() -> None:
    from pydantic import BaseModel

    doc = (ROOT / "docs" / "config-reference.md").read_text()
    missing: list[str] = []
    seen: set[type[BaseModel]] = set()

    def types_in(tp: object) -> list[object]:
        # the annotation and every type nested in it (unions, lists, unions of lists, ...)
        return [tp, *(t for a in getattr(tp, "__args__", ()) for t in types_in(a))]

    def walk(model: type[BaseModel]) -> None:
        if model in seen:
            return
        seen.add(model)
        for name, field in model.model_fields.items():
            if not any(f in doc for f in (f"`{name}`", f"`[{name}]`", f"`[[{name}]]`")):
                missing.append(f"{model.__name__}.{name}")
            for tp in types_in(field.annotation):
                if isinstance(tp, type) and issubclass(tp, BaseModel):
                    walk(tp)

    walk(Config)
    assert missing == []
    assert len(seen) == 11  # every model of the schema was visited


def test_exclusion_may_cover_the_network_address() -> None:
    cfg = load_text(SUBNET + 'exclusions = [{ start = "192.0.2.0", end = "192.0.2.12" }]\n')
    assert pool_address_count(cfg.subnets[0]) == 90 - 3
