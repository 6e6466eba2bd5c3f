"""``stanchion``: run one node, with the reference server's flags.

Process control, as the reference does it: SIGINT stops gracefully and exits
0, SIGTERM stops gracefully and exits 143, SIGUSR1 reopens the log file,
SIGHUP reloads the embedded nats-server's configuration (streaming options
are not reloaded). A startup failure logs ``Failed to start: <err>`` and
exits 1 (a NATS server that cannot be reached, or refuses our credentials,
is one: see ``Server._connect_nats``). ``-sl <signal>[=<pid|pidfile>]``
signals a running node. Files and directories the node creates are
owner-only (``restrict_umask``).

Under systemd (``NOTIFY_SOCKET`` set) the node sends ``READY=1`` once it
serves: a standalone node when it is ready for clients, a cluster member as
soon as it has started (store open, Raft and monitoring listening), since a
member alone cannot elect a leader; ``STATUS=`` then follows its Raft role.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any

from cluster import flags as f
from cluster import logs, natsconf
from cluster.config import ServerConfig
from cluster.options import FLAGS, ConfigFileError, RunOptions, build_config, merge, parse_peers

__all__ = ["FLAGS", "build_config", "main", "parse_peers", "run"]

log = logging.getLogger("stanchion.cli")

#: Exit status after SIGTERM (128 + 15), as the reference.
EXIT_SIGTERM = 143
#: ``-sl`` commands: nats-server's names and signals.
SIGNAL_COMMANDS = {
    "stop": signal.SIGKILL,
    "quit": signal.SIGINT,
    "term": signal.SIGTERM,
    "reopen": signal.SIGUSR1,
    "reload": signal.SIGHUP,
}
#: Seconds between checks that the embedded nats-server is still running.
CHILD_CHECK_INTERVAL = 1.0

USAGE = """Usage: stanchion [options]
       stanchion -sl <stop|quit|term|reopen|reload>[=<pid|pidfile>]

Flags are written -name or --name, values as -name value or -name=value;
booleans are set by -name and cleared by -name=false.
"""

TLS_HELP = """TLS options:
  Towards the NATS server (this node is a client):
    -secure                  TLS without verifying the server's certificate
    -tls_client_cert FILE    client certificate (with -tls_client_key)
    -tls_client_key FILE     client private key
    -tls_client_cacert FILE  CA that signed the NATS server's certificate
  Embedded nats-server, and the -ms https monitoring port:
    --tls --tlscert FILE --tlskey FILE [--tlsverify --tlscacert FILE]
"""


# -- systemd readiness -------------------------------------------------------------------------


def sd_notify(state: str) -> bool:
    """Send ``state`` (``READY=1``...) to systemd if it asked (NOTIFY_SOCKET); True if sent."""
    path = os.environ.get("NOTIFY_SOCKET", "")
    if not path:
        return False
    address = "\0" + path[1:] if path.startswith("@") else path
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(address)
            sock.sendall(state.encode())
    except OSError as exc:
        log.warning("systemd notification failed state=%s err=%s", state.split("\n")[0], exc)
        return False
    return True


# -- -sl ----------------------------------------------------------------------------------------


def _running_nodes() -> list[int]:
    """PIDs of other stanchion node processes on this host (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        names = [os.path.basename(a.decode(errors="replace")) for a in argv[:3]]
        if "stanchion" in names or b"cluster.cli" in argv[:3]:
            found.append(int(entry.name))
    return sorted(found)


def send_signal(spec: str, pid_file: str = "") -> None:
    """``-sl stop|quit|term|reopen|reload[=<pid|pidfile>]``: signal a running node."""
    command, _, target = spec.partition("=")
    sig = SIGNAL_COMMANDS.get(command.lower())
    if sig is None:
        if command.lower() == "ldm":
            raise f.FlagError("lame duck mode is not supported by stanchion")
        raise f.FlagError(f'unknown signal "{command}"')
    target = target or pid_file
    if not target:
        pids = _running_nodes()
        if not pids:
            raise f.FlagError("no stanchion processes running")
        if len(pids) > 1:
            listed = "\n".join(str(p) for p in pids)
            raise f.FlagError(f"multiple stanchion processes running:\n{listed}")
        pid = pids[0]
    elif target.isdigit():
        pid = int(target)
    else:
        try:
            pid = int(Path(target).read_text().strip())
        except (OSError, ValueError) as exc:
            raise f.FlagError(f"could not read pid from {target}: {exc}") from None
    try:
        os.kill(pid, sig)
    except OSError as exc:
        raise f.FlagError(f"could not send {command} to pid {pid}: {exc}") from None


# -- running a node -------------------------------------------------------------------------------


def restrict_umask() -> int:
    """Make everything the node creates owner-only; return the new umask.

    The store directory is created 0700 and LMDB files 0600, but pysyncobj
    creates the Raft journal and snapshot files with the process umask (0644
    under the usual 022). Adding 077 to the umask covers them, the log and PID
    files, and whatever a dependency creates, as ``UMask=0077`` does under
    systemd. Bits already set stay set.
    """
    mask = os.umask(0o077) | 0o077
    os.umask(mask)
    return mask


async def run(cfg: ServerConfig, opts: RunOptions | None = None) -> int:
    """Run a node until SIGINT or SIGTERM; return the exit status."""
    from cluster.monitor import Monitor
    from cluster.natsproc import EmbeddedNats
    from cluster.server import Server

    opts = opts or RunOptions()
    restrict_umask()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    exit_code = 1  # unless a signal asked us to stop
    embedded: EmbeddedNats | None = None

    def on_stop(sig: int) -> None:
        nonlocal exit_code
        exit_code = 0 if sig == signal.SIGINT else EXIT_SIGTERM
        stop.set()

    def on_hup() -> None:
        if embedded is None:
            log.warning("Reload supported only for embedded NATS Server's configuration")
            return
        log.info("reloading the embedded NATS server's configuration")
        embedded.reload()

    def on_usr1() -> None:
        logs.reopen()
        log.info("log file reopened")
        if embedded is not None:
            embedded.reopen_log()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_stop, sig)
    loop.add_signal_handler(signal.SIGHUP, on_hup)
    loop.add_signal_handler(signal.SIGUSR1, on_usr1)

    if opts.pid_file:
        Path(opts.pid_file).write_text(str(os.getpid()))
    server: Server | None = None
    monitors: list[Monitor] = []
    tasks: list[asyncio.Task[Any]] = []
    try:
        if not cfg.nats_urls:
            embedded = EmbeddedNats(
                opts.nats_addr, opts.nats_port, opts.nats_args, opts.nats_config
            )
            await embedded.start()
            cfg.nats_urls = [embedded.url]
        server = Server(cfg)
        await server.start()
        cl = cfg.cluster
        logs.log_startup(
            cfg.limits,
            clustered=cl.enabled,
            node_id=cl.node_id,
            log_path=cl.log_path or os.path.join(cfg.dir, "raft"),
            peers=cl.peers,
        )
        if cfg.http_port:
            monitors.append(Monitor(server, cfg.http_host, cfg.http_port))
        if opts.https_port:
            monitors.append(
                Monitor(server, cfg.http_host, opts.https_port, tls=(opts.tls_cert, opts.tls_key))
            )
        for monitor in monitors:
            await monitor.start()
        tasks.append(asyncio.ensure_future(_notify_systemd(server)))
        if embedded is not None:
            tasks.append(asyncio.ensure_future(_watch_child(embedded, stop)))
        await stop.wait()
    finally:
        sd_notify("STOPPING=1")
        for task in tasks:
            task.cancel()
        for monitor in monitors:
            with contextlib.suppress(Exception):
                await monitor.stop()
        if server is not None:
            with contextlib.suppress(Exception):
                await server.stop()
        if embedded is not None:
            embedded.stop()
        if opts.pid_file:
            with contextlib.suppress(OSError):
                os.unlink(opts.pid_file)
    return exit_code


async def _notify_systemd(server: Any) -> None:
    """READY=1 as described in the module docstring, then STATUS= on role changes."""
    if not os.environ.get("NOTIFY_SOCKET"):
        return
    clustered = server.cfg.cluster.enabled
    if not clustered:
        await server.ready.wait()
    sd_notify(f"READY=1\nSTATUS=started\nMAINPID={os.getpid()}")
    last = ""
    while clustered:
        role = server.raft.role()
        if role != last:
            sd_notify(f"STATUS=Raft role {role}")
            last = role
        await asyncio.sleep(1.0)


async def _watch_child(embedded: Any, stop: asyncio.Event) -> None:
    """Stop the node (exit 1) if the embedded nats-server dies."""
    while True:
        await asyncio.sleep(CHILD_CHECK_INTERVAL)
        proc = embedded.proc
        if proc is not None and proc.poll() is not None:
            log.critical("embedded NATS server exited with status %s", proc.returncode)
            stop.set()
            return


#: Subcommands: ``stanchion <name> ...`` runs ``module.main(argv)``.
SUBCOMMANDS = {
    "bench": "cluster.bench",
    "import-filestore": "cluster.import_cli",
}


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] in SUBCOMMANDS:
        import importlib

        module = importlib.import_module(SUBCOMMANDS[args[0]])
        sys.exit(module.main(args[1:]))
    try:
        flag_values, rest = f.parse(args, FLAGS)
        if flag_values.get("help"):
            print(USAGE + "\n" + f.usage(FLAGS))
            return
        if flag_values.get("help_tls"):
            print(TLS_HELP)
            return
        if flag_values.get("version"):
            from cluster.server import REFERENCE_VERSION, VERSION

            print(f"stanchion version {VERSION} (nats-streaming-server {REFERENCE_VERSION})")
            return
        if rest:
            raise f.FlagError(f"unexpected argument: {rest[0]}")
        if "signal" in flag_values:
            send_signal(flag_values["signal"], flag_values.get("pid_file", ""))
            return
        values = merge(flag_values)
        cfg, opts = build_config(values, set(flag_values))
        logs.setup(
            debug=opts.stan_debug,
            trace=opts.stan_trace,
            timestamps=opts.logtime,
            log_file=opts.log_file,
            syslog=opts.syslog,
            remote_syslog=opts.remote_syslog,
            syslog_name=opts.syslog_name,
        )
    except (f.FlagError, ConfigFileError, natsconf.ConfigError, ValueError, OSError) as exc:
        print(f"stanchion: {exc}", file=sys.stderr)
        sys.exit(1)
    for notice in opts.notices:
        log.warning("%s", notice)
    try:
        import uvloop

        code = uvloop.run(run(cfg, opts))
    except Exception as exc:  # noqa: BLE001 - startup failure: report and exit 1
        logging.getLogger("stanchion").critical(
            "Failed to start: %s", exc, exc_info=opts.stan_debug
        )
        sys.exit(1)
    sys.exit(code)


if __name__ == "__main__":
    main()
