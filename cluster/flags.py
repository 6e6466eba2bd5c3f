"""Command-line flags spelled as the reference server spells them.

Go's ``flag`` package rules: ``-name`` and ``--name`` are the same flag, values
come as ``-name value`` or ``-name=value``, a boolean is set by ``-name`` alone
and cleared only by ``-name=false``. Names are case-sensitive. argparse cannot
do single-dash long names, hence this small table-driven parser.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

_DURATION_RE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNITS_NS = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}
_SIZE_RE = re.compile(r"^(\d+)\s*([a-zA-Z]*)$")
_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1024,
    "ki": 1024,
    "kib": 1024,
    "m": 1000**2,
    "mb": 1024**2,
    "mi": 1024**2,
    "mib": 1024**2,
    "g": 1000**3,
    "gb": 1024**3,
    "gi": 1024**3,
    "gib": 1024**3,
    "t": 1000**4,
    "tb": 1024**4,
    "ti": 1024**4,
    "tib": 1024**4,
}


class FlagError(ValueError):
    """A bad command line; the text is shown to the user."""


def parse_duration(text: str) -> int:
    """A Go duration (``300ms``, ``1h30m``, ``1.5h``, ``0``) in nanoseconds."""
    s = text.strip()
    if s in ("0", "+0", "-0"):
        return 0
    neg = s.startswith("-")
    if s[:1] in "+-":
        s = s[1:]
    pos = 0
    total = 0.0
    for m in _DURATION_RE.finditer(s):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNITS_NS[m.group(2)]
        pos = m.end()
    if pos != len(s) or not s:
        raise FlagError(f'time: invalid duration "{text}"')
    return -int(total) if neg else int(total)


def parse_size(text: str) -> int:
    """Bytes, optionally with a NATS size suffix (``k``=1000, ``kb``=1024, ...)."""
    m = _SIZE_RE.match(text.strip())
    if not m or m.group(2).lower() not in _SIZE_UNITS:
        raise FlagError(f'invalid size "{text}"')
    return int(m.group(1)) * _SIZE_UNITS[m.group(2).lower()]


def parse_bool(text: str) -> bool:
    t = text.strip().lower()
    if t in ("1", "t", "true"):
        return True
    if t in ("0", "f", "false"):
        return False
    raise FlagError(f'invalid boolean value "{text}"')


@dataclass(frozen=True, slots=True)
class Flag:
    names: tuple[str, ...]
    dest: str
    #: ``str``, ``int``, ``bool``, ``duration`` (ns) or ``size`` (bytes).
    kind: str
    help: str
    metavar: str = ""
    #: For flags that only exist for compatibility: why they do nothing here.
    ignored: str = ""
    #: For flags refused with an explanation (a boolean set to false is accepted).
    refused: str = ""
    #: ``--help`` section.
    group: str = ""


def parse(argv: list[str], table: list[Flag]) -> tuple[dict[str, Any], list[str]]:
    """Parse ``argv`` against ``table``.

    Returns the values given (by ``dest``; flags not given are absent) and the
    positional arguments. Raises FlagError for unknown or malformed flags.
    """
    by_name: dict[str, Flag] = {}
    for flag in table:
        for name in flag.names:
            by_name[name] = flag
    values: dict[str, Any] = {}
    rest: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if arg == "--":
            rest.extend(argv[i:])
            break
        if not arg.startswith("-") or arg == "-":
            rest.append(arg)
            continue
        body = arg[2:] if arg.startswith("--") else arg[1:]
        name, eq, value = body.partition("=")
        found = by_name.get(name)
        if found is None:
            raise FlagError(f"flag provided but not defined: -{name}")
        flag = found
        if flag.kind == "bool":
            values[flag.dest] = parse_bool(value) if eq else True
            continue
        if not eq:
            if i >= len(argv):
                raise FlagError(f"flag needs an argument: -{name}")
            value = argv[i]
            i += 1
        values[flag.dest] = convert(flag, name, value)
    return values, rest


def convert(flag: Flag, name: str, value: str) -> Any:
    try:
        if flag.kind == "int":
            return int(value, 0)
        if flag.kind == "duration":
            return parse_duration(value)
        if flag.kind == "size":
            return parse_size(value)
    except (ValueError, FlagError) as exc:
        raise FlagError(f'invalid value "{value}" for flag -{name}: {exc}') from exc
    return value


def flag_names(flag: Flag) -> str:
    """``-cid, --cluster_id``, ``--dir``, ``-SDV``: short names with one dash, as in the
    reference's help (a short name is the first of several, or upper case)."""

    def short(i: int, name: str) -> bool:
        return len(name) <= 3 and ((i == 0 and len(flag.names) > 1) or not name.islower())

    return ", ".join(("-" if short(i, n) else "--") + n for i, n in enumerate(flag.names))


def usage(table: list[Flag]) -> str:
    """Help text: one section per ``group``, in the order groups first appear."""
    sections: dict[str, list[str]] = {}
    for flag in table:
        meta = f" <{flag.metavar or flag.kind}>" if flag.kind != "bool" else ""
        note = flag.ignored or flag.refused
        text = f"{flag.help} ({note})" if note else flag.help
        line = f"    {flag_names(flag) + meta:<42} {text}"
        sections.setdefault(flag.group or "Options", []).append(line)
    return "\n\n".join(f"{title}:\n" + "\n".join(lines) for title, lines in sections.items())
