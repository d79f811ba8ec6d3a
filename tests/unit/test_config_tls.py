"""The failover TLS settings: off by default, all three files or none, each file must exist;
the service hands them to the link (peer_tcp.tls_files)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tandem.config.validate import load_text
from tandem.errors import ConfigError
from tandem.net.peer_tcp import TlsFiles, tls_files

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "hot-standby-standby.toml"


def config_with(lines: str) -> str:
    text = EXAMPLE.read_text()
    assert "\n[failover]\n" in text
    return text + "\n" + lines + "\n"


def test_tls_is_off_by_default() -> None:
    cfg = load_text(EXAMPLE.read_text())
    assert cfg.failover is not None and not isinstance(cfg.failover, list)
    assert tls_files(cfg.failover) is None


def test_all_three_files_turn_tls_on(tmp_path: Path) -> None:
    for name in ("me.crt", "me.key", "partner.crt"):
        (tmp_path / name).write_text("pem\n")
    cfg = load_text(config_with(
        f'tls_cert_file = "{tmp_path}/me.crt"\ntls_key_file = "{tmp_path}/me.key"\n'
        f'tls_ca_file = "{tmp_path}/partner.crt"'
    ))
    assert cfg.failover is not None and not isinstance(cfg.failover, list)
    assert tls_files(cfg.failover) == TlsFiles(
        f"{tmp_path}/me.crt", f"{tmp_path}/me.key", f"{tmp_path}/partner.crt"
    )


def test_some_but_not_all_files_is_a_problem(tmp_path: Path) -> None:
    (tmp_path / "me.crt").write_text("pem\n")
    with pytest.raises(ConfigError) as err:
        load_text(config_with(f'tls_cert_file = "{tmp_path}/me.crt"'))
    (problem,) = [p for p in err.value.problems if "tls" in p]
    assert "failover.tls_key_file" in problem and "failover.tls_ca_file" in problem


def test_missing_and_directory_files_are_named(tmp_path: Path) -> None:
    (tmp_path / "me.key").write_text("pem\n")
    with pytest.raises(ConfigError) as err:
        load_text(config_with(
            f'tls_cert_file = "{tmp_path}/nope.crt"\ntls_key_file = "{tmp_path}/me.key"\n'
            f'tls_ca_file = "{tmp_path}"'
        ))
    problems = [p for p in err.value.problems if "tls" in p]
    assert any(p.startswith("failover.tls_cert_file:") and "does not exist" in p
               for p in problems), problems
    assert any(p.startswith("failover.tls_ca_file:") and "directory" in p
               for p in problems), problems
    assert not any("tls_key_file" in p for p in problems)
