"""``stanchion``: run one node, with the reference server's flags."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from typing import Any

from cluster import flags as f
from cluster import logs
from cluster.config import ClusterConfig, ServerConfig
from protocol import errors

log = logging.getLogger("stanchion.cli")

F = f.Flag
FLAGS: list[f.Flag] = [
    F(("cid", "cluster_id"), "cluster_id", "str", "Cluster ID (default: test-cluster)"),
    F(("st", "store"), "store", "str", "Store type: LMDB (default), FILE (same as LMDB), MEMORY"),
    F(("dir",), "dir", "str", "Data directory (default: ./stanchion-data)"),
    F(("mc", "max_channels"), "max_channels", "int", "Max number of channels (0 = unlimited)"),
    F(("msu", "max_subs"), "max_subs", "int", "Max subscriptions per channel (0 = unlimited)"),
    F(("mm", "max_msgs"), "max_msgs", "int", "Max messages per channel (0 = unlimited)"),
    F(("mb", "max_bytes"), "max_bytes", "size", "Max bytes per channel (0 = unlimited)"),
    F(("ma", "max_age"), "max_age", "duration", "Max age of messages (0 = unlimited)"),
    F(("mi", "max_inactivity"), "max_inactivity", "duration", "Delete channels inactive this long"),
    F(("ns", "nats_server"), "nats_server", "str", "URL of the NATS server (embedded otherwise)"),
    F(("hbi", "hb_interval"), "hb_interval", "duration", "Server to client heartbeat interval"),
    F(("hbt", "hb_timeout"), "hb_timeout", "duration", "Heartbeat reply timeout"),
    F(
        ("hbf", "hb_fail_count"),
        "hb_fail_count",
        "int",
        "Failed heartbeats before a client is closed",
    ),
    F(("replace_durable",), "replace_durable", "bool", "Replace an active durable on resubscribe"),
    F(("io_batch_size",), "io_batch_size", "int", "Max messages per replicated publish batch"),
    F(("file_sync",), "file_sync", "bool", "fsync every store commit (default true)"),
    F(("clustered",), "clustered", "bool", "Run as a member of a Raft cluster"),
    F(("cluster_node_id",), "cluster_node_id", "str", "This node's ID"),
    F(
        ("cluster_peers",),
        "cluster_peers",
        "str",
        "Members as id=host:port,... (Raft TCP addresses, self included)",
    ),
    F(
        ("cluster_log_path",),
        "cluster_log_path",
        "str",
        "Raft journal directory (default <dir>/raft)",
    ),
    F(("cluster_sync",), "cluster_sync", "bool", "fsync the Raft journal on every write"),
    F(("cluster_raft_logging",), "cluster_raft_logging", "bool", "Log the Raft library's messages"),
    F(("cluster_secret",), "cluster_secret", "str", "Shared secret of the Raft transport"),
    F(("a", "addr"), "addr", "str", "Embedded NATS server: listen host (default 0.0.0.0)"),
    F(("p", "port"), "port", "int", "Embedded NATS server: client port (default 4222)"),
    F(("m", "http_port"), "http_port", "int", "HTTP monitoring port"),
    F(("user",), "user", "str", "NATS user"),
    F(("pass",), "pass", "str", "NATS password"),
    F(("auth",), "auth", "str", "NATS authorization token"),
    F(("SD", "stan_debug"), "stan_debug", "bool", "Streaming debug logs"),
    F(("SV", "stan_trace"), "stan_trace", "bool", "Streaming protocol trace"),
    F(("SDV",), "stan_debug_trace", "bool", "Both -SD and -SV"),
    F(("D", "debug"), "debug", "bool", "NATS debug logs"),
    F(("V", "trace"), "trace", "bool", "NATS trace logs"),
    F(("DV",), "debug_trace", "bool", "Both -D and -V"),
    F(("T", "logtime"), "logtime", "bool", "Time stamps in logs (default true)"),
    F(("l", "log"), "log_file", "str", "Log file"),
    F(("h", "help"), "help", "bool", "Show this help"),
    F(("v", "version"), "version", "bool", "Show the version"),
]


def build_config(values: dict[str, Any]) -> tuple[ServerConfig, dict[str, Any]]:
    """A ServerConfig from parsed flag values (reference defaults for the rest)."""
    cfg = ServerConfig()
    if "cluster_id" in values:
        cfg.cluster_id = values["cluster_id"]
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
    for key, attr in (
        ("max_channels", "max_channels"),
        ("max_subs", "max_subs"),
        ("max_msgs", "max_msgs"),
        ("max_bytes", "max_bytes"),
        ("max_age", "max_age"),
        ("max_inactivity", "max_inactivity"),
    ):
        if key in values:
            setattr(lim, attr, values[key])
    lim.validate()
    if "nats_server" in values:
        cfg.nats_urls = [u.strip() for u in values["nats_server"].split(",") if u.strip()]
    for key in ("hb_interval", "hb_timeout", "hb_fail_count", "replace_durable", "io_batch_size"):
        if key in values:
            setattr(cfg, key, values[key])
    if "file_sync" in values:
        cfg.store_sync = values["file_sync"]
    cfg.nats_user = values.get("user", "")
    cfg.nats_pass = values.get("pass", "")
    cfg.nats_token = values.get("auth", "")
    cfg.http_port = values.get("http_port", 0)
    cl = ClusterConfig(enabled=values.get("clustered", False))
    cl.node_id = values.get("cluster_node_id", "")
    cl.log_path = values.get("cluster_log_path", "")
    cl.sync = values.get("cluster_sync", False)
    cl.raft_logging = values.get("cluster_raft_logging", False)
    cl.secret = values.get("cluster_secret") or os.environ.get("STANCHION_CLUSTER_SECRET")
    if "cluster_peers" in values:
        cl.peers = parse_peers(values["cluster_peers"])
    if cl.enabled:
        if cfg.store == "MEMORY":
            raise f.FlagError(errors.CLUSTERING_MEMORY_STORE)
        if not cl.node_id or cl.node_id not in cl.peers:
            raise f.FlagError(
                "clustered mode needs --cluster_node_id and --cluster_peers with "
                "id=host:port for every member, this node included"
            )
    cfg.cluster = cl
    extra = {
        "addr": values.get("addr", "0.0.0.0"),
        "port": values.get("port", 4222),
    }
    return cfg, extra


def parse_peers(text: str) -> dict[str, str]:
    """``a=127.0.0.1:7001,b=127.0.0.1:7002`` -> {node id: address}."""
    peers: dict[str, str] = {}
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        node, eq, addr = item.partition("=")
        if not eq or ":" not in addr:
            raise f.FlagError(f'invalid cluster peer "{item}": expected id=host:port')
        peers[node.strip()] = addr.strip()
    return peers


async def run(cfg: ServerConfig, extra: dict[str, Any]) -> int:
    from cluster.monitor import Monitor
    from cluster.natsproc import EmbeddedNats
    from cluster.server import Server

    embedded = None
    if not cfg.nats_urls:
        embedded = EmbeddedNats(extra["addr"], extra["port"])
        await embedded.start()
        cfg.nats_urls = [embedded.url]
    server = Server(cfg)
    monitor = None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    exit_code = 0

    def on_signal(sig: int) -> None:
        nonlocal exit_code
        exit_code = 0 if sig == signal.SIGINT else 143
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        await server.start()
        if cfg.http_port:
            monitor = Monitor(server, cfg.http_host, cfg.http_port)
            await monitor.start()
        await stop.wait()
    finally:
        if monitor is not None:
            await monitor.stop()
        with contextlib.suppress(Exception):
            await server.stop()
        if embedded is not None:
            embedded.stop()
    return exit_code


#: Subcommands: ``stanchion <name> ...`` runs ``module.main(argv)``.
SUBCOMMANDS = {
    "bench": "cluster.bench",
    "import-filestore": "cluster.importer",
}


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] in SUBCOMMANDS:
        import importlib

        module = importlib.import_module(SUBCOMMANDS[args[0]])
        sys.exit(module.main(args[1:]))
    try:
        values, rest = f.parse(args, FLAGS)
        if values.get("help"):
            print("Usage: stanchion [options]\n\nOptions:\n" + f.usage(FLAGS))
            return
        if values.get("version"):
            from cluster.server import VERSION

            print(f"stanchion version {VERSION}")
            return
        if rest:
            raise f.FlagError(f"unexpected argument: {rest[0]}")
        cfg, extra = build_config(values)
    except (f.FlagError, ValueError) as exc:
        print(f"stanchion: {exc}", file=sys.stderr)
        sys.exit(1)
    both = values.get("stan_debug_trace", False)
    logs.setup(
        debug=values.get("stan_debug", both),
        trace=values.get("stan_trace", both),
        timestamps=values.get("logtime", True),
        log_file=values.get("log_file", ""),
    )
    try:
        import uvloop

        code = uvloop.run(run(cfg, extra))
    except Exception as exc:  # noqa: BLE001 - startup failure: report and exit 1
        logging.getLogger("stanchion").critical("Failed to start: %s", exc, exc_info=True)
        sys.exit(1)
    sys.exit(code)


if __name__ == "__main__":
    main()
