"""Throwaway credentials for a secured nats-server: TLS certificates, nkeys, JWTs.

Everything is generated in the test's temporary directory and trusts nothing
outside it:

* :func:`make_tls`: a CA, a server certificate for 127.0.0.1 and a client
  certificate signed by it, plus a client certificate from a second, untrusted CA.
* :func:`make_nkey_user`: an nkey user (seed file and public key).
* :func:`make_operator`: an operator, an account and a user for nats-server's
  JWT mode (``operator``/``resolver: MEMORY``), with the user's ``.creds`` file and
  that of a user of an account the server does not know.

Private keys and seeds are written 0600.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import ipaddress
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nkeys
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .net import LOOPBACK

#: Days a generated certificate is valid (from one day ago, against clock skew).
CERT_DAYS = 7


def _write_private(path: Path, data: bytes) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    return path


# -- TLS --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TlsFiles:
    """PEM files; ``rogue_*`` is a client certificate signed by a CA the server ignores."""

    ca_cert: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    rogue_cert: Path
    rogue_key: Path

    def server_args(self) -> list[str]:
        """nats-server flags: TLS required, client certificates verified against the CA."""
        return [
            "--tls",
            "--tlscert",
            str(self.server_cert),
            "--tlskey",
            str(self.server_key),
            "--tlsverify",
            "--tlscacert",
            str(self.ca_cert),
        ]


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _certificate(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None,
    *,
    ca: bool = False,
    server: bool = False,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    issuer_name, issuer_key = issuer if issuer is not None else (_name(subject), key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=CERT_DAYS))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    else:
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address(LOOPBACK)), x509.DNSName("localhost")]
            ),
            critical=False,
        )
    return builder.sign(issuer_key, hashes.SHA256())


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _pem_cert(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def make_tls(directory: Path) -> TlsFiles:
    """CA, server (127.0.0.1, localhost) and client certificates under ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _certificate("stanchion test CA", ca_key, None, ca=True)
    rogue_ca_key = ec.generate_private_key(ec.SECP256R1())
    rogue_ca = _certificate("untrusted CA", rogue_ca_key, None, ca=True)

    files: dict[str, Path] = {}
    (directory / "ca.pem").write_bytes(_pem_cert(ca))
    files["ca_cert"] = directory / "ca.pem"
    for name, issuer, server in (
        ("server", (ca.subject, ca_key), True),
        ("client", (ca.subject, ca_key), False),
        ("rogue", (rogue_ca.subject, rogue_ca_key), False),
    ):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _certificate(f"stanchion test {name}", key, issuer, server=server)
        (directory / f"{name}-cert.pem").write_bytes(_pem_cert(cert))
        _write_private(directory / f"{name}-key.pem", _pem_key(key))
        files[f"{name}_cert"] = directory / f"{name}-cert.pem"
        files[f"{name}_key"] = directory / f"{name}-key.pem"
    return TlsFiles(**files)


# -- nkeys ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NkeyUser:
    seed: bytes
    public_key: str
    seed_file: Path


def new_keypair(prefix: int) -> nkeys.KeyPair:
    """A fresh nkey pair of the given role (``nkeys.PREFIX_BYTE_USER``...)."""
    return nkeys.from_seed(bytearray(nkeys.encode_seed(os.urandom(32), prefix)))


def make_nkey_user(path: Path) -> NkeyUser:
    """A user nkey; its seed is written alone to ``path`` (0600), as nats-py reads it."""
    seed = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)
    kp = nkeys.from_seed(bytearray(seed))
    _write_private(path, seed + b"\n")
    return NkeyUser(seed=seed, public_key=kp.public_key.decode(), seed_file=path)


# -- JWT (operator mode) ---------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _jwt(claims: dict[str, Any], issuer: nkeys.KeyPair) -> str:
    """A NATS JWT: ``jti`` is the base32 SHA-512/256 of the claims without it, as the
    Go library computes it; signed with the issuer's nkey (``ed25519-nkey``)."""
    body = {"iat": int(time.time()), "iss": issuer.public_key.decode(), **claims}
    digest = hashlib.new("sha512_256", json.dumps(body, separators=(",", ":")).encode())
    body["jti"] = base64.b32encode(digest.digest()).rstrip(b"=").decode()
    header = _b64(json.dumps({"typ": "JWT", "alg": "ed25519-nkey"}).encode())
    payload = _b64(json.dumps(body, separators=(",", ":")).encode())
    signature = issuer.sign(f"{header}.{payload}".encode())
    return f"{header}.{payload}.{_b64(signature)}"


def _account_claims(account: nkeys.KeyPair, name: str) -> dict[str, Any]:
    return {
        "sub": account.public_key.decode(),
        "name": name,
        "nats": {
            "limits": {
                "subs": -1,
                "data": -1,
                "payload": -1,
                "imports": -1,
                "exports": -1,
                "wildcards": True,
                "conn": -1,
                "leaf": -1,
            },
            "default_permissions": {"pub": {}, "sub": {}},
            "type": "account",
            "version": 2,
        },
    }


def _user_claims(user: nkeys.KeyPair, name: str) -> dict[str, Any]:
    return {
        "sub": user.public_key.decode(),
        "name": name,
        "nats": {
            "pub": {},
            "sub": {},
            "subs": -1,
            "data": -1,
            "payload": -1,
            "type": "user",
            "version": 2,
        },
    }


def _creds(user_jwt: str, seed: bytes) -> bytes:
    """The ``.creds`` layout of ``nsc``: the user JWT, then the user's seed."""
    return (
        "-----BEGIN NATS USER JWT-----\n"
        f"{user_jwt}\n"
        "------END NATS USER JWT------\n\n"
        "************************* IMPORTANT *************************\n"
        "NKEY Seed printed below can be used to sign and prove identity.\n"
        "NKEYs are sensitive and should be treated as secrets.\n\n"
        "-----BEGIN USER NKEY SEED-----\n"
        f"{seed.decode()}\n"
        "------END USER NKEY SEED------\n"
    ).encode()


@dataclass(frozen=True)
class OperatorSetup:
    """``server_conf``: a nats-server configuration file; ``creds``: a valid user's
    credentials; ``foreign_creds``: a user of an account the server does not know."""

    server_conf: Path
    creds: Path
    foreign_creds: Path
    user_seed: bytes
    user_jwt: str


def make_operator(directory: Path) -> OperatorSetup:
    """Operator, account and user JWTs, and a configuration that preloads the account."""
    directory.mkdir(parents=True, exist_ok=True)
    operator = new_keypair(nkeys.PREFIX_BYTE_OPERATOR)
    op_pub = operator.public_key.decode()
    operator_jwt = _jwt(
        {"sub": op_pub, "name": "test-operator", "nats": {"type": "operator", "version": 2}},
        operator,
    )
    account = new_keypair(nkeys.PREFIX_BYTE_ACCOUNT)
    account_jwt = _jwt(_account_claims(account, "test-account"), operator)
    user_seed = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)
    user = nkeys.from_seed(bytearray(user_seed))
    user_jwt = _jwt(_user_claims(user, "stanchion"), account)

    # A user signed by an account that no operator of this server vouches for.
    stranger_account = new_keypair(nkeys.PREFIX_BYTE_ACCOUNT)
    stranger_seed = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)
    stranger = nkeys.from_seed(bytearray(stranger_seed))
    stranger_jwt = _jwt(_user_claims(stranger, "stranger"), stranger_account)

    conf = directory / "operator.conf"
    conf.write_text(
        f'operator: "{operator_jwt}"\n'
        "resolver: MEMORY\n"
        "resolver_preload: {\n"
        f'  {account.public_key.decode()}: "{account_jwt}"\n'
        "}\n"
    )
    creds = _write_private(directory / "user.creds", _creds(user_jwt, user_seed))
    foreign = _write_private(directory / "stranger.creds", _creds(stranger_jwt, stranger_seed))
    return OperatorSetup(
        server_conf=conf, creds=creds, foreign_creds=foreign, user_seed=user_seed, user_jwt=user_jwt
    )
