"""Disk full, for real: the lease store on a 2 MiB tmpfs in a private mount namespace fills
the file system; the client whose lease cannot be committed gets no ACK, ``status`` reports
the STORE_WRITE_FAILED alarm; once space is freed the same server (no restart) commits and
ACKs the client's retransmitted REQUEST and the alarm clears. The work is done by
``_disk_full_driver.py`` under ``unshare --mount`` (the mount vanishes with the namespace).

The failover state record on the same full disk: ``_disk_full_failover_driver.py`` (a
hot-standby secondary whose automatic switchover to PARTNER-DOWN comes due while SQLite
cannot write) -- the server does not act on the state it could not record, raises the
FAILOVER_STATE_WRITE_FAILED alarm, and enters PARTNER-DOWN once space returns."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

DRIVER = Path(__file__).with_name("_disk_full_driver.py")
FAILOVER_DRIVER = Path(__file__).with_name("_disk_full_failover_driver.py")

pytestmark = pytest.mark.root


def _skip(reason: str) -> None:
    if os.environ.get("TANDEM_REQUIRE_E2E") == "1":
        pytest.fail(f"end-to-end tests are required here but cannot run: {reason}")
    pytest.skip(reason)


def _run_in_private_mount_namespace(driver: Path, tmp_path: Path) -> dict[str, Any]:
    """Run a driver script under ``unshare --mount`` (its tmpfs never shows outside) and
    return the JSON object it prints last."""
    if os.geteuid() != 0:
        _skip("needs root (a tmpfs mounted in a private mount namespace)")
    if shutil.which("unshare") is None or shutil.which("mount") is None:
        _skip("needs unshare and mount (util-linux)")
    proc = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "--",
         sys.executable, str(driver), str(tmp_path)],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "error" not in out, out
    return out


def test_full_disk_withholds_acks_raises_the_alarm_and_recovers_without_restart(
    tmp_path: Path,
) -> None:
    out = _run_in_private_mount_namespace(DRIVER, tmp_path)
    # the disk filled while serving: some leases were committed and ACKed first
    assert out["acked_before_full"] >= 1
    assert out["free_bytes_while_full"] < 64 * 1024
    # the lease that could not be committed was not ACKed, not even on retransmission
    assert out["store_write_failed"] >= 1 and out["acks_withheld"] >= 1
    assert out["ack_while_full"] is False
    alarm = out["status_while_full"]
    assert alarm["ok"] is False and alarm["alarm"] == "STORE_WRITE_FAILED"
    assert "full" in alarm["error"] and alarm["uncommitted_leases"] >= 1
    # space back: the retransmitted REQUEST is ACKed (same address), the alarm clears
    assert out["ack_after_space"] is True and out["ack_address_matches"] is True
    assert out["status_after"]["ok"] is True and out["status_after"]["alarm"] is None
    assert out["store_recoveries"] == 1
    assert out["new_client_acked_after"] is True
    assert out["events"] == ["STORE_WRITE_FAILED", "STORE_WRITE_RECOVERED"]
    # every ACKed lease is in the store: those before, the recovered one, the new client
    assert out["stored_active"] == out["acked_before_full"] + 2
    # nothing left mounted outside the namespace
    assert not os.path.ismount(tmp_path / "fs")


def test_failover_state_write_on_a_full_disk_is_not_acted_on_and_recovers(
    tmp_path: Path,
) -> None:
    out = _run_in_private_mount_namespace(FAILOVER_DRIVER, tmp_path)
    assert out["free_bytes_while_full"] < 64 * 1024 and "full" in out["probe_error"]
    # the switchover to PARTNER-DOWN came due on the full disk: not recorded, not entered
    assert out["state_while_full"] == "COMMUNICATIONS_INTERRUPTED"
    sw = out["status_while_full"]["state_write"]
    assert sw["ok"] is False and sw["alarm"] == "FAILOVER_STATE_WRITE_FAILED"
    assert "disk is full" in sw["error"] and sw["pending"] == "PARTNER-DOWN"
    assert out["status_while_full"]["state"] == "COMMUNICATIONS-INTERRUPTED"
    # retried about once a second (2.5 s: the first attempt and two or three retries)
    assert 2 <= out["persist_failures_while_full"] <= 5
    assert out["counters_while_full"]["failover_state_write_failed"] == (
        out["persist_failures_while_full"])
    # space back: the same process records PARTNER-DOWN, then enters it; alarm cleared
    assert out["partner_down_after_space"] is True
    assert out["stored_state_after"] == 4  # ServerState.PARTNER_DOWN, read back from disk
    assert out["status_after"]["ok"] is True and out["recoveries"] == 1
    # one ERROR line for the failure (at most every 10 s), one for the recovery, no crash
    assert out["events"] == [["FAILOVER_STATE_WRITE_FAILED", 40],
                             ["FAILOVER_STATE_WRITE_RECOVERED", 30]]
    assert not os.path.ismount(tmp_path / "fs")
