"""Go-style flag parsing and the reference's flag spellings."""

from __future__ import annotations

import pytest

from cluster import flags as f
from cluster.cli import FLAGS, build_config
from protocol import errors


@pytest.mark.parametrize(
    "text,ns",
    [
        ("0", 0),
        ("300ms", 300_000_000),
        ("1h30m", 5_400_000_000_000),
        ("1.5h", 5_400_000_000_000),
        ("2s", 2_000_000_000),
        ("10us", 10_000),
        ("-1s", -1_000_000_000),
    ],
)
def test_durations(text: str, ns: int) -> None:
    assert f.parse_duration(text) == ns


@pytest.mark.parametrize("text", ["", "5", "1x", "ms", "1s2"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(f.FlagError):
        f.parse_duration(text)


@pytest.mark.parametrize(
    "text,n", [("100", 100), ("1k", 1000), ("1KB", 1024), ("2mb", 2 << 20), ("1g", 10**9)]
)
def test_sizes(text: str, n: int) -> None:
    assert f.parse_size(text) == n


def test_reference_command_line() -> None:
    values, rest = f.parse(
        ["-cid", "prod", "-st", "FILE", "--dir", "/d", "-m", "8222", "-SDV", "-mm=5", "-T=false"],
        FLAGS,
    )
    assert rest == []
    assert values["cluster_id"] == "prod"
    assert values["stan_debug_trace"] is True
    assert values["logtime"] is False
    cfg, _ = build_config(values)
    assert cfg.store == "LMDB"
    assert cfg.dir == "/d"
    assert cfg.http_port == 8222
    assert cfg.limits.max_msgs == 5


def test_boolean_does_not_take_next_word() -> None:
    values, rest = f.parse(["-SD", "false"], FLAGS)
    assert values["stan_debug"] is True
    assert rest == ["false"]


def test_unknown_flag() -> None:
    with pytest.raises(f.FlagError, match="flag provided but not defined: -nope"):
        f.parse(["-nope"], FLAGS)


def test_missing_value() -> None:
    with pytest.raises(f.FlagError, match="flag needs an argument"):
        f.parse(["-cid"], FLAGS)


def test_store_types() -> None:
    assert build_config({"store": "memory"})[0].store == "MEMORY"
    with pytest.raises(f.FlagError, match="unsupported store type: FOO"):
        build_config({"store": "FOO"})
    with pytest.raises(f.FlagError, match="SQL"):
        build_config({"store": "SQL"})


def test_clustering_refuses_memory_store() -> None:
    with pytest.raises(f.FlagError, match=errors.CLUSTERING_MEMORY_STORE):
        build_config({"store": "MEMORY", "clustered": True})


def test_cluster_peers() -> None:
    cfg, _ = build_config(
        {
            "clustered": True,
            "cluster_node_id": "b",
            "cluster_peers": "a=127.0.0.1:7001, b=127.0.0.1:7002,c=127.0.0.1:7003",
        }
    )
    assert cfg.cluster.peers == {
        "a": "127.0.0.1:7001",
        "b": "127.0.0.1:7002",
        "c": "127.0.0.1:7003",
    }
    with pytest.raises(f.FlagError):
        build_config({"clustered": True, "cluster_node_id": "z", "cluster_peers": "a=h:1"})


def test_negative_limit_refused() -> None:
    with pytest.raises(ValueError, match=r"max messages limit cannot be negative \(-1\)"):
        build_config({"max_msgs": -1})
