"""NATS URLs in logs and startup errors never carry the password or token."""

from __future__ import annotations

import pytest

from cluster.server import redact_url


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("nats://127.0.0.1:4222", "nats://127.0.0.1:4222"),
        ("nats://stan:s3cret@127.0.0.1:4222", "nats://stan:***@127.0.0.1:4222"),
        ("nats://t0ken@127.0.0.1:4222", "nats://***@127.0.0.1:4222"),
        ("tls://u:p@ss@w0rd@nats.example:4443", "tls://u:***@nats.example:4443"),
        ("stan:pw@nats.example:4222", "stan:***@nats.example:4222"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown
