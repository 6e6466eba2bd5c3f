"""Operating a node as users of the reference do: flags, embedded nats-server,
configuration files, signals, exit codes, PID file, log reopening, systemd notify."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

from client import connect
from tests.helpers import (
    LOOPBACK,
    REPO_ROOT,
    NatsServer,
    StanNode,
    StanNodeFactory,
    accepts_connections,
    free_port,
    wait_for_sync,
)

CLI = [sys.executable, "-m", "cluster.cli"]
RUN_TIMEOUT = 60.0


def _get_json(port: int, path: str) -> dict[str, object]:
    with urllib.request.urlopen(f"http://{LOOPBACK}:{port}{path}", timeout=5) as resp:
        data = json.loads(resp.read())
    assert isinstance(data, dict)
    return data


async def test_reference_flags_with_embedded_nats_server(tmp_path: Path, cluster_id: str) -> None:
    nats_port, http_port = free_port(), free_port()
    args = ["-cid", cluster_id, "-st", "FILE", "--dir", str(tmp_path / "d"), "-m", str(http_port)]
    args += ["-SDV", "-a", LOOPBACK, "-p", str(nats_port)]
    # -c alone configures both: the NATS part goes to the embedded nats-server.
    conf = tmp_path / "nats.conf"
    conf.write_text('server_name: "embedded-1"\nstreaming { hb_interval: "9s" }\n')
    args += ["-c", str(conf)]
    node = StanNode(args, log_path=tmp_path / "node.log", http_port=http_port)
    try:
        node.start()
        log = node.log_text()
        for line in (
            "---------- Store Limits ----------",
            "Channels:                  100 *",
            "  Bytes        :     976.56 MB *",
            "Go version: python",
            f"Listening for client connections on {LOOPBACK}:{nats_port}",
        ):
            assert line in log
        sc = await connect(cluster_id, "ops-client", nats_url=f"nats://{LOOPBACK}:{nats_port}")
        try:
            await sc.publish("orders", b"hello")
        finally:
            await sc.close()
        serverz = node.monitor("/streaming/serverz")
        assert serverz["cluster_id"] == cluster_id and serverz["in_msgs"] == 1
        assert "Name:     embedded-1" in node.log_text()
        node.kill(signal.SIGHUP)
        node.wait_for_log("Reloaded server configuration")
        assert node.kill(signal.SIGINT) == 0
        assert "Shutting down." in node.log_text()
        assert not accepts_connections(nats_port), "the embedded nats-server outlived the node"
    finally:
        node.stop()


def test_sigterm_exits_143_and_pid_file(stan_node: StanNodeFactory, tmp_path: Path) -> None:
    pid_file = tmp_path / "stanchion.pid"
    node = stan_node("-P", str(pid_file))
    assert pid_file.read_text().strip() == str(node.pid)
    assert node.stop() == 143
    assert not pid_file.exists()


def test_sighup_with_external_nats_server(stan_node: StanNodeFactory) -> None:
    node = stan_node()
    node.kill(signal.SIGHUP)
    node.wait_for_log("Reload supported only for embedded NATS Server's configuration")
    assert node.running


def test_signal_flag_by_pid_file_and_pid(stan_node: StanNodeFactory, tmp_path: Path) -> None:
    pid_file = tmp_path / "node.pid"
    node = stan_node("-P", str(pid_file))
    sent = subprocess.run([*CLI, "-sl", f"reload={pid_file}"], cwd=REPO_ROOT, timeout=RUN_TIMEOUT)
    assert sent.returncode == 0
    node.wait_for_log("Reload supported only for embedded NATS Server's configuration")
    sent = subprocess.run([*CLI, "-sl", f"quit={node.pid}"], cwd=REPO_ROOT, timeout=RUN_TIMEOUT)
    assert sent.returncode == 0
    assert node.wait_exit(30) == 0
    bad = subprocess.run(
        [*CLI, "-sl", "bogus=1"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=RUN_TIMEOUT
    )
    assert bad.returncode == 1 and 'unknown signal "bogus"' in bad.stderr


def test_log_file_is_reopened_on_sigusr1(
    nats_server: NatsServer, cluster_id: str, tmp_path: Path
) -> None:
    log_file = tmp_path / "stanchion.log"
    args = ["-cid", cluster_id, "-ns", nats_server.url, "--dir", str(tmp_path / "d"), "-l"]
    node = StanNode([*args, str(log_file)], log_path=tmp_path / "stdout.log")
    try:
        node.start(wait_ready=False)
        wait_for_sync(
            lambda: log_file.exists() and "Streaming Server is ready" in log_file.read_text(),
            30,
            "the ready line in the log file",
            state=node.log_tail,
        )
        log_file.rename(tmp_path / "stanchion.log.1")
        node.kill(signal.SIGUSR1)
        wait_for_sync(
            lambda: log_file.exists() and "log file reopened" in log_file.read_text(),
            30,
            "a new log file after SIGUSR1",
        )
        assert "log file reopened" not in (tmp_path / "stanchion.log.1").read_text()
    finally:
        node.stop()


def test_config_file(stan_node: StanNodeFactory, tmp_path: Path) -> None:
    conf = tmp_path / "stan.conf"
    conf.write_text(
        """
        # The node's flags (-cid, -ns, --dir, -m) override nothing set here.
        streaming {
          hb_interval: "7s"
          store_limits {
            max_channels: 20
            max_msgs: 500
            max_age: "1h"
            channels {
              "orders": { max_msgs: 10 }
              "logs.>": { max_bytes: 1KB, max_age: "0s" }
            }
          }
          file_options { crc: false }
        }
        """
    )
    node = stan_node("-sc", str(conf))
    limits = node.monitor("/streaming/storez")["limits"]
    assert isinstance(limits, dict)
    assert (limits["max_channels"], limits["max_msgs"], limits["max_age"]) == (
        20,
        500,
        3600 * 10**9,
    )
    assert limits["channels"] == {
        "logs.>": {
            "max_msgs": 500,
            "max_bytes": 1024,
            "max_age": 0,
            "max_subscriptions": 1000,
            "max_inactivity": 0,
        },
        "orders": {
            "max_msgs": 10,
            "max_bytes": 1_024_000_000,
            "max_age": 3600 * 10**9,
            "max_subscriptions": 1000,
            "max_inactivity": 0,
        },
    }
    log = node.log_text()
    assert "ignoring --file_crc: LMDB has no counterpart" in log
    assert "-------- List of Channels ---------" in log


def _run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=RUN_TIMEOUT
    )


def test_startup_refusals_exit_1(tmp_path: Path) -> None:
    bad = tmp_path / "bad.conf"
    bad.write_text('streaming { hb_fail_count: "ten" }\n')
    cases = [
        (["-st", "SQL"], "SQL store is not supported"),
        (["--ft_group", "g"], "fault tolerance groups are not supported"),
        (["-sc", str(bad)], 'parameter "hb_fail_count" value is expected to be int64, got string'),
        (["-nope"], "flag provided but not defined: -nope"),
    ]
    for args, text in cases:
        result = _run_cli(*args)
        assert result.returncode == 1, (args, result.stderr)
        assert text in result.stderr, (args, result.stderr)


def test_failed_start_logs_and_exits_1(nats_server: NatsServer, tmp_path: Path) -> None:
    busy = socket.socket()
    busy.bind((LOOPBACK, 0))
    busy.listen()
    try:
        port = busy.getsockname()[1]
        result = _run_cli("--dir", str(tmp_path / "d"), "-ns", nats_server.url, "-m", str(port))
    finally:
        busy.close()
    assert result.returncode == 1
    assert "[FTL] STREAM: Failed to start:" in result.stderr


def test_help_and_version() -> None:
    result = _run_cli("--help")
    assert result.returncode == 0
    assert "Streaming Server Options:" in result.stdout and "-sc, --stan_config" in result.stdout
    result = _run_cli("-v")
    assert result.returncode == 0 and "0.25.6" in result.stdout


def test_systemd_notify_ready(nats_server: NatsServer, cluster_id: str, tmp_path: Path) -> None:
    sock_path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.settimeout(30)
    args = ["-cid", cluster_id, "-ns", nats_server.url, "--dir", str(tmp_path / "d")]
    node = StanNode(args, log_path=tmp_path / "node.log", env={"NOTIFY_SOCKET": str(sock_path)})
    try:
        node.start()
        message = sock.recv(4096).decode()
        assert "READY=1" in message and f"MAINPID={node.pid}" in message
        node.stop()
        assert "STOPPING=1" in sock.recv(4096).decode()
    finally:
        node.stop()
        sock.close()
