"""Store limits as configured, and their resolution into one channel's limits.

The configuration has global limits and per-channel entries keyed by a literal
channel name or a wildcard pattern (SEMANTICS §4.4). ``StoreLimits.resolve``
turns that into the :class:`~store.api.ChannelLimits` a new channel gets;
the store only ever sees resolved values.

Value conventions:

* Global values: 0 = unlimited; negative is a configuration error
  (``validate``).
* Per-channel values: ``None`` or 0 = inherit from the next wider entry,
  negative = unlimited (resolved to 0), positive = that value.

Inheritance order, widest first (deterministic, see ``_width_key``): global,
then every matching wildcard pattern, then the literal entry. Patterns ending
in ``>`` come before patterns without ``>`` (a ``>`` pattern with n tokens can
only match names that a fixed-length pattern of at least n tokens matches as
well, so it is the wider one); within each group fewer tokens come first, then
fewer literal tokens (``*.>`` before ``foo.>``), then the pattern text. So for
``foo.bar.baz``: ``>`` → ``foo.>`` → ``foo.bar.>`` → ``foo.*.baz`` →
``foo.bar.*`` → ``foo.bar.baz``. Each step overrides only the values it sets.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from protocol.errors import go_quote
from protocol.subjects import is_valid_channel_pattern, pattern_matches
from store.api import ChannelLimits

#: Defaults of the reference server (SEMANTICS §8).
DEFAULT_MAX_CHANNELS = 100
DEFAULT_MAX_MSGS = 1_000_000
DEFAULT_MAX_BYTES = 1_024_000_000
DEFAULT_MAX_SUBS = 1000


@dataclass(slots=True)
class PerChannelLimits:
    """Overrides for channels matching one name or pattern.

    ``None`` or 0 inherits from the wider entry; a negative value means
    unlimited.
    """

    max_msgs: int | None = None
    max_bytes: int | None = None
    #: Nanoseconds.
    max_age: int | None = None
    max_subs: int | None = None
    #: Nanoseconds.
    max_inactivity: int | None = None


@dataclass(slots=True)
class StoreLimits:
    """Global limits (0 = unlimited) plus per-channel overrides."""

    #: Number of channels the store may hold.
    max_channels: int = DEFAULT_MAX_CHANNELS
    #: Messages kept per channel (oldest dropped beyond).
    max_msgs: int = DEFAULT_MAX_MSGS
    #: Bytes (encoded MsgProto) kept per channel (oldest dropped beyond).
    max_bytes: int = DEFAULT_MAX_BYTES
    #: Nanoseconds a message is kept.
    max_age: int = 0
    #: Subscription records per channel.
    max_subs: int = DEFAULT_MAX_SUBS
    #: Nanoseconds without activity after which a channel is deleted.
    max_inactivity: int = 0
    #: Literal channel name or wildcard pattern -> overrides.
    channels: dict[str, PerChannelLimits] = field(default_factory=dict)

    def validate(self) -> None:
        """Raise ValueError with the reference's text for the first problem."""
        checks = (
            ("max channels", self.max_channels),
            ("max subscriptions", self.max_subs),
            ("max messages", self.max_msgs),
            ("max bytes", self.max_bytes),
            ("max age", self.max_age),
            ("max inactivity", self.max_inactivity),
        )
        for what, value in checks:
            if value < 0:
                raise ValueError(f"{what} limit cannot be negative ({value})")
        literals = 0
        for name in self.channels:
            if not is_valid_channel_pattern(name):
                raise ValueError(f"invalid channel name {go_quote(name)}")
            if _is_literal(name):
                literals += 1
                if self.max_channels > 0 and literals > self.max_channels:
                    raise ValueError(
                        f"too many channels defined ({literals}). "
                        f"The max channels limit is set to {self.max_channels}"
                    )

    def global_limits(self) -> ChannelLimits:
        """The limits of a channel no per-channel entry matches."""
        return ChannelLimits(
            max_msgs=self.max_msgs,
            max_bytes=self.max_bytes,
            max_age=self.max_age,
            max_subs=self.max_subs,
            max_inactivity=self.max_inactivity,
        )

    def resolve(self, name: str) -> ChannelLimits:
        """The limits of channel ``name`` (a literal name), inheritance applied."""
        out = self.global_limits()
        patterns = [p for p in self.channels if not _is_literal(p) and pattern_matches(p, name)]
        patterns.sort(key=_width_key)
        for p in patterns:
            _apply(out, self.channels[p])
        literal = self.channels.get(name)
        if literal is not None and _is_literal(name):
            _apply(out, literal)
        return out


def _is_literal(name: str) -> bool:
    return not any(tok in ("*", ">") for tok in name.split("."))


def _width_key(pattern: str) -> tuple[int, int, int, str]:
    """Sort key putting wider patterns first (see the module docstring)."""
    toks = pattern.split(".")
    literal_tokens = sum(1 for t in toks if t not in ("*", ">"))
    return (0 if toks[-1] == ">" else 1, len(toks), literal_tokens, pattern)


def _override(current: int, value: int | None) -> int:
    if value is None or value == 0:
        return current
    return 0 if value < 0 else value


def _apply(out: ChannelLimits, over: PerChannelLimits) -> None:
    out.max_msgs = _override(out.max_msgs, over.max_msgs)
    out.max_bytes = _override(out.max_bytes, over.max_bytes)
    out.max_age = _override(out.max_age, over.max_age)
    out.max_subs = _override(out.max_subs, over.max_subs)
    out.max_inactivity = _override(out.max_inactivity, over.max_inactivity)
