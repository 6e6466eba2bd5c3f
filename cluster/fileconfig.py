"""Configuration files: the reference's keys, read into flag ``dest`` names.

``streaming_values`` reads the streaming server's keys (OPERATIONS §3: top
level or a ``streaming { }`` map, every alias, case-insensitive, the
reference's type-mismatch texts); ``nats_values`` reads the NATS keys this
process uses itself (ports, logging, PID file, credentials) and returns the
rest for the embedded nats-server. ``load_files`` applies the reference's rule
for ``-sc`` and ``-c``: each file configures its own component, or one file
configures both.
"""

from __future__ import annotations

from typing import Any

from cluster import flags as f
from cluster import natsconf
from store.limits import PerChannelLimits


class ConfigFileError(ValueError):
    """A configuration file whose content the reference would refuse too."""


def _check(key: str, kind: str, value: Any) -> None:
    actual = natsconf.kind_name(value)
    if actual != kind:
        raise ConfigFileError(f'parameter "{key}" value is expected to be {kind}, got {actual}')


def _convert(key: str, kind: str, value: Any) -> Any:
    """``kind``: string, bool, int64, duration (a quoted Go duration -> ns)."""
    if kind == "duration":
        _check(key, "string", value)
        try:
            return f.parse_duration(value)
        except f.FlagError as exc:
            raise ConfigFileError(str(exc)) from None
    _check(key, kind, value)
    return value


def _table(*rows: tuple[tuple[str, ...], str, str]) -> dict[str, tuple[str, str]]:
    return {alias: (dest, kind) for aliases, dest, kind in rows for alias in aliases}


_TOP = _table(
    (("id", "cid", "cluster_id"), "cluster_id", "string"),
    (("discover_prefix",), "discover_prefix", "string"),
    (("st", "store_type", "store", "storetype"), "store", "string"),
    (("dir", "datastore"), "dir", "string"),
    (("sd", "stan_debug"), "stan_debug", "bool"),
    (("sv", "stan_trace"), "stan_trace", "bool"),
    (("ns", "nats_server", "nats_server_url"), "nats_server", "string"),
    (("credentials",), "credentials", "string"),
    (("username", "user"), "conn_user", "string"),
    (("password", "pass"), "conn_pass", "string"),
    (("token",), "conn_token", "string"),
    (("nkey_seed_file",), "nkey_seed_file", "string"),
    (("secure",), "secure", "bool"),
    (("hbi", "hb_interval", "server_to_client_hb_interval"), "hb_interval", "duration"),
    (("hbt", "hb_timeout", "server_to_client_hb_timeout"), "hb_timeout", "duration"),
    (("hbf", "hb_fail_count", "server_to_client_hb_fail_count"), "hb_fail_count", "int64"),
    (("ft_group", "ft_group_name"), "ft_group", "string"),
    (("partitioning",), "partitioning", "bool"),
    (("syslog_name",), "syslog_name", "string"),
    (("encrypt",), "encrypt", "bool"),
    (("encryption_cipher",), "encryption_cipher", "string"),
    (("encryption_key",), "encryption_key", "string"),
    (
        (
            "replace_durable",
            "replace_durables",
            "replace_duplicate_durable",
            "replace_duplicate_durables",
        ),
        "replace_durable",
        "bool",
    ),
)
_TOP_MAPS = {
    "tls": "tls",
    "limits": "limits",
    "store_limits": "limits",
    "storelimits": "limits",
    "file": "file",
    "file_options": "file",
    "sql": "sql",
    "sql_options": "sql",
    "cluster": "cluster",
}
_TLS_KEYS = _table(
    (("client_cert",), "tls_client_cert", "string"),
    (("client_key",), "tls_client_key", "string"),
    (("client_ca", "client_cacert"), "tls_client_cacert", "string"),
    (("server_name", "server_hostname"), "tls_server_name", "string"),
    (("skip_verify", "insecure"), "tls_skip_verify", "bool"),
)
_CHANNEL_LIMITS = _table(
    (("msu", "max_subs", "max_subscriptions", "maxsubscriptions"), "max_subs", "int64"),
    (("mm", "max_msgs", "maxmsgs", "max_count", "maxcount"), "max_msgs", "int64"),
    (("mb", "max_bytes", "maxbytes"), "max_bytes", "int64"),
    (("ma", "max_age", "maxage"), "max_age", "duration"),
    (("mi", "max_inactivity", "maxinactivity"), "max_inactivity", "duration"),
)
_LIMITS = {
    **_CHANNEL_LIMITS,
    **_table((("mc", "max_channels", "maxchannels"), "max_channels", "int64")),
}
_PER_CHANNEL = {
    "channels",
    "channels_limits",
    "channelslimits",
    "per_channel",
    "per_channel_limits",
}
_FILE_OPTIONS = _table(
    (("compact", "compact_enabled"), "file_compact_enabled", "bool"),
    (("compact_frag", "compact_fragmentation"), "file_compact_frag", "int64"),
    (("compact_interval",), "file_compact_interval", "int64"),
    (("compact_min_size",), "file_compact_min_size", "int64"),
    (("buffer_size",), "file_buffer_size", "int64"),
    (("crc", "do_crc"), "file_crc", "bool"),
    (("crc_poly",), "file_crc_poly", "int64"),
    (("sync", "do_sync", "sync_on_flush"), "file_sync", "bool"),
    (
        ("slice_max_msgs", "slice_max_count", "slice_msgs", "slice_count"),
        "file_slice_max_msgs",
        "int64",
    ),
    (
        ("slice_max_bytes", "slice_max_size", "slice_bytes", "slice_size"),
        "file_slice_max_bytes",
        "int64",
    ),
    (
        ("slice_max_age", "slice_age", "slice_max_time", "slice_time_limit"),
        "file_slice_max_age",
        "duration",
    ),
    (
        ("slice_archive_script", "slice_archive", "slice_script"),
        "file_slice_archive_script",
        "string",
    ),
    (("file_descriptors_limit", "fds_limit"), "file_fds_limit", "int64"),
    (("parallel_recovery",), "file_parallel_recovery", "int64"),
    (("file_read_buffer_size", "read_buffer_size"), "file_read_buffer_size", "int64"),
    (("file_auto_sync", "auto_sync"), "file_auto_sync", "duration"),
)
_SQL_OPTIONS = _table(
    (("driver",), "sql_driver", "string"),
    (("source",), "sql_source", "string"),
    (("no_caching",), "sql_no_caching", "bool"),
    (("max_open_conns", "max_conns"), "sql_max_open_conns", "int64"),
    (("bulk_insert_limit",), "sql_bulk_insert_limit", "int64"),
)
_CLUSTER_OPTIONS = _table(
    (("node_id",), "cluster_node_id", "string"),
    (("bootstrap",), "cluster_bootstrap", "bool"),
    (("peers",), "cluster_peers", "slice"),
    (("log_path",), "cluster_log_path", "string"),
    (("log_cache_size",), "cluster_log_cache_size", "int64"),
    (("log_snapshots",), "cluster_log_snapshots", "int64"),
    (("trailing_logs",), "cluster_trailing_logs", "int64"),
    (("sync",), "cluster_sync", "bool"),
    (("proceed_on_restore_failure",), "cluster_proceed_on_restore_failure", "bool"),
    (("allow_add_remove_node",), "cluster_allow_add_remove_node", "bool"),
    (("raft_logging",), "cluster_raft_logging", "bool"),
    (("raft_heartbeat_timeout",), "raft_heartbeat_timeout", "duration"),
    (("raft_election_timeout",), "raft_election_timeout", "duration"),
    (("raft_lease_timeout",), "raft_lease_timeout", "duration"),
    (("raft_commit_timeout",), "raft_commit_timeout", "duration"),
    (("bolt_free_list_sync",), "bolt_free_list_sync", "bool"),
    (("bolt_free_list_map",), "bolt_free_list_map", "bool"),
    (("nodes_connections",), "nodes_connections", "bool"),
    (("secret",), "cluster_secret", "string"),
)
#: Keys the ``cluster {}`` map of the streaming server has and NATS routes do not.
_STREAMING_CLUSTER_KEYS = set(_CLUSTER_OPTIONS) - {"secret"}
#: File-only options without effect here: why.
FILE_ONLY_IGNORED = {
    "raft_election_timeout": "elections start after raft_heartbeat_timeout",
    "raft_commit_timeout": "entries are sent as soon as they are proposed",
    "bolt_free_list_sync": "the Raft journal is not a bolt database",
    "bolt_free_list_map": "the Raft journal is not a bolt database",
    "nodes_connections": "Raft uses its own TCP connections, not NATS",
}


def _map(key: str, value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigFileError(f"expected {what} to be a map/struct, got {value}")
    return value


def _fill(out: dict[str, Any], table: dict[str, tuple[str, str]], m: dict[str, Any]) -> None:
    for key, value in m.items():
        entry = table.get(key.lower())
        if entry is not None:
            out[entry[0]] = _convert(key, entry[1], value)


def streaming_values(mapping: dict[str, Any]) -> dict[str, Any]:
    """The streaming options of a parsed configuration file, keyed by flag ``dest``.

    A ``streaming { }`` map, if present, is the only part read; otherwise the
    top level. Unknown keys are skipped, as the reference does.
    """
    for key, value in mapping.items():
        if key.lower() == "streaming":
            mapping = _map(key, value, "streaming section")
    out: dict[str, Any] = {}
    for key, value in mapping.items():
        name = key.lower()
        if name in _TOP:
            dest, kind = _TOP[name]
            out[dest] = _convert(key, kind, value)
            if dest == "store":
                kind_ = value.upper()
                if kind_ not in ("FILE", "MEMORY", "SQL", "LMDB"):
                    raise ConfigFileError(f"unknown store type: {value}")
            continue
        section = _TOP_MAPS.get(name)
        if section == "tls":
            _fill(out, _TLS_KEYS, _map(key, value, "TLS"))
        elif section == "limits":
            _store_limits(out, _map(key, value, "store limits"))
        elif section == "file":
            _fill(out, _FILE_OPTIONS, _map(key, value, "file options"))
        elif section == "sql":
            _fill(out, _SQL_OPTIONS, _map(key, value, "SQL options"))
        elif section == "cluster":
            m = _map(key, value, "cluster")
            out["clustered"] = True
            _fill(out, _CLUSTER_OPTIONS, m)
            if "cluster_peers" in out:
                peers = out["cluster_peers"]
                for p in peers:
                    _check("peers", "string", p)
    return out


def _store_limits(out: dict[str, Any], m: dict[str, Any]) -> None:
    for key, value in m.items():
        name = key.lower()
        if name in _PER_CHANNEL:
            channels = out.setdefault("channels", {})
            for channel, limits in _map(key, value, "per channel limits").items():
                if not isinstance(limits, dict):
                    raise ConfigFileError(
                        f"expected channel limits to be a map/struct, got {limits}"
                    )
                per: dict[str, Any] = {}
                _fill(per, _CHANNEL_LIMITS, limits)
                # In a per-channel entry, 0 means unlimited (-1); omitted means inherited.
                channels[channel] = PerChannelLimits(**{k: (v or -1) for k, v in per.items()})
        elif name in _LIMITS:
            dest, kind = _LIMITS[name]
            out[dest] = _convert(key, kind, value)


#: NATS configuration keys whose values this process uses itself.
_NATS_KEYS = _table(
    (("port",), "port", "int64"),
    (("host", "net"), "addr", "string"),
    (("logtime",), "logtime", "bool"),
    (("debug",), "debug", "bool"),
    (("trace",), "trace", "bool"),
    (("log_file",), "log_file", "string"),
    (("syslog",), "syslog", "bool"),
    (("remote_syslog",), "remote_syslog", "string"),
    (("pid_file",), "pid_file", "string"),
)
#: NATS keys that stay with us, never passed to the child.
_OURS_ONLY = {"http", "http_port", "monitor_port", "https", "https_port", "pid_file"}


def nats_values(mapping: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """From a parsed NATS configuration: (our values by flag ``dest``, the child's part).

    The child's part is the file without the streaming keys and without the
    monitoring ports and PID file, which belong to this process.
    """
    out: dict[str, Any] = {}
    for key, value in mapping.items():
        name = key.lower()
        if name in _NATS_KEYS:
            dest, kind = _NATS_KEYS[name]
            out[dest] = _convert(key, kind, value)
        elif name == "listen":
            host, port = _host_port(key, value)
            if host:
                out["addr"] = host
            out["port"] = port
        elif name in ("http", "http_port", "monitor_port"):
            host, port = _host_port(key, value)
            if host:
                out["http_host"] = host
            out["http_port"] = port
        elif name in ("https", "https_port"):
            host, port = _host_port(key, value)
            if host:
                out["http_host"] = host
            out["https_port"] = port
        elif name == "authorization" and isinstance(value, dict):
            auth = {k.lower(): v for k, v in value.items()}
            for src, dest in (("user", "user"), ("password", "pass"), ("token", "auth")):
                if src in auth:
                    out[dest] = _convert(src, "string", auth[src])
        elif name == "tls" and isinstance(value, dict):
            tls = {k.lower(): v for k, v in value.items()}
            for src, dest in (("cert_file", "tlscert"), ("key_file", "tlskey")):
                if src in tls:
                    out[dest] = _convert(src, "string", tls[src])
    return out, _child_part(mapping)


def _host_port(key: str, value: Any) -> tuple[str, int]:
    if isinstance(value, int) and not isinstance(value, bool):
        return "", value
    if isinstance(value, str):
        host, _, port = value.rpartition(":")
        if port.isdigit():
            return host, int(port)
    raise ConfigFileError(f'parameter "{key}" value is expected to be host:port or a port')


def _child_part(mapping: dict[str, Any]) -> dict[str, Any]:
    has_streaming = any(k.lower() == "streaming" for k in mapping)
    child: dict[str, Any] = {}
    for key, value in mapping.items():
        name = key.lower()
        if name == "streaming" or name in _OURS_ONLY:
            continue
        if not has_streaming:
            if name in _TOP or name in ("limits", "store_limits", "storelimits", "file"):
                continue
            if name in ("file_options", "sql", "sql_options"):
                continue
            if name == "cluster" and isinstance(value, dict):
                if any(k.lower() in _STREAMING_CLUSTER_KEYS for k in value):
                    continue
            if name == "tls" and isinstance(value, dict):
                value = {k: v for k, v in value.items() if k.lower() not in _TLS_KEYS}
                if not value:
                    continue
        child[key] = value
    return child


def load_files(flag_values: dict[str, Any]) -> dict[str, Any]:
    """Values from ``-sc``/``-c``: each file its component, or one file for both."""
    stan_file = flag_values.get("stan_config", "")
    nats_file = flag_values.get("nats_config", "")
    out: dict[str, Any] = {}
    if not stan_file and not nats_file:
        return out
    parsed: dict[str, dict[str, Any]] = {}

    def load(path: str) -> dict[str, Any]:
        if path not in parsed:
            parsed[path] = natsconf.parse_file(path)
        return parsed[path]

    nats_part, child = nats_values(load(nats_file or stan_file))
    out.update(nats_part)
    out["nats_config_child"] = child
    out.update(streaming_values(load(stan_file or nats_file)))
    return out
