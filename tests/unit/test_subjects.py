"""Subjects (PROTOCOL.md §2) and the client ID / channel name rules (§6, SEMANTICS §4.1)."""

from __future__ import annotations

import pytest

from protocol.subjects import (
    ACK_PREFIX,
    DEFAULT_CLUSTER_ID,
    DEFAULT_DISCOVER_PREFIX,
    Subjects,
    is_valid_channel,
    is_valid_channel_pattern,
    is_valid_client_id,
    pattern_matches,
)


def test_defaults() -> None:
    assert DEFAULT_CLUSTER_ID == "test-cluster"
    assert DEFAULT_DISCOVER_PREFIX == "_STAN.discover"
    assert ACK_PREFIX == "_STAN.ack"


def test_subjects_for_default_cluster() -> None:
    s = Subjects.for_cluster("test-cluster")
    assert s.discover == "_STAN.discover.test-cluster"
    assert s.pings == "_STAN.discover.test-cluster.pings"
    assert s.pub_prefix == "_STAN.pub.test-cluster"
    assert s.pub_wildcard == "_STAN.pub.test-cluster.>"
    assert s.sub == "_STAN.sub.test-cluster"
    assert s.unsub == "_STAN.unsub.test-cluster"
    assert s.subclose == "_STAN.subclose.test-cluster"
    assert s.close == "_STAN.close.test-cluster"


def test_subjects_with_discover_prefix() -> None:
    s = Subjects.for_cluster("c1", discover_prefix="my.discover")
    assert s.discover == "my.discover.c1"
    assert s.pings == "my.discover.c1.pings"
    # Only discovery follows the prefix.
    assert s.pub_prefix == "_STAN.pub.c1"
    assert s.close == "_STAN.close.c1"


def test_subjects_are_deterministic() -> None:
    assert Subjects.for_cluster("x") == Subjects.for_cluster("x")
    assert Subjects.for_cluster("x") != Subjects.for_cluster("y")


@pytest.mark.parametrize(
    "client_id",
    ["a", "Z", "0", "-", "_", "me", "client-1", "client_1", "ABC-def_123", "x" * 1000],
)
def test_valid_client_ids(client_id: str) -> None:
    assert is_valid_client_id(client_id)


@pytest.mark.parametrize(
    "client_id",
    [
        "",
        " ",
        "a b",
        "a.b",
        "a*",
        "a>",
        "a/b",
        "a:b",
        "a@b",
        "a\tb",
        "é",  # Latin-1 letter
        "clientÄ",
        "ａ",  # fullwidth a
        "١٢٣",  # Arabic-Indic digits
        "ǅ",  # titlecase letter
        "a\u200b",  # zero width space
        "\nabc",
    ],
)
def test_invalid_client_ids(client_id: str) -> None:
    assert not is_valid_client_id(client_id)


def test_client_id_with_trailing_newline_is_invalid() -> None:
    assert not is_valid_client_id("abc\n")


# SEMANTICS §4.1: non-empty; first character not `.`; no `/`; last character not
# `.`; no `..`; no `*` and no `>` anywhere. Nothing else is checked.
@pytest.mark.parametrize(
    "channel",
    [
        "foo",
        "foo.bar",
        "foo.bar.baz",
        "a",
        "Foo",
        "foo-bar_baz",
        "foo:bar",
        "foo bar",  # spaces are not checked
        "foo\tbar",
        "日本.チャンネル",
        "$SYS.x",
        "_STAN.x",
        "foo.1.2",
        "x" * 1000,
    ],
)
def test_valid_channels(channel: str) -> None:
    assert is_valid_channel(channel)


@pytest.mark.parametrize(
    "channel",
    [
        "",
        ".",
        ".foo",
        "foo.",
        "foo..bar",
        "..",
        "foo/bar",
        "/",
        "*",
        ">",
        "foo.*",
        "foo.>",
        "*.foo",
        "foo*",
        "f>o",
        "foo.*.bar",
    ],
)
def test_invalid_channels(channel: str) -> None:
    assert not is_valid_channel(channel)


# Per-channel limit keys: like literal names, but `*` and `>` may be whole tokens,
# `>` only as the last one.
@pytest.mark.parametrize(
    "pattern",
    ["foo", "foo.bar", "*", ">", "foo.*", "foo.>", "*.bar", "foo.*.bar", "*.*", "*.>", "foo.*.>"],
)
def test_valid_patterns(pattern: str) -> None:
    assert is_valid_channel_pattern(pattern)


@pytest.mark.parametrize(
    "pattern",
    [
        "",
        ".foo",
        "foo.",
        "foo..bar",
        "foo/bar",
        "foo.>.bar",
        ">.foo",
        ">.>",
        "foo*",
        "*foo",
        "f*o.bar",
        "foo.>bar",
        "foo.b>",
        "**",
    ],
)
def test_invalid_patterns(pattern: str) -> None:
    assert not is_valid_channel_pattern(pattern)


def test_literal_channels_are_valid_patterns() -> None:
    for name in ["foo", "foo.bar", "a b", "日本"]:
        assert is_valid_channel(name)
        assert is_valid_channel_pattern(name)


@pytest.mark.parametrize(
    ("pattern", "name", "matches"),
    [
        ("foo", "foo", True),
        ("foo", "bar", False),
        ("foo", "Foo", False),  # case sensitive
        ("foo.bar", "foo.bar", True),
        ("foo.bar", "foo.baz", False),
        ("foo.bar", "foo", False),
        ("foo", "foo.bar", False),
        ("foo.*", "foo.bar", True),
        ("foo.*", "foo", False),
        ("foo.*", "foo.bar.baz", False),
        ("*", "foo", True),
        ("*", "foo.bar", False),
        ("*.bar", "foo.bar", True),
        ("*.bar", "foo.baz", False),
        ("foo.*.baz", "foo.x.baz", True),
        ("foo.*.baz", "foo.x.y", False),
        ("foo.>", "foo.bar", True),
        ("foo.>", "foo.bar.baz", True),
        ("foo.>", "foo", False),
        ("foo.>", "bar.foo", False),
        (">", "foo", True),
        (">", "foo.bar.baz", True),
        ("*.>", "foo", False),
        ("*.>", "foo.bar", True),
        ("foo.*.>", "foo.bar", False),
        ("foo.*.>", "foo.bar.baz", True),
    ],
)
def test_pattern_matches(pattern: str, name: str, matches: bool) -> None:
    assert pattern_matches(pattern, name) is matches
