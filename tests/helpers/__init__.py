"""Shared test harness: real nats-server and stanchion node processes, waits with deadlines.

Import as ``from tests.helpers import ...`` (tests/conftest.py puts the repo root on
sys.path). Every process is started on 127.0.0.1 and stopped by its PID.
"""

from .nats_server import NatsServer, nats_server_binary
from .net import LOOPBACK, accepts_connections, free_port
from .node_scripts import (
    INTEROP_DIR,
    SCRIPT_TIMEOUT,
    NodeScript,
    NodeScripts,
    ScriptResult,
    node_binary,
    run_node_script,
)
from .procs import REPO_ROOT, ManagedProcess, StartupError
from .stan_node import READY_LINE, READY_TIMEOUT, StanNode, StanNodeFactory, node_args
from .waiting import wait_for, wait_for_sync

__all__ = [
    "INTEROP_DIR",
    "LOOPBACK",
    "READY_LINE",
    "READY_TIMEOUT",
    "REPO_ROOT",
    "SCRIPT_TIMEOUT",
    "ManagedProcess",
    "NatsServer",
    "NodeScript",
    "NodeScripts",
    "ScriptResult",
    "StanNode",
    "StanNodeFactory",
    "StartupError",
    "accepts_connections",
    "free_port",
    "nats_server_binary",
    "node_args",
    "node_binary",
    "run_node_script",
    "wait_for",
    "wait_for_sync",
]
