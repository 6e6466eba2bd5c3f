"""How the reference server's options combine: flags (``cluster.flag_table``) and files.

Flags and file keys are both turned into one dictionary keyed by the flags'
``dest`` names; file values come first and flags override them (built-in
defaults < configuration file < command line, as the reference does). Then
``build_config`` turns that dictionary into the node's ``ServerConfig`` and
the process-level ``RunOptions``.

Options of the reference that have no meaning here are either refused with
one line saying why (when accepting them would change what the user expects:
SQL store, FT groups, encryption, partitioning, dynamic membership) or
accepted with one notice line logged at startup (file-store tuning that LMDB
has no counterpart for, and the like).
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass, field
from typing import Any

from cluster import flags as f
from cluster.config import ClusterConfig, ServerConfig
from cluster.fileconfig import (
    FILE_ONLY_IGNORED,
    ConfigFileError,
    load_files,
    nats_values,
    streaming_values,
)
from cluster.flag_table import BY_DEST, CHILD_FLAGS, CHILD_ONLY, FLAGS, SECOND
from protocol import errors

__all__ = [
    "FLAGS",
    "ConfigFileError",
    "RunOptions",
    "build_config",
    "merge",
    "nats_values",
    "parse_peers",
    "streaming_values",
]


@dataclass(slots=True)
class RunOptions:
    """Process-level settings: embedded NATS server, monitoring, logging, PID file."""

    #: Embedded nats-server (only without -ns): listen host and port.
    nats_addr: str = "0.0.0.0"
    nats_port: int = 4222
    #: Extra flags for the child, and the NATS part of the configuration file.
    nats_args: list[str] = field(default_factory=list)
    nats_config: dict[str, Any] | None = None
    #: HTTPS monitoring port and its certificate.
    https_port: int = 0
    tls_cert: str = ""
    tls_key: str = ""
    stan_debug: bool = False
    stan_trace: bool = False
    logtime: bool = True
    log_file: str = ""
    syslog: bool = False
    remote_syslog: str = ""
    syslog_name: str = ""
    pid_file: str = ""
    #: One line each: accepted options that have no effect here.
    notices: list[str] = field(default_factory=list)


# -- building the configuration ----------------------------------------------------------------


def merge(flag_values: dict[str, Any]) -> dict[str, Any]:
    """Defaults < files < flags, with ``-SDV``/``-DV`` setting both of their flags."""
    values = load_files(flag_values)
    values.update(flag_values)
    for both, pair in (
        ("stan_debug_trace", ("stan_debug", "stan_trace")),
        ("debug_trace", ("debug", "trace")),
    ):
        if both in flag_values:
            for dest in pair:
                values[dest] = flag_values[both]
    return values


def build_config(
    values: dict[str, Any], from_flags: set[str] | None = None
) -> tuple[ServerConfig, RunOptions]:
    """``ServerConfig`` and ``RunOptions`` from merged values (see ``merge``).

    ``from_flags`` names the values given on the command line (all of them
    when None); it decides which notices apply and which credentials win.
    """
    given = set(values) if from_flags is None else from_flags
    cfg = ServerConfig()
    run = RunOptions()
    _refuse(values)
    if "cluster_id" in values:
        cfg.cluster_id = values["cluster_id"]
    if "discover_prefix" in values:
        cfg.discover_prefix = values["discover_prefix"]
    if "store" in values:
        kind = values["store"].upper()
        if kind in ("FILE", "LMDB"):
            cfg.store = "LMDB"
        elif kind == "MEMORY":
            cfg.store = "MEMORY"
        elif kind == "SQL":
            raise f.FlagError("SQL store is not supported by stanchion: use -st FILE (LMDB)")
        else:
            raise f.FlagError(f"unsupported store type: {values['store']}")
    if "dir" in values:
        cfg.dir = values["dir"]
    lim = cfg.limits
    for key in ("max_channels", "max_subs", "max_msgs", "max_bytes", "max_age", "max_inactivity"):
        if key in values:
            setattr(lim, key, values[key])
    lim.channels = dict(values.get("channels", {}))
    lim.validate()
    if values.get("nats_server"):
        cfg.nats_urls = [u.strip() for u in values["nats_server"].split(",") if u.strip()]
    for key in ("hb_interval", "hb_timeout", "hb_fail_count", "replace_durable", "io_batch_size"):
        if key in values:
            setattr(cfg, key, values[key])
    if cfg.io_batch_size < 1:
        raise f.FlagError(f"invalid io_batch_size {cfg.io_batch_size}: must be at least 1")
    if "file_sync" in values:
        cfg.store_sync = values["file_sync"]
    _credentials(cfg, values, given)
    cfg.http_port = values.get("http_port", 0)
    cfg.http_host = values.get("http_host") or values.get("addr") or cfg.http_host
    cfg.cluster = _cluster(values, cfg)
    _nats_tls(cfg, values)
    _run_options(run, values, given, cfg)
    return cfg, run


def _refuse(values: dict[str, Any]) -> None:
    for dest in ("ft_group", "encryption_key"):
        if values.get(dest):
            raise f.FlagError(f"{f.flag_names(BY_DEST[dest])}: {BY_DEST[dest].refused}")
    for dest in ("encrypt", "cluster_allow_add_remove_node"):
        if values.get(dest) is True:
            raise f.FlagError(f"{f.flag_names(BY_DEST[dest])}: {BY_DEST[dest].refused}")
    if values.get("partitioning") is True:
        raise f.FlagError("partitioning is not supported: every node serves every channel")


def _credentials(cfg: ServerConfig, values: dict[str, Any], given: set[str]) -> None:
    """Our own NATS connections: CLI --user/--pass/--auth, else the streaming keys."""
    for flag_dest, file_dest, attr in (
        ("user", "conn_user", "nats_user"),
        ("pass", "conn_pass", "nats_pass"),
        ("auth", "conn_token", "nats_token"),
    ):
        if flag_dest in given and flag_dest in values:
            value = values[flag_dest]
        else:
            value = values.get(file_dest) or values.get(flag_dest, "")
        setattr(cfg, attr, value)
    if values.get("credentials"):
        cfg.nats_connect_extra["user_credentials"] = values["credentials"]
    if values.get("nkey_seed_file"):
        cfg.nats_connect_extra["nkeys_seed"] = values["nkey_seed_file"]


def _cluster(values: dict[str, Any], cfg: ServerConfig) -> ClusterConfig:
    cl = ClusterConfig(enabled=bool(values.get("clustered", False)))
    cl.node_id = values.get("cluster_node_id", "")
    cl.log_path = values.get("cluster_log_path", "")
    cl.sync = bool(values.get("cluster_sync", False))
    cl.raft_logging = bool(values.get("cluster_raft_logging", False))
    if values.get("cluster_compact_size"):
        cl.compact_bytes = int(values["cluster_compact_size"])
    cl.secret = values.get("cluster_secret") or os.environ.get("STANCHION_CLUSTER_SECRET")
    peers = values.get("cluster_peers")
    if peers:
        cl.peers = parse_peers(peers if isinstance(peers, list) else peers.split(","))
    hb = values.get("raft_heartbeat_timeout")
    if hb:
        cl.election_min = hb / SECOND
        cl.election_max = 2 * hb / SECOND
        cl.heartbeat_period = max(0.01, hb / SECOND / 10)
    lease = values.get("raft_lease_timeout")
    if lease:
        cl.leader_fallback = lease / SECOND
    if cl.enabled:
        if cfg.store == "MEMORY":
            raise f.FlagError(errors.CLUSTERING_MEMORY_STORE)
        if not cl.node_id or cl.node_id not in cl.peers:
            raise f.FlagError(
                "clustered mode needs --cluster_node_id and --cluster_peers with "
                "id=host:port for every member, this node included"
            )
    return cl


def parse_peers(items: list[str]) -> dict[str, str]:
    """``["a=127.0.0.1:7001", ...]`` -> {node id: address}."""
    peers: dict[str, str] = {}
    for raw in items:
        item = raw.strip()
        if not item:
            continue
        node, eq, addr = item.partition("=")
        if not eq or ":" not in addr:
            raise f.FlagError(
                f'invalid cluster peer "{item}": expected id=host:port (the Raft address '
                "of every member is needed, this node included)"
            )
        peers[node.strip()] = addr.strip()
    return peers


def _nats_tls(cfg: ServerConfig, values: dict[str, Any]) -> None:
    """An SSL context for our NATS connections, from -secure/-tls_client_* (or tls {})."""
    cert = values.get("tls_client_cert", "")
    key = values.get("tls_client_key", "")
    ca = values.get("tls_client_cacert", "")
    embedded_tls = not values.get("nats_server") and bool(
        values.get("tls") or values.get("tlscert")
    )
    secure = bool(values.get("secure")) or embedded_tls
    if not (secure or cert or ca):
        return
    if bool(cert) != bool(key):
        raise f.FlagError("TLS to NATS needs both -tls_client_cert and -tls_client_key")
    ctx = ssl.create_default_context(cafile=ca or None)
    if cert:
        ctx.load_cert_chain(cert, key)
    # -secure alone, or TLS to our own embedded server: encrypted, server not verified.
    if values.get("tls_skip_verify") or not ca:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    cfg.nats_connect_extra["tls"] = ctx
    if values.get("tls_server_name"):
        cfg.nats_connect_extra["tls_hostname"] = values["tls_server_name"]


def _run_options(
    run: RunOptions, values: dict[str, Any], given: set[str], cfg: ServerConfig
) -> None:
    run.nats_addr = values.get("addr", "0.0.0.0")
    run.nats_port = values.get("port", 4222)
    run.https_port = values.get("https_port", 0)
    run.tls_cert = values.get("tlscert", "")
    run.tls_key = values.get("tlskey", "")
    if run.https_port and not (run.tls_cert and run.tls_key):
        raise f.FlagError(
            "-ms/--https_port needs --tlscert and --tlskey (or tls { cert_file, key_file }): "
            "the monitoring port uses the NATS server's certificate"
        )
    run.stan_debug = bool(values.get("stan_debug", False))
    run.stan_trace = bool(values.get("stan_trace", False))
    run.logtime = bool(values.get("logtime", True))
    run.log_file = values.get("log_file", "")
    run.syslog = bool(values.get("syslog", False))
    run.remote_syslog = values.get("remote_syslog", "")
    run.syslog_name = values.get("syslog_name", "")
    run.pid_file = values.get("pid_file", "")
    embedded = not cfg.nats_urls
    if embedded:
        run.nats_config = values.get("nats_config_child")
        run.nats_args = _child_args(values)
    for dest in sorted(values):
        flag = BY_DEST.get(dest)
        if flag is not None and flag.ignored:
            run.notices.append(f"ignoring {f.flag_names(flag)}: {flag.ignored}")
        elif dest in FILE_ONLY_IGNORED:
            run.notices.append(f"ignoring cluster {{ {dest} }}: {FILE_ONLY_IGNORED[dest]}")
        elif not embedded and dest in CHILD_ONLY and dest in given and flag is not None:
            run.notices.append(
                f"ignoring {f.flag_names(flag)}: it configures the embedded NATS server, "
                "and -ns names an external one"
            )


def _child_args(values: dict[str, Any]) -> list[str]:
    args: list[str] = []
    for dest, name in CHILD_FLAGS:
        if dest not in values:
            continue
        value = values[dest]
        if isinstance(value, bool):
            args.append(name if value else f"{name}=false")
        else:
            args += [name, str(value)]
    # Logging goes where ours goes.
    if values.get("log_file"):
        args += ["-l", values["log_file"]]
    if "logtime" in values:
        args.append("-T=" + ("true" if values["logtime"] else "false"))
    if values.get("syslog"):
        args.append("-s")
    if values.get("remote_syslog"):
        args += ["-r", values["remote_syslog"]]
    return args
