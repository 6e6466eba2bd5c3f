"""A node on a secured nats-server: every authentication the reference offers, TLS with
client certificates, and what a node does with wrong credentials (exit 1 at once, with
the reason); secrets never reach the logs; data files are owner-only.

Each test starts its own nats-server with the security under test (the shared one of
this tier is open) and its own node processes, all stopped by PID at teardown.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import stat
import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import nats
import nats.errors
import pytest
from nats.aio.client import Client as NatsClient

from client import Msg, connect
from tests.helpers import (
    READY_TIMEOUT,
    NatsServer,
    StanNode,
    StanNodeFactory,
    free_port,
    node_args,
    wait_for,
)
from tests.helpers.natsauth import make_nkey_user, make_operator, make_tls

#: Seconds a node with wrong credentials gets to give up (it tries 3 times, 0.25 s apart,
#: after the interpreter has started).
GIVE_UP_TIMEOUT = 30.0
#: What the node logs before exiting 1 (cli.py).
FAILED_TO_START = "Failed to start: cannot connect to NATS at nats://"
AUTH_VIOLATION = "Authorization Violation"


class Rig:
    """nats-servers and nodes of one test; :meth:`close` stops them all by PID."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.cluster_id = "sec-" + uuid.uuid4().hex[:8]
        self.servers: list[NatsServer] = []
        self.factories: list[StanNodeFactory] = []
        self.conns: list[NatsClient] = []

    def nats_server(self, *args: str) -> NatsServer:
        server = NatsServer(self.tmp_path / f"nats-{len(self.servers)}.log", args)
        self.servers.append(server)
        return server.start()

    def node(self, server: NatsServer, *flags: str, name: str, **opts: Any) -> StanNode:
        factory = StanNodeFactory(server.url, self.cluster_id, self.tmp_path)
        self.factories.append(factory)
        return factory(*flags, name=name, **opts)

    async def open(self, server: NatsServer, **auth: Any) -> NatsClient:
        nc = await nats.connect(
            servers=[server.url],
            connect_timeout=2,
            max_reconnect_attempts=1,
            reconnect_time_wait=0.1,
            **auth,
        )
        self.conns.append(nc)
        return nc

    def logs(self) -> str:
        """What the nodes wrote, without the harness's ``=== <cmd> ===`` banners (the
        command lines of these tests carry secrets on purpose)."""
        text = "\n".join(n.full_log_text() for f in self.factories for n in f.nodes)
        return "\n".join(line for line in text.splitlines() if not line.startswith("=== "))

    async def close(self, failed: bool) -> None:
        for nc in self.conns:
            if not nc.is_closed:
                with contextlib.suppress(nats.errors.Error):
                    await nc.close()
        try:
            for factory in self.factories:
                await asyncio.to_thread(factory.stop_all)
        finally:
            for server in self.servers:
                server.stop()
            if failed:
                for factory in self.factories:
                    for node in factory.nodes:
                        tail = "\n".join(node.full_log_text().splitlines()[-60:])
                        print(f"\n----- {node.name} log (last 60 lines) -----\n{tail}")


@pytest.fixture
async def rig(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Rig]:
    r = Rig(tmp_path)
    failures_before = request.session.testsfailed
    try:
        yield r
    finally:
        await r.close(request.session.testsfailed > failures_before)


async def round_trip(cluster_id: str, nc: NatsClient, channel: str = "secured") -> None:
    """Connect through ``nc``, subscribe, publish, receive the message back, close."""
    sc = await connect(cluster_id, "c-" + uuid.uuid4().hex[:8], nc=nc, connect_timeout=5)
    got: asyncio.Queue[Msg] = asyncio.Queue()
    try:
        sub = await sc.subscribe(channel, got.put, start_at="first")
        payload = uuid.uuid4().bytes
        await sc.publish(channel, payload)
        while True:
            msg = await asyncio.wait_for(got.get(), 10)
            if msg.data == payload:
                break
        await sub.unsubscribe()
    finally:
        await sc.close()


async def gives_up(node: StanNode, *reasons: str) -> str:
    """Wait for ``node`` to exit 1 on its own; check that its ``Failed to start`` line
    names ``reasons``, and return that line."""
    rc = await asyncio.to_thread(node.wait_exit, GIVE_UP_TIMEOUT)
    log = node.log_text()
    assert rc is not None, (
        f"{node.name} still running {GIVE_UP_TIMEOUT}s after start with wrong credentials; "
        f"log tail:\n{node.log_tail()}"
    )
    assert rc == 1, f"{node.name} exited {rc}, expected 1; log tail:\n{node.log_tail()}"
    failed = [line for line in log.splitlines() if FAILED_TO_START in line]
    assert failed, f"no {FAILED_TO_START!r} in the log:\n{node.log_tail()}"
    for reason in reasons:
        assert reason in failed[0], f"{reason!r} not in the startup failure: {failed[0]}"
    assert "Streaming Server is ready" not in log
    return failed[0]


def assert_not_logged(rig: Rig, secrets: Sequence[str | bytes]) -> None:
    logs = rig.logs()
    assert logs, "no node log to check"
    for secret in secrets:
        text = secret.decode() if isinstance(secret, bytes) else secret
        assert text not in logs, f"a secret ({text[:4]}...) appears in a node log"


def write_conf(path: Path, body: str) -> Path:
    path.write_text("streaming {\n" + body + "\n}\n")
    return path


# -- user / password, token --------------------------------------------------------------------


async def test_user_password_from_flags(rig: Rig) -> None:
    password = "pw-" + uuid.uuid4().hex
    server = rig.nats_server("--user", "stan", "--pass", password)
    rig.node(server, "--user", "stan", "--pass", password, name="good")
    await round_trip(rig.cluster_id, await rig.open(server, user="stan", password=password))

    wrong = rig.node(
        server, "--user", "stan", "--pass", "not-" + password, name="bad", wait_ready=False
    )
    await gives_up(wrong, AUTH_VIOLATION)
    assert_not_logged(rig, [password, "not-" + password])


async def test_user_password_from_config_file(rig: Rig, tmp_path: Path) -> None:
    password = "pw-" + uuid.uuid4().hex
    server = rig.nats_server("--user", "stan", "--pass", password)
    good = write_conf(tmp_path / "good.conf", f'  user: "stan"\n  password: "{password}"')
    rig.node(server, "-sc", str(good), name="good")
    await round_trip(rig.cluster_id, await rig.open(server, user="stan", password=password))

    bad = write_conf(tmp_path / "bad.conf", '  username: "stan"\n  pass: "guess"')
    await gives_up(rig.node(server, "-sc", str(bad), name="bad", wait_ready=False), AUTH_VIOLATION)
    # The flags win over the file (OPERATIONS §3.2): the right password on the command
    # line, a wrong one in the file.
    rig.node(server, "-sc", str(bad), "--pass", password, name="flag-wins")
    assert_not_logged(rig, [password, "guess"])


async def test_password_in_the_url_is_not_logged(rig: Rig) -> None:
    password = "pw-" + uuid.uuid4().hex
    server = rig.nats_server("--user", "stan", "--pass", password)
    url = f"nats://stan:{password}@127.0.0.1:{server.port}"
    node = rig.node(server, name="good", nats_url=url)
    await round_trip(rig.cluster_id, await rig.open(server, user="stan", password=password))
    # Reconnecting logs the URL it reached: without the password.
    server.restart()
    await asyncio.to_thread(node.wait_for_log, "reconnected to NATS", 30)
    bad_url = f"nats://stan:wrong{password}@127.0.0.1:{server.port}"
    wrong = rig.node(server, name="bad", nats_url=bad_url, wait_ready=False)
    failure = await gives_up(wrong, AUTH_VIOLATION)
    assert "nats://stan:***@127.0.0.1:" in failure
    assert_not_logged(rig, [password])


async def test_token(rig: Rig) -> None:
    token = "tok-" + uuid.uuid4().hex
    server = rig.nats_server("--auth", token)
    rig.node(server, "--auth", token, name="good")
    await round_trip(rig.cluster_id, await rig.open(server, token=token))
    await gives_up(
        rig.node(server, "--auth", token[:-1], name="bad", wait_ready=False), AUTH_VIOLATION
    )
    assert_not_logged(rig, [token, token[:-1]])


async def test_token_from_config_file(rig: Rig, tmp_path: Path) -> None:
    token = "tok-" + uuid.uuid4().hex
    server = rig.nats_server("--auth", token)
    conf = write_conf(tmp_path / "token.conf", f'  token: "{token}"')
    rig.node(server, "-sc", str(conf), name="good")
    await round_trip(rig.cluster_id, await rig.open(server, token=token))
    assert_not_logged(rig, [token])


# -- nkeys, JWT credentials ----------------------------------------------------------------------


async def test_nkey_seed_file(rig: Rig, tmp_path: Path) -> None:
    user = make_nkey_user(tmp_path / "user.nk")
    stranger = make_nkey_user(tmp_path / "stranger.nk")
    server_conf = tmp_path / "nkeys.conf"
    server_conf.write_text(f'authorization {{\n  users = [ {{ nkey: "{user.public_key}" }} ]\n}}\n')
    server = rig.nats_server("-c", str(server_conf))

    good = write_conf(tmp_path / "good.conf", f'  nkey_seed_file: "{user.seed_file}"')
    rig.node(server, "-sc", str(good), name="good")
    await round_trip(rig.cluster_id, await rig.open(server, nkeys_seed=str(user.seed_file)))

    bad = write_conf(tmp_path / "bad.conf", f'  nkey_seed_file: "{stranger.seed_file}"')
    await gives_up(rig.node(server, "-sc", str(bad), name="bad", wait_ready=False), AUTH_VIOLATION)
    assert_not_logged(rig, [user.seed, stranger.seed])


async def test_credentials_file(rig: Rig, tmp_path: Path) -> None:
    setup = make_operator(tmp_path / "operator")
    server = rig.nats_server("-c", str(setup.server_conf))

    good = write_conf(tmp_path / "good.conf", f'  credentials: "{setup.creds}"')
    rig.node(server, "-sc", str(good), name="good")
    await round_trip(rig.cluster_id, await rig.open(server, user_credentials=str(setup.creds)))

    bad = write_conf(tmp_path / "bad.conf", f'  credentials: "{setup.foreign_creds}"')
    await gives_up(rig.node(server, "-sc", str(bad), name="bad", wait_ready=False), AUTH_VIOLATION)
    assert_not_logged(rig, [setup.user_seed, setup.user_jwt])


# -- TLS ------------------------------------------------------------------------------------------


def client_tls(ca: Path, cert: Path, key: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca))
    ctx.load_cert_chain(str(cert), str(key))
    return ctx


async def test_tls_client_certificate_from_flags(rig: Rig, tmp_path: Path) -> None:
    tls = make_tls(tmp_path / "tls")
    server = rig.nats_server(*tls.server_args())
    rig.node(
        server,
        "-tls_client_cert",
        str(tls.client_cert),
        "-tls_client_key",
        str(tls.client_key),
        "-tls_client_cacert",
        str(tls.ca_cert),
        name="good",
    )
    nc = await rig.open(server, tls=client_tls(tls.ca_cert, tls.client_cert, tls.client_key))
    await round_trip(rig.cluster_id, nc)

    # A certificate from a CA the server does not trust.
    rogue = rig.node(
        server,
        "-tls_client_cert",
        str(tls.rogue_cert),
        "-tls_client_key",
        str(tls.rogue_key),
        "-tls_client_cacert",
        str(tls.ca_cert),
        name="rogue",
        wait_ready=False,
    )
    await gives_up(rogue, "[SSL")
    # No client certificate at all (-secure: TLS without verifying the server).
    # With TLS 1.3 the server refuses it after the client's side of the
    # handshake is done: the client sees the server's alert or, if the server
    # closed first, a reset or broken connection.
    line = await gives_up(rig.node(server, "-secure", name="no-cert", wait_ready=False))
    assert any(r in line for r in ("[SSL", "Connection reset", "Broken pipe")), line
    key_pem = tls.client_key.read_text().strip().splitlines()[1]
    assert_not_logged(rig, [key_pem])


async def test_tls_from_config_file_verifies_the_server(rig: Rig, tmp_path: Path) -> None:
    tls = make_tls(tmp_path / "tls")
    other = make_tls(tmp_path / "other")
    server = rig.nats_server(*tls.server_args())
    body = (
        "  tls {{\n"
        f'    client_cert: "{tls.client_cert}"\n'
        f'    client_key: "{tls.client_key}"\n'
        '    client_ca: "{ca}"\n'
        "  }}"
    )
    good = write_conf(tmp_path / "good.conf", body.format(ca=tls.ca_cert))
    rig.node(server, "-sc", str(good), name="good")
    nc = await rig.open(server, tls=client_tls(tls.ca_cert, tls.client_cert, tls.client_key))
    await round_trip(rig.cluster_id, nc)
    # The server's certificate is checked against client_ca: another CA refuses it.
    bad = write_conf(tmp_path / "bad.conf", body.format(ca=other.ca_cert))
    await gives_up(
        rig.node(server, "-sc", str(bad), name="bad", wait_ready=False), "CERTIFICATE_VERIFY"
    )


# -- data directory permissions ---------------------------------------------------------------


def loose_entries(root: Path) -> list[str]:
    """Paths under ``root`` (itself included) that group or others may access."""
    loose = []
    for path in [root, *sorted(root.rglob("*"))]:
        mode = path.lstat().st_mode
        if stat.S_IMODE(mode) & 0o077:
            loose.append(f"{path.relative_to(root.parent)} {stat.filemode(mode)}")
    return loose


async def test_data_directory_is_owner_only(rig: Rig, tmp_path: Path) -> None:
    server = rig.nats_server()
    data_dir = tmp_path / "fresh" / "data"  # the node creates it
    node = StanNode(
        node_args(rig.cluster_id, server.url, data_dir, http_port=free_port()),
        log_path=tmp_path / "perm.log",
        name="perm",
    )
    factory = StanNodeFactory(server.url, rig.cluster_id, tmp_path)
    factory.nodes.append(node)  # stopped with the rig
    rig.factories.append(factory)
    await asyncio.to_thread(node.start, True, READY_TIMEOUT)
    await round_trip(rig.cluster_id, await rig.open(server))

    def files() -> list[str]:
        return sorted(p.name for p in data_dir.rglob("*") if p.is_file())

    await wait_for(
        lambda: {"data.mdb", "lock.mdb", "raft.journal"} <= set(files()),
        10,
        "the store and the Raft journal on disk",
        state=files,
    )
    assert (data_dir / "store").is_dir() and (data_dir / "raft").is_dir()
    assert loose_entries(data_dir) == []
    assert await asyncio.to_thread(node.stop) == 143
    assert loose_entries(data_dir) == []
