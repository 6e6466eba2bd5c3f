"""deploy/: the systemd units pass ``systemd-analyze verify``, the sysusers file
parses, and the example node configurations build a valid three-node cluster."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cluster import natsconf
from cluster.options import build_config, streaming_values

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
UNITS = ["stanchion@.service", "stanchion-nats.service", "stanchion.target"]
#: Where the units expect the installation; replaced by this virtualenv for verify.
INSTALL_BIN = "/opt/stanchion/bin"


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (make test installs Debian's systemd package)")
    return path


def test_units_verify(tmp_path: Path) -> None:
    analyze = _tool("systemd-analyze")
    # verify checks that ExecStart programs exist: stand-ins in a bin/ of ours.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for program in ("stanchion", "nats-server"):
        stub = bin_dir / program
        stub.write_text(f'#!/bin/sh\nexec {sys.executable} -m cluster.cli "$@"\n')
        stub.chmod(0o755)
    for name in UNITS:
        text = (DEPLOY / name).read_text()
        (tmp_path / name).write_text(text.replace(INSTALL_BIN, str(bin_dir)))
    targets = [str(tmp_path / "stanchion@a.service"), str(tmp_path / "stanchion-nats.service")]
    targets.append(str(tmp_path / "stanchion.target"))
    result = subprocess.run(
        [analyze, "verify", "--man=no", *targets],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # Warnings about our units (not about the host's own) fail the test too.
    ours = [line for line in result.stderr.splitlines() if "stanchion" in line]
    assert ours == [], "\n".join(ours)


def test_units_settings() -> None:
    unit = (DEPLOY / "stanchion@.service").read_text()
    for line in (
        "Type=notify",
        "User=stanchion",
        "Restart=on-failure",
        "SuccessExitStatus=143",
        "KillMode=mixed",
        "StateDirectory=stanchion/%i",
        "ExecStart=/opt/stanchion/bin/stanchion -sc /etc/stanchion/%i.conf $STANCHION_OPTS",
    ):
        assert line in unit.splitlines()


def test_sysusers(tmp_path: Path) -> None:
    sysusers = _tool("systemd-sysusers")
    target = tmp_path / "usr/lib/sysusers.d"
    target.mkdir(parents=True)
    (tmp_path / "etc").mkdir()
    shutil.copy(DEPLOY / "stanchion.sysusers.conf", target / "stanchion.conf")
    result = subprocess.run(
        [sysusers, "--dry-run", f"--root={tmp_path}"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "Creating user 'stanchion'" in result.stdout + result.stderr


@pytest.mark.parametrize("node", ["a", "b", "c"])
def test_example_node_configs(node: str) -> None:
    values = streaming_values(natsconf.parse_file(DEPLOY / "examples" / f"{node}.conf"))
    cfg, _run = build_config(values)
    assert cfg.cluster.enabled and cfg.cluster.node_id == node
    assert sorted(cfg.cluster.peers) == ["a", "b", "c"]
    assert all(addr.startswith("192.0.2.") for addr in cfg.cluster.peers.values())
    assert cfg.store == "LMDB" and cfg.dir == f"/var/lib/stanchion/{node}"
    assert cfg.limits.max_age == 72 * 3600 * 10**9
    assert cfg.limits.resolve("audit.login").max_msgs == 0
    assert cfg.nats_urls == ["nats://127.0.0.1:4222"]


def test_example_nats_config() -> None:
    conf = natsconf.parse_file(DEPLOY / "examples" / "nats-server.conf")
    assert len(conf["cluster"]["routes"]) == 3
