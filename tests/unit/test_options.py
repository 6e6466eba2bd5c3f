"""Every reference option: flags of OPERATIONS §2, configuration files of §3, precedence."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from cluster import flags as f
from cluster import logs, natsconf
from cluster.options import (
    FLAGS,
    ConfigFileError,
    build_config,
    merge,
    nats_values,
    streaming_values,
)
from store.limits import PerChannelLimits

SPEC = Path(__file__).resolve().parents[3] / "shared" / "spec" / "OPERATIONS.md"


def _spec_flag_names() -> list[str]:
    """Every ``-x``/``--x`` flag named in the tables of OPERATIONS §2."""
    if not SPEC.exists():
        pytest.fail(f"{SPEC} not found: the spec lies beside the repository")
    text = SPEC.read_text()
    section = text[text.index("## 2. Command-line flags") : text.index("## 3. Configuration file")]
    names = set(re.findall(r"`(--?[A-Za-z_]+)`", section))
    names |= {m for m in re.findall(r"`(--?[A-Za-z_]+)[ `]", section)}
    return sorted(n.lstrip("-") for n in names)


def test_every_reference_flag_is_known() -> None:
    known = {name for flag in FLAGS for name in flag.names}
    missing = [n for n in _spec_flag_names() if n not in known]
    assert missing == []


def _parse(*argv: str) -> tuple[Any, Any]:
    values, rest = f.parse(list(argv), FLAGS)
    assert rest == []
    return build_config(merge(values), set(values))


def test_reference_command_line() -> None:
    cfg, run = _parse(
        "-cid", "prod", "-st", "FILE", "--dir", "/d", "-m", "8222", "-SDV", "-p", "5222"
    )
    assert (cfg.cluster_id, cfg.store, cfg.dir, cfg.http_port) == ("prod", "LMDB", "/d", 8222)
    assert run.stan_debug and run.stan_trace
    assert run.nats_port == 5222 and cfg.nats_urls == []


def test_sdv_false_clears_both() -> None:
    _cfg, run = _parse("-SD", "-SV", "-SDV=false")
    assert not run.stan_debug and not run.stan_trace


def test_defaults() -> None:
    cfg, run = build_config({})
    assert cfg.cluster_id == "test-cluster"
    assert cfg.limits.max_channels == 100 and cfg.limits.max_bytes == 1_024_000_000
    assert cfg.hb_interval == 30 * 10**9 and cfg.hb_timeout == 10 * 10**9
    assert cfg.hb_fail_count == 10 and cfg.store_sync is True
    assert run.logtime is True and run.nats_port == 4222 and run.nats_addr == "0.0.0.0"


def test_file_sync_maps_to_store_fsync() -> None:
    assert _parse("--file_sync=false")[0].store_sync is False


@pytest.mark.parametrize(
    "argv,text",
    [
        (["-st", "SQL"], "SQL store is not supported"),
        (["-st", "redis"], "unsupported store type: redis"),
        (["--ft_group", "g"], "fault tolerance groups are not supported"),
        (["--encrypt"], "encryption at rest is not supported"),
        (["--encryption_key", "k"], "encryption at rest is not supported"),
        (["--cluster_allow_add_remove_node"], "membership is static"),
        (["-ms", "8443"], "needs --tlscert and --tlskey"),
        (["--io_batch_size", "0"], "io_batch_size"),
    ],
)
def test_refused(argv: list[str], text: str) -> None:
    with pytest.raises(f.FlagError, match=text):
        _parse(*argv)


def test_refused_boolean_set_to_false_is_fine() -> None:
    _parse("--encrypt=false", "--cluster_allow_add_remove_node=false")


def test_ignored_flags_give_one_notice_each() -> None:
    _cfg, run = _parse("--file_crc=false", "--sql_driver", "mysql", "--io_sleep_time", "10")
    assert len(run.notices) == 3
    assert any("--file_crc" in n and "LMDB" in n for n in run.notices)
    assert any("--sql_driver" in n for n in run.notices)


def test_embedded_nats_flags_go_to_the_child() -> None:
    _cfg, run = _parse("-p", "5222", "-a", "127.0.0.1", "-DV", "--user", "u", "--pass", "p")
    assert (run.nats_addr, run.nats_port) == ("127.0.0.1", 5222)
    assert run.nats_args[:2] == ["-D", "-V"]
    assert ["--user", "u", "--pass", "p"] == run.nats_args[2:6]


def test_embedded_nats_flags_with_external_server_are_explained() -> None:
    cfg, run = _parse("-ns", "nats://127.0.0.1:4222", "-p", "5222", "-D")
    assert cfg.nats_urls == ["nats://127.0.0.1:4222"]
    assert run.nats_args == []
    assert sum("external one" in n for n in run.notices) == 2


def test_nats_server_list() -> None:
    cfg, _ = _parse("-ns", "nats://u:p@a:4222,nats://b:4222")
    assert cfg.nats_urls == ["nats://u:p@a:4222", "nats://b:4222"]


def test_monitoring_host_follows_client_host() -> None:
    cfg, _ = _parse("-a", "127.0.0.1", "-m", "8222")
    assert (cfg.http_host, cfg.http_port) == ("127.0.0.1", 8222)


def test_help_has_sections() -> None:
    text = f.usage(FLAGS)
    for title in (
        "Streaming Server Options:",
        "Streaming Server Clustering Options:",
        "Common Options:",
    ):
        assert title in text
    assert "-cid, --cluster_id <str>" in text


# -- configuration files -------------------------------------------------------------------------

FULL = """
streaming {
  ID: "from-file"
  discover_prefix: "_MY.discover"
  store: file
  dir: "/data"
  sd: true
  nats_server_url: "nats://127.0.0.1:4222"
  username: "su"
  password: "sp"
  hb_interval: "5s"
  hbt: "2s"
  server_to_client_hb_fail_count: 3
  replace_durables: true
  store_limits {
    max_channels: 10
    max_subscriptions: 5
    max_msgs: 1000
    max_bytes: 10MB
    max_age: "1h"
    max_inactivity: "10m"
    channels {
      "orders": { max_msgs: 0, max_age: "2h" }
      "logs.>": { max_bytes: 1KB }
    }
  }
  file_options { sync: false, compact: false, buffer_size: 2MB }
  cluster {
    node_id: "b"
    peers: ["a=127.0.0.1:7001", "b=127.0.0.1:7002", "c=127.0.0.1:7003"]
    log_path: "/raft"
    sync: true
    raft_logging: true
    raft_heartbeat_timeout: "1s"
    raft_lease_timeout: "500ms"
    nodes_connections: true
  }
}
"""


def test_streaming_block() -> None:
    cfg, run = build_config(streaming_values(natsconf.parse(FULL)))
    assert cfg.cluster_id == "from-file" and cfg.discover_prefix == "_MY.discover"
    assert cfg.store == "LMDB" and cfg.dir == "/data" and run.stan_debug
    assert cfg.nats_urls == ["nats://127.0.0.1:4222"]
    assert (cfg.nats_user, cfg.nats_pass) == ("su", "sp")
    assert (cfg.hb_interval, cfg.hb_timeout, cfg.hb_fail_count) == (5 * 10**9, 2 * 10**9, 3)
    assert cfg.replace_durable is True and cfg.store_sync is False
    lim = cfg.limits
    assert (lim.max_channels, lim.max_subs, lim.max_msgs) == (10, 5, 1000)
    assert lim.max_bytes == 10 * 1024**2
    assert (lim.max_age, lim.max_inactivity) == (3600 * 10**9, 600 * 10**9)
    assert lim.channels["orders"] == PerChannelLimits(max_msgs=-1, max_age=7200 * 10**9)
    assert lim.resolve("orders").max_msgs == 0  # 0 in a per-channel entry: unlimited
    assert lim.resolve("logs.app").max_bytes == 1024
    cl = cfg.cluster
    assert cl.enabled and cl.node_id == "b" and cl.log_path == "/raft" and cl.sync
    assert cl.peers["c"] == "127.0.0.1:7003"
    assert (cl.election_min, cl.election_max, cl.leader_fallback) == (1.0, 2.0, 0.5)
    assert any("nodes_connections" in n for n in run.notices)
    assert any("--file_compact_enabled" in n for n in run.notices)


def test_top_level_keys_without_streaming_block() -> None:
    values = streaming_values(natsconf.parse("cid: top\nmax_msgs: 5\nlimits { mm: 7 }\n"))
    assert values == {"cluster_id": "top", "max_msgs": 7}


def test_only_the_streaming_block_is_read() -> None:
    values = streaming_values(natsconf.parse("cid: top\nstreaming { sv: true }\n"))
    assert values == {"stan_trace": True}


@pytest.mark.parametrize(
    "text,message",
    [
        ("cid: 1", 'parameter "cid" value is expected to be string, got int64'),
        ('sd: "yes"', 'parameter "sd" value is expected to be bool, got string'),
        ('hbf: "3"', 'parameter "hbf" value is expected to be int64, got string'),
        ("hbi: 30", 'parameter "hbi" value is expected to be string, got int64'),
        ("cluster { peers: a }", 'parameter "peers" value is expected to be slice, got string'),
        ("store_limits { max_age: 1m }", "expected to be string, got int64"),
        ("store: mongo", "unknown store type: mongo"),
        ('hbi: "5x"', 'time: invalid duration "5x"'),
        ("streaming: 1", "expected streaming section to be a map/struct, got 1"),
        ("store_limits: 1", "expected store limits to be a map/struct"),
    ],
)
def test_file_errors(text: str, message: str | None) -> None:
    with pytest.raises(ConfigFileError, match=re.escape(message) if message else None):
        streaming_values(natsconf.parse(text))


def test_invalid_channel_name_in_limits() -> None:
    values = streaming_values(natsconf.parse('store_limits { channels { "foo..bar": { mm: 1 } } }'))
    with pytest.raises(ValueError, match='invalid channel name "foo..bar"'):
        build_config(values)


def _write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_precedence_defaults_file_flags(tmp_path: Path) -> None:
    conf = _write(tmp_path, "s.conf", "streaming { cid: file, store_limits { mm: 5, mb: 1KB } }")
    values, _ = f.parse(["-sc", conf, "-mm", "9"], FLAGS)
    cfg, _run = build_config(merge(values), set(values))
    assert cfg.cluster_id == "file"  # file over default
    assert cfg.limits.max_msgs == 9  # flag over file
    assert cfg.limits.max_bytes == 1024
    assert cfg.limits.max_subs == 1000  # default


def test_one_file_configures_both(tmp_path: Path) -> None:
    conf = _write(
        tmp_path,
        "both.conf",
        """
        port: 5222
        http: 8333
        logtime: false
        authorization { user: u, password: p }
        streaming { cid: both, username: su }
        """,
    )
    for flag in ("-c", "-sc"):
        values, _ = f.parse([flag, conf], FLAGS)
        cfg, run = build_config(merge(values), set(values))
        assert cfg.cluster_id == "both" and cfg.http_port == 8333
        assert run.nats_port == 5222 and run.logtime is False
        assert cfg.nats_user == "su" and cfg.nats_pass == "p"
        assert run.nats_config == {
            "port": 5222,
            "logtime": False,
            "authorization": {"user": "u", "password": "p"},
        }


def test_two_files_each_configure_their_component(tmp_path: Path) -> None:
    nats = _write(tmp_path, "nats.conf", "port: 5222\nstreaming { cid: wrong }\n")
    stan = _write(tmp_path, "stan.conf", "cid: right\nport: 1\n")
    values, _ = f.parse(["-c", nats, "-sc", stan], FLAGS)
    cfg, run = build_config(merge(values), set(values))
    assert cfg.cluster_id == "right" and run.nats_port == 5222


def test_credentials_flags_win_over_file(tmp_path: Path) -> None:
    conf = _write(tmp_path, "s.conf", "streaming { user: fu, password: fp }")
    values, _ = f.parse(["-sc", conf, "--user", "cu", "--pass", "cp"], FLAGS)
    cfg, _ = build_config(merge(values), set(values))
    assert (cfg.nats_user, cfg.nats_pass) == ("cu", "cp")


def test_child_part_drops_streaming_keys() -> None:
    mapping = natsconf.parse(
        """
        port: 4222
        http: 8222
        pid_file: "/run/x.pid"
        cid: x
        store_limits { mm: 1 }
        cluster { node_id: a, peers: [] }
        tls { cert_file: c, key_file: k, client_cert: cc }
        debug: true
        """
    )
    ours, child = nats_values(mapping)
    assert child == {"port": 4222, "tls": {"cert_file": "c", "key_file": "k"}, "debug": True}
    assert ours["http_port"] == 8222 and ours["pid_file"] == "/run/x.pid"
    assert (ours["tlscert"], ours["tlskey"]) == ("c", "k")


def test_nats_routes_cluster_stays_with_the_child() -> None:
    _ours, child = nats_values(natsconf.parse("cluster { listen: 0.0.0.0:6222 }"))
    assert child == {"cluster": {"listen": "0.0.0.0:6222"}}


def test_listen_and_https_keys() -> None:
    ours, _ = nats_values(natsconf.parse('listen: "127.0.0.1:5222"\nhttps: "127.0.0.1:8443"'))
    assert (ours["addr"], ours["port"], ours["https_port"], ours["http_host"]) == (
        "127.0.0.1",
        5222,
        8443,
        "127.0.0.1",
    )


# -- startup lines -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "ns,text",
    [
        (0, "0s"),
        (300_000_000, "300ms"),
        (1_500_000_000, "1.5s"),
        (90 * 10**9, "1m30s"),
        (3600 * 10**9, "1h0m0s"),
        (5_400 * 10**9, "1h30m0s"),
    ],
)
def test_go_duration(ns: int, text: str) -> None:
    assert logs.go_duration(ns) == text


def test_friendly_bytes() -> None:
    assert logs.friendly_bytes(1_024_000_000) == "976.56 MB"
    assert logs.friendly_bytes(512) == "512 B"
    assert logs.friendly_bytes(2048) == "2.00 KB"


def test_store_limits_table() -> None:
    cfg, _ = _parse("-mc", "0", "-ma", "1h")
    cfg.limits.channels["foo"] = PerChannelLimits(max_msgs=5)
    lines = logs.store_limits_lines(cfg.limits)
    assert lines[0] == "---------- Store Limits ----------"
    assert lines[1] == "Channels:        " + "unlimited".rjust(13)
    assert lines[3] == "  Subscriptions: " + "1000".rjust(13) + " *"
    assert lines[5] == "  Bytes        : " + "976.56 MB".rjust(13) + " *"
    assert lines[6] == "  Age          : " + "1h0m0s".rjust(13)
    assert "-------- List of Channels ---------" in lines
    assert "  Messages     : " + "5".rjust(13) in lines
    assert lines[-1] == "----------------------------------"
