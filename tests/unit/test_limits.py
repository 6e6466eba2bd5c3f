"""Store limits: defaults, validation texts, and per-channel inheritance (SEMANTICS §4.3-4.4)."""

from __future__ import annotations

import pytest

from store.api import ChannelLimits
from store.limits import PerChannelLimits, StoreLimits

SEC = 1_000_000_000


def test_defaults() -> None:
    sl = StoreLimits()
    assert (sl.max_channels, sl.max_msgs, sl.max_bytes, sl.max_age, sl.max_subs) == (
        100,
        1_000_000,
        1_024_000_000,
        0,
        1000,
    )
    assert sl.max_inactivity == 0
    assert sl.channels == {}
    sl.validate()
    assert sl.resolve("foo") == ChannelLimits(
        max_msgs=1_000_000, max_bytes=1_024_000_000, max_age=0, max_subs=1000, max_inactivity=0
    )
    # The store's own defaults agree with the configuration defaults.
    assert sl.resolve("foo") == ChannelLimits()


@pytest.mark.parametrize(
    ("field", "text"),
    [
        ("max_channels", "max channels limit cannot be negative (-1)"),
        ("max_subs", "max subscriptions limit cannot be negative (-1)"),
        ("max_msgs", "max messages limit cannot be negative (-1)"),
        ("max_bytes", "max bytes limit cannot be negative (-1)"),
        ("max_age", "max age limit cannot be negative (-1)"),
        ("max_inactivity", "max inactivity limit cannot be negative (-1)"),
    ],
)
def test_negative_global_limit(field: str, text: str) -> None:
    sl = StoreLimits(**{field: -1})  # type: ignore[arg-type]
    with pytest.raises(ValueError) as exc:
        sl.validate()
    assert str(exc.value) == text


def test_first_negative_global_limit_is_reported_in_reference_order() -> None:
    sl = StoreLimits(max_msgs=-5, max_subs=-3)
    with pytest.raises(ValueError, match=r"^max subscriptions limit cannot be negative \(-3\)$"):
        sl.validate()


def test_zero_global_limits_are_valid_and_unlimited() -> None:
    sl = StoreLimits(max_channels=0, max_msgs=0, max_bytes=0, max_subs=0)
    sl.validate()
    assert sl.resolve("a") == ChannelLimits(0, 0, 0, 0, 0)


def test_too_many_literal_channels_defined() -> None:
    sl = StoreLimits(
        max_channels=2,
        channels={
            "a": PerChannelLimits(max_msgs=1),
            "b": PerChannelLimits(max_msgs=1),
            "c.>": PerChannelLimits(max_msgs=1),  # wildcards do not count
            "*": PerChannelLimits(max_msgs=1),
        },
    )
    sl.validate()
    sl.channels["c"] = PerChannelLimits(max_msgs=1)
    with pytest.raises(ValueError) as exc:
        sl.validate()
    assert str(exc.value) == "too many channels defined (3). The max channels limit is set to 2"
    sl.max_channels = 0  # unlimited
    sl.validate()


@pytest.mark.parametrize("name", ["", ".a", "a.", "a..b", "a/b", "a.>.b", "a*", "a.b>", ">a"])
def test_invalid_channel_name(name: str) -> None:
    sl = StoreLimits(channels={name: PerChannelLimits(max_msgs=1)})
    with pytest.raises(ValueError) as exc:
        sl.validate()
    assert str(exc.value) == f'invalid channel name "{name}"'


@pytest.mark.parametrize("name", ["a", "a.b", "a.*", "*.b", "a.>", ">", "*", "a.*.>"])
def test_valid_channel_patterns(name: str) -> None:
    StoreLimits(channels={name: PerChannelLimits(max_msgs=1)}).validate()


def test_literal_override() -> None:
    sl = StoreLimits(
        max_msgs=100,
        max_age=10 * SEC,
        channels={"foo": PerChannelLimits(max_msgs=5, max_bytes=-1, max_subs=0, max_age=None)},
    )
    assert sl.resolve("foo") == ChannelLimits(
        max_msgs=5, max_bytes=0, max_age=10 * SEC, max_subs=1000, max_inactivity=0
    )
    # Other channels keep the global limits.
    assert sl.resolve("bar") == sl.global_limits()
    assert sl.resolve("foo.bar") == sl.global_limits()


def test_wildcard_chain_widest_to_narrowest() -> None:
    sl = StoreLimits(
        max_msgs=100,
        max_bytes=1000,
        max_subs=10,
        channels={
            "foo.>": PerChannelLimits(max_msgs=50, max_bytes=500, max_subs=5),
            "foo.bar.>": PerChannelLimits(max_msgs=20, max_inactivity=3 * SEC),
            "foo.bar.baz": PerChannelLimits(max_msgs=-1),
        },
    )
    sl.validate()
    # Literal: unlimited msgs, inactivity from foo.bar.>, bytes/subs from foo.>.
    assert sl.resolve("foo.bar.baz") == ChannelLimits(
        max_msgs=0, max_bytes=500, max_age=0, max_subs=5, max_inactivity=3 * SEC
    )
    assert sl.resolve("foo.bar.qux") == ChannelLimits(
        max_msgs=20, max_bytes=500, max_age=0, max_subs=5, max_inactivity=3 * SEC
    )
    assert sl.resolve("foo.x") == ChannelLimits(
        max_msgs=50, max_bytes=500, max_age=0, max_subs=5, max_inactivity=0
    )
    # "foo.bar.>" needs at least one token after foo.bar; "foo.>" matches foo.bar.
    assert sl.resolve("foo.bar") == sl.resolve("foo.x")
    # "foo" itself matches nothing.
    assert sl.resolve("foo") == sl.global_limits()


def test_order_is_by_width_not_by_insertion() -> None:
    narrow_first = StoreLimits(
        channels={
            "a.b.*": PerChannelLimits(max_msgs=3),
            "a.*.c": PerChannelLimits(max_msgs=4, max_subs=9),
            "a.b.>": PerChannelLimits(max_msgs=2),
            "*.>": PerChannelLimits(max_msgs=7, max_bytes=70),
            ">": PerChannelLimits(max_msgs=1, max_bytes=10, max_age=5),
            "a.>": PerChannelLimits(max_msgs=6),
        }
    )
    wide_first = StoreLimits(channels=dict(reversed(list(narrow_first.channels.items()))))
    for sl in (narrow_first, wide_first):
        # > (1) -> *.> (7) -> a.> (6) -> a.b.> (2) -> a.*.c (4) -> a.b.* (3)
        got = sl.resolve("a.b.c")
        assert (got.max_msgs, got.max_bytes, got.max_age, got.max_subs) == (3, 70, 5, 9)
        got = sl.resolve("a.b.d")  # a.*.c does not match
        assert (got.max_msgs, got.max_subs) == (3, 1000)
        got = sl.resolve("a.b.c.d")  # only the > patterns match
        assert got.max_msgs == 2
        got = sl.resolve("x")
        assert (got.max_msgs, got.max_bytes) == (1, 10)


def test_negative_in_wildcard_then_inherit_keeps_unlimited() -> None:
    sl = StoreLimits(
        max_subs=10,
        channels={
            "foo.*": PerChannelLimits(max_subs=-1),
            "foo.bar": PerChannelLimits(max_subs=0, max_msgs=3),
        },
    )
    got = sl.resolve("foo.bar")
    assert (got.max_subs, got.max_msgs) == (0, 3)


def test_resolve_does_not_mutate_configuration() -> None:
    per = PerChannelLimits(max_msgs=-1)
    sl = StoreLimits(channels={"foo.>": per})
    sl.resolve("foo.bar")
    sl.resolve("foo.bar")
    assert per == PerChannelLimits(max_msgs=-1)
    first = sl.resolve("foo.bar")
    first.max_msgs = 12345
    assert sl.resolve("foo.bar").max_msgs == 0
