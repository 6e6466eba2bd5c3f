"""The flag table: every command-line option of the reference server.

Each ``Flag`` names the reference's spellings, the ``dest`` key shared with
configuration files, its type, help text and help group, and what stanchion
does with it (used, refused with a reason, or accepted with a notice).
``cluster.options`` turns parsed values into the node's configuration.
"""

from __future__ import annotations

from cluster import flags as f

#: Nanoseconds in a second (durations in the reference's units).
SECOND = 1_000_000_000

# -- the flag table ------------------------------------------------------------------------

_STAN = "Streaming Server Options"
_CLUSTER = "Streaming Server Clustering Options"
_FILE = "Streaming Server File Store Options (LMDB)"
_SQL = "Streaming Server SQL Store Options"
_TLS = "Streaming Server TLS Options (connections to NATS)"
_LOG = "Streaming Server Logging Options"
_NATS = "NATS Server Options (embedded nats-server; monitoring)"
_NLOG = "Logging Options"
_AUTH = "Authorization Options"
_NTLS = "TLS Options (embedded nats-server; https monitoring)"
_ROUTES = "NATS Clustering Options (embedded nats-server)"
_COMMON = "Common Options"

_NO_FILESTORE = "LMDB has no counterpart"
_NO_SQL = "only used by -st SQL, which stanchion does not support"

F = f.Flag
FLAGS: list[f.Flag] = [
    # Streaming server.
    F(
        ("cid", "cluster_id"),
        "cluster_id",
        "str",
        "Cluster ID (default: test-cluster)",
        group=_STAN,
    ),
    F(
        ("st", "store"),
        "store",
        "str",
        "Store type: FILE or LMDB (persistent, default), MEMORY",
        group=_STAN,
    ),
    F(("dir",), "dir", "str", "Data directory (default: ./stanchion-data)", group=_STAN),
    F(("mc", "max_channels"), "max_channels", "int", "Max channels (0 = unlimited)", group=_STAN),
    F(("msu", "max_subs"), "max_subs", "int", "Max subscriptions per channel", group=_STAN),
    F(("mm", "max_msgs"), "max_msgs", "int", "Max messages per channel", group=_STAN),
    F(("mb", "max_bytes"), "max_bytes", "size", "Max bytes per channel", group=_STAN),
    F(("ma", "max_age"), "max_age", "duration", "Max age of messages (0 = unlimited)", group=_STAN),
    F(
        ("mi", "max_inactivity"),
        "max_inactivity",
        "duration",
        "Delete channels without activity for this long",
        group=_STAN,
    ),
    F(
        ("ns", "nats_server"),
        "nats_server",
        "str",
        "External NATS URL(s), comma separated (else an embedded nats-server)",
        group=_STAN,
    ),
    F(("sc", "stan_config"), "stan_config", "str", "Streaming configuration file", group=_STAN),
    F(("hbi", "hb_interval"), "hb_interval", "duration", "Heartbeat interval", group=_STAN),
    F(("hbt", "hb_timeout"), "hb_timeout", "duration", "Heartbeat reply timeout", group=_STAN),
    F(("hbf", "hb_fail_count"), "hb_fail_count", "int", "Failed heartbeats allowed", group=_STAN),
    F(
        ("ft_group",),
        "ft_group",
        "str",
        "FT group name",
        refused="fault tolerance groups are not supported: run a cluster with --clustered",
        group=_STAN,
    ),
    F(
        ("sl", "signal"),
        "signal",
        "str",
        "Send stop, quit, term, reopen or reload to a running server and exit",
        metavar="signal[=<pid|pidfile>]",
        group=_STAN,
    ),
    F(
        ("encrypt",),
        "encrypt",
        "bool",
        "Encrypt messages at rest",
        refused="encryption at rest is not supported: use an encrypted filesystem",
        group=_STAN,
    ),
    F(
        ("encryption_cipher",),
        "encryption_cipher",
        "str",
        "AES or CHACHA",
        ignored="encryption at rest is not supported",
        group=_STAN,
    ),
    F(
        ("encryption_key",),
        "encryption_key",
        "str",
        "Encryption key",
        refused="encryption at rest is not supported: use an encrypted filesystem",
        group=_STAN,
    ),
    F(
        ("replace_durable",),
        "replace_durable",
        "bool",
        "Replace an active durable on resubscribe",
        group=_STAN,
    ),
    F(
        ("io_batch_size",),
        "io_batch_size",
        "int",
        "Max messages per replicated publish entry (default 1024)",
        group=_STAN,
    ),
    F(
        ("io_sleep_time",),
        "io_sleep_time",
        "int",
        "Microseconds to wait to fill a batch",
        ignored="publishes arriving during a commit are batched without waiting",
        group=_STAN,
    ),
    # Logging.
    F(("SD", "stan_debug"), "stan_debug", "bool", "Streaming debug logs", group=_LOG),
    F(("SV", "stan_trace"), "stan_trace", "bool", "Streaming protocol trace", group=_LOG),
    F(("SDV",), "stan_debug_trace", "bool", "Both -SD and -SV", group=_LOG),
    F(("syslog_name",), "syslog_name", "str", "Syslog identifier (default stanchion)", group=_LOG),
    # Clustering.
    F(("clustered",), "clustered", "bool", "Run as a member of a Raft cluster", group=_CLUSTER),
    F(("cluster_node_id",), "cluster_node_id", "str", "This node's ID", group=_CLUSTER),
    F(
        ("cluster_bootstrap",),
        "cluster_bootstrap",
        "bool",
        "Bootstrap the cluster",
        ignored="membership is the static --cluster_peers list, no bootstrap is needed",
        group=_CLUSTER,
    ),
    F(
        ("cluster_peers",),
        "cluster_peers",
        "str",
        "Every member as id=host:port (Raft TCP address), this node included",
        group=_CLUSTER,
    ),
    F(
        ("cluster_log_path",),
        "cluster_log_path",
        "str",
        "Raft journal directory (default <dir>/raft)",
        group=_CLUSTER,
    ),
    F(
        ("cluster_log_cache_size",),
        "cluster_log_cache_size",
        "int",
        "Raft entries cached",
        ignored="the Raft journal is memory-mapped",
        group=_CLUSTER,
    ),
    F(
        ("cluster_log_snapshots",),
        "cluster_log_snapshots",
        "int",
        "Raft snapshots kept",
        ignored="one snapshot is kept",
        group=_CLUSTER,
    ),
    F(
        ("cluster_trailing_logs",),
        "cluster_trailing_logs",
        "int",
        "Raft entries kept after a snapshot",
        ignored="the journal is compacted by size and age",
        group=_CLUSTER,
    ),
    F(
        ("cluster_sync",),
        "cluster_sync",
        "bool",
        "Flush the Raft journal on every write",
        group=_CLUSTER,
    ),
    F(
        ("cluster_compact_size",),
        "cluster_compact_size",
        "size",
        "Snapshot the store and trim the Raft journal after this much log (default 64MB)",
        group=_CLUSTER,
    ),
    F(
        ("cluster_raft_logging",),
        "cluster_raft_logging",
        "bool",
        "Raft library logs",
        group=_CLUSTER,
    ),
    F(
        ("cluster_proceed_on_restore_failure",),
        "cluster_proceed_on_restore_failure",
        "bool",
        "Start even if a snapshot restore fails",
        ignored="snapshots carry the whole store, there is nothing to fetch afterwards",
        group=_CLUSTER,
    ),
    F(
        ("cluster_allow_add_remove_node",),
        "cluster_allow_add_remove_node",
        "bool",
        "Serve node add/remove requests",
        refused="membership is static: change --cluster_peers on every node and restart them",
        group=_CLUSTER,
    ),
    F(
        ("cluster_secret",),
        "cluster_secret",
        "str",
        "Shared secret of the Raft transport (or STANCHION_CLUSTER_SECRET)",
        group=_CLUSTER,
    ),
    # File store.
    F(
        ("file_compact_enabled",),
        "file_compact_enabled",
        "bool",
        "Compaction",
        ignored="LMDB reuses freed pages itself",
        group=_FILE,
    ),
    F(
        ("file_compact_frag",),
        "file_compact_frag",
        "int",
        "Compaction fragmentation %",
        ignored=_NO_FILESTORE,
        group=_FILE,
    ),
    F(
        ("file_compact_interval",),
        "file_compact_interval",
        "int",
        "Compaction interval (s)",
        ignored=_NO_FILESTORE,
        group=_FILE,
    ),
    F(
        ("file_compact_min_size",),
        "file_compact_min_size",
        "size",
        "Compaction minimum size",
        ignored=_NO_FILESTORE,
        group=_FILE,
    ),
    F(
        ("file_buffer_size",),
        "file_buffer_size",
        "size",
        "Write buffer size",
        ignored=_NO_FILESTORE,
        group=_FILE,
    ),
    F(
        ("file_read_buffer_size",),
        "file_read_buffer_size",
        "size",
        "Read buffer size",
        ignored="reads are memory-mapped",
        group=_FILE,
    ),
    F(("file_crc",), "file_crc", "bool", "CRC of records", ignored=_NO_FILESTORE, group=_FILE),
    F(
        ("file_crc_poly",),
        "file_crc_poly",
        "int",
        "CRC polynomial",
        ignored=_NO_FILESTORE,
        group=_FILE,
    ),
    F(("file_sync",), "file_sync", "bool", "fsync every store commit (default true)", group=_FILE),
    F(
        ("file_slice_max_msgs",),
        "file_slice_max_msgs",
        "int",
        "Messages per slice",
        ignored="LMDB has no slices",
        group=_FILE,
    ),
    F(
        ("file_slice_max_bytes",),
        "file_slice_max_bytes",
        "size",
        "Bytes per slice",
        ignored="LMDB has no slices",
        group=_FILE,
    ),
    F(
        ("file_slice_max_age",),
        "file_slice_max_age",
        "duration",
        "Age of a slice",
        ignored="LMDB has no slices",
        group=_FILE,
    ),
    F(
        ("file_slice_archive_script",),
        "file_slice_archive_script",
        "str",
        "Script run on removed slices",
        ignored="LMDB has no slices, so the script is never run",
        group=_FILE,
    ),
    F(
        ("file_fds_limit",),
        "file_fds_limit",
        "int",
        "File descriptors limit",
        ignored="LMDB uses one file",
        group=_FILE,
    ),
    F(
        ("file_parallel_recovery",),
        "file_parallel_recovery",
        "int",
        "Channels recovered in parallel",
        ignored="LMDB needs no recovery pass",
        group=_FILE,
    ),
    F(
        ("file_truncate_bad_eof",),
        "file_truncate_bad_eof",
        "bool",
        "Truncate files with a bad end",
        ignored="LMDB commits are atomic",
        group=_FILE,
    ),
    F(
        ("file_auto_sync",),
        "file_auto_sync",
        "duration",
        "Periodic fsync interval",
        ignored="use --file_sync",
        group=_FILE,
    ),
    # SQL store.
    F(("sql_driver",), "sql_driver", "str", "SQL driver", ignored=_NO_SQL, group=_SQL),
    F(("sql_source",), "sql_source", "str", "SQL data source", ignored=_NO_SQL, group=_SQL),
    F(("sql_no_caching",), "sql_no_caching", "bool", "SQL no caching", ignored=_NO_SQL, group=_SQL),
    F(
        ("sql_max_open_conns",),
        "sql_max_open_conns",
        "int",
        "SQL connections",
        ignored=_NO_SQL,
        group=_SQL,
    ),
    F(
        ("sql_bulk_insert_limit",),
        "sql_bulk_insert_limit",
        "int",
        "SQL bulk insert",
        ignored=_NO_SQL,
        group=_SQL,
    ),
    # TLS towards NATS.
    F(("secure",), "secure", "bool", "TLS to NATS without verifying the server", group=_TLS),
    F(("tls_client_cert",), "tls_client_cert", "str", "Client certificate", group=_TLS),
    F(("tls_client_key",), "tls_client_key", "str", "Client private key", group=_TLS),
    F(
        ("tls_client_cacert",),
        "tls_client_cacert",
        "str",
        "CA certificate of the NATS server",
        group=_TLS,
    ),
    # NATS server (embedded child) and monitoring.
    F(
        ("a", "addr", "net"),
        "addr",
        "str",
        "Client listen host (default 0.0.0.0); also the monitoring host",
        group=_NATS,
    ),
    F(("p", "port"), "port", "int", "Client port (default 4222)", group=_NATS),
    F(("n", "name", "server_name"), "server_name", "str", "nats-server name", group=_NATS),
    F(("client_advertise",), "client_advertise", "str", "Client URL to advertise", group=_NATS),
    F(("P", "pid"), "pid_file", "str", "File to write this process's PID to", group=_NATS),
    F(
        ("m", "http_port"),
        "http_port",
        "int",
        "HTTP monitoring port (/streaming/..., /metrics)",
        group=_NATS,
    ),
    F(
        ("ms", "https_port"),
        "https_port",
        "int",
        "HTTPS monitoring port (uses --tlscert/--tlskey)",
        group=_NATS,
    ),
    F(
        ("c", "config"),
        "nats_config",
        "str",
        "NATS configuration file (also streaming if -sc is absent)",
        group=_NATS,
    ),
    F(
        ("ports_file_dir",),
        "ports_file_dir",
        "str",
        "nats-server ports file directory",
        group=_NATS,
    ),
    # Logging.
    F(("l", "log", "log_file"), "log_file", "str", "Log file (reopened on SIGUSR1)", group=_NLOG),
    F(("T", "logtime"), "logtime", "bool", "Time stamps in logs (default true)", group=_NLOG),
    F(("s", "syslog"), "syslog", "bool", "Log to syslog (/dev/log)", group=_NLOG),
    F(
        ("r", "remote_syslog"),
        "remote_syslog",
        "str",
        "Remote syslog, e.g. udp://127.0.0.1:514",
        group=_NLOG,
    ),
    F(("D", "debug"), "debug", "bool", "NATS debug logs", group=_NLOG),
    F(("V", "trace"), "trace", "bool", "NATS protocol trace", group=_NLOG),
    F(("DV",), "debug_trace", "bool", "Both -D and -V", group=_NLOG),
    # Authorization.
    F(("user",), "user", "str", "User required from clients; also ours", group=_AUTH),
    F(("pass",), "pass", "str", "Password required from clients; also ours", group=_AUTH),
    F(("auth",), "auth", "str", "Token required from clients; also ours", group=_AUTH),
    # TLS of the NATS server.
    F(("tls",), "tls", "bool", "Enable TLS on the embedded nats-server", group=_NTLS),
    F(("tlscert",), "tlscert", "str", "Server certificate", group=_NTLS),
    F(("tlskey",), "tlskey", "str", "Server private key", group=_NTLS),
    F(("tlsverify",), "tlsverify", "bool", "Require and verify client certificates", group=_NTLS),
    F(("tlscacert",), "tlscacert", "str", "Client CA certificate", group=_NTLS),
    # NATS routes.
    F(("routes",), "routes", "str", "Routes to solicit", group=_ROUTES),
    F(
        ("cluster",),
        "nats_cluster",
        "str",
        "Route listen URL, e.g. nats://0.0.0.0:6222",
        group=_ROUTES,
    ),
    F(("cluster_name",), "nats_cluster_name", "str", "NATS cluster name", group=_ROUTES),
    F(("cluster_advertise",), "cluster_advertise", "str", "Route URL to advertise", group=_ROUTES),
    F(
        ("no_advertise",),
        "no_advertise",
        "bool",
        "Do not advertise known cluster URLs",
        group=_ROUTES,
    ),
    F(("connect_retries",), "connect_retries", "int", "Route connect retries", group=_ROUTES),
    # Common.
    F(("h", "help"), "help", "bool", "Show this help", group=_COMMON),
    F(("help_tls",), "help_tls", "bool", "TLS help", group=_COMMON),
    F(("v", "version"), "version", "bool", "Show the version", group=_COMMON),
]

BY_DEST = {flag.dest: flag for flag in FLAGS}

#: Embedded nats-server options passed to the child as ``(dest, its flag)``.
CHILD_FLAGS: list[tuple[str, str]] = [
    ("server_name", "--name"),
    ("client_advertise", "--client_advertise"),
    ("ports_file_dir", "--ports_file_dir"),
    ("debug", "-D"),
    ("trace", "-V"),
    ("user", "--user"),
    ("pass", "--pass"),
    ("auth", "--auth"),
    ("tls", "--tls"),
    ("tlscert", "--tlscert"),
    ("tlskey", "--tlskey"),
    ("tlsverify", "--tlsverify"),
    ("tlscacert", "--tlscacert"),
    ("routes", "--routes"),
    ("nats_cluster", "--cluster"),
    ("nats_cluster_name", "--cluster_name"),
    ("cluster_advertise", "--cluster_advertise"),
    ("no_advertise", "--no_advertise"),
    ("connect_retries", "--connect_retries"),
]
#: Options that only configure the embedded nats-server (meaningless with -ns).
CHILD_ONLY = {dest for dest, _ in CHILD_FLAGS if dest not in ("user", "pass", "auth")} | {"port"}
