"""The NATS configuration file format, as nats-server and the reference read it.

A small recursive-descent reader written for this project (no maintained
Python package reads this format). What it accepts:

* ``key: value``, ``key = value`` and ``key value``; keys may be quoted;
  entries end at a new line, ``;`` or ``,``.
* Maps ``{ ... }`` and arrays ``[ ... ]`` (items separated by ``,`` or new
  lines), nested freely; a top level wrapped in ``{ }`` (JSON style) works.
* ``#`` and ``//`` comments.
* Strings: ``"double"`` (escapes ``\\t \\n \\r \\" \\\\ \\xHH``), ``'single'``
  (raw), bare words, and blocks ``( ... )`` closed by a line holding only ``)``.
* ``true/false/yes/no/on/off`` (any case) are booleans.
* Integers with size suffixes: ``k``=1000, ``kb``/``ki``/``kib``=1024, and
  ``m``, ``g``, ``t``, ``p``, ``e`` likewise; floats; Zulu date-times
  ``2024-01-02T03:04:05Z``. A bare word that starts with a digit but is not a
  number (``10s``, ``127.0.0.1:4222``) is a string.
* ``$NAME`` refers to a key defined earlier in an enclosing map, else to the
  environment variable NAME, whose text is read as a value of this format.
* ``include path`` merges another file's keys in place; the path is relative
  to the including file.

``parse`` returns plain Python values: ``str``, ``bool``, ``int``, ``float``,
``datetime``, ``list`` and ``dict`` (keys as written; callers compare them
case-insensitively). ``dumps`` writes such a mapping back in this format.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

_SPACE = " \t"
_NL = "\r\n"
#: Characters that end a bare (unquoted) value.
_BARE_END = set(" \t\r\n;,]}#")
_BOOLS = {"true": True, "yes": True, "on": True, "false": False, "no": False, "off": False}
_INT_RE = re.compile(r"^(-?\d+)([kmgtpe](?:b|i|ib)?)?$", re.IGNORECASE)
_FLOAT_RE = re.compile(r"^-?\d+\.\d+$")
_DATETIME_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
_DECIMAL = {"k": 1, "m": 2, "g": 3, "t": 4, "p": 5, "e": 6}
_INT64_MAX = 2**63 - 1
#: Text the environment-variable values are parsed under.
_ENV_KEY = "pk"


class ConfigError(ValueError):
    """A file that cannot be read or parsed; the text names the file and line."""


def parse_file(
    path: str | os.PathLike[str], env: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Read and parse the configuration file at ``path``."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"error opening config file: {exc}") from exc
    return parse(text, path=str(path), env=env)


def parse(
    text: str, path: str | None = None, env: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Parse configuration ``text``; ``path`` locates includes and names errors."""
    return _Parser(text, path, os.environ if env is None else env).parse_top()


def kind_name(value: Any) -> str:
    """Go's name for the kind of a parsed value (used in type-mismatch errors)."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int64"
    if isinstance(value, float):
        return "float64"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "slice"
    if isinstance(value, dict):
        return "map"
    return "struct"


class _Parser:
    def __init__(self, text: str, path: str | None, env: Mapping[str, str]) -> None:
        self.text = text
        self.pos = 0
        self.path = path
        self.env = env
        #: Maps being filled, outermost first: the scopes of ``$NAME``.
        self.scopes: list[dict[str, Any]] = []

    # -- errors and low-level reading -----------------------------------------------

    def error(self, msg: str) -> ConfigError:
        line = self.text.count("\n", 0, self.pos) + 1
        where = f"{self.path}: " if self.path else ""
        return ConfigError(f"{where}Parse error on line {line}: '{msg}'")

    def peek(self, offset: int = 0) -> str:
        i = self.pos + offset
        return self.text[i] if i < len(self.text) else ""

    def at_comment(self) -> bool:
        return self.peek() == "#" or (self.peek() == "/" and self.peek(1) == "/")

    def skip_comment(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos] not in _NL:
            self.pos += 1

    def skip(self, chars: str, comments: bool) -> None:
        """Skip ``chars`` (and comments, if asked)."""
        while self.pos < len(self.text):
            c = self.text[self.pos]
            if c in chars:
                self.pos += 1
            elif comments and self.at_comment():
                self.skip_comment()
            else:
                return

    # -- structure --------------------------------------------------------------------

    def parse_top(self) -> dict[str, Any]:
        mapping: dict[str, Any] = {}
        self.scopes.append(mapping)
        while True:
            self.skip(_SPACE + _NL + "{};,", comments=True)
            if self.pos >= len(self.text):
                break
            self.parse_entry(mapping)
            self.end_of_entry(top=True)
        self.scopes.pop()
        return mapping

    def parse_map(self) -> dict[str, Any]:
        """After ``{``: entries up to the matching ``}``."""
        mapping: dict[str, Any] = {}
        self.scopes.append(mapping)
        while True:
            self.skip(_SPACE + _NL, comments=True)
            c = self.peek()
            if c == "":
                raise self.error("Unexpected EOF, expected '}'")
            if c == "}":
                self.pos += 1
                break
            if c in ",;":
                raise self.error(f"Unexpected map value terminator '{c}'")
            self.parse_entry(mapping)
            self.end_of_entry(top=False)
        self.scopes.pop()
        return mapping

    def end_of_entry(self, top: bool) -> None:
        self.skip(_SPACE, comments=False)
        c = self.peek()
        if c == "" or c in _NL or c in ";,":
            if c:
                self.pos += 1
            return
        if self.at_comment():
            self.skip_comment()
            return
        if c == "}":
            if top:
                self.pos += 1
            return
        what = "top-level value" if top else "map value"
        raise self.error(
            f"Expected a {what} to end with a new line, comment or EOF, but got '{c}' instead."
        )

    def parse_entry(self, mapping: dict[str, Any]) -> None:
        key, quoted = self.parse_key()
        if not quoted and key.lower() == "include" and self.peek() in _SPACE:
            self.skip(_SPACE, comments=False)
            self.include(mapping, self.parse_include_path())
            return
        self.skip(_SPACE + _NL, comments=False)
        if self.peek() in ("=", ":"):
            self.pos += 1
            self.skip(_SPACE, comments=False)
        if self.peek() == "" or self.peek() in _NL:
            raise self.error(f"Expected a value for key '{key}' but found new line")
        mapping[key] = self.parse_value()

    def parse_key(self) -> tuple[str, bool]:
        c = self.peek()
        if c in ("=", ":"):
            raise self.error(f"Unexpected key separator '{c}'")
        if c in ("'", '"'):
            end = self.text.find(c, self.pos + 1)
            if end < 0:
                raise self.error("Unexpected EOF.")
            key = self.text[self.pos + 1 : end]
            self.pos = end + 1
            return key, True
        start = self.pos
        while self.pos < len(self.text):
            ch = self.text[self.pos]
            if ch in _SPACE or ch in _NL or ch in "=:":
                break
            self.pos += 1
        return self.text[start : self.pos], False

    def parse_include_path(self) -> str:
        c = self.peek()
        if c in ("'", '"'):
            end = self.text.find(c, self.pos + 1)
            if end < 0:
                raise self.error("Unexpected EOF.")
            value = self.text[self.pos + 1 : end]
            self.pos = end + 1
            return value
        start = self.pos
        while self.pos < len(self.text) and self.text[self.pos] not in _BARE_END:
            self.pos += 1
        if self.pos == start:
            raise self.error("Expected include value")
        return self.text[start : self.pos]

    def include(self, mapping: dict[str, Any], name: str) -> None:
        base = Path(self.path).parent if self.path else Path(".")
        try:
            included = parse_file(base / name, self.env)
        except ConfigError as exc:
            raise ConfigError(f"error parsing include file '{name}', {exc}") from None
        mapping.update(included)

    # -- values ------------------------------------------------------------------------

    def parse_value(self) -> Any:
        c = self.peek()
        if c == "{":
            self.pos += 1
            return self.parse_map()
        if c == "[":
            self.pos += 1
            return self.parse_array()
        if c == '"':
            self.pos += 1
            return self.parse_double_quoted()
        if c == "'":
            end = self.text.find("'", self.pos + 1)
            if end < 0:
                raise self.error("Unexpected EOF.")
            value = self.text[self.pos + 1 : end]
            self.pos = end + 1
            return value
        if c == "(":
            return self.parse_block()
        if c == ".":
            raise self.error("Floats must start with a digit")
        return self.parse_bare()

    def parse_array(self) -> list[Any]:
        items: list[Any] = []
        while True:
            self.skip(_SPACE + _NL, comments=True)
            c = self.peek()
            if c == "":
                raise self.error("Unexpected EOF, expected ']'")
            if c == "]":
                self.pos += 1
                return items
            if c == ",":
                raise self.error("Unexpected array value terminator ','.")
            items.append(self.parse_value())
            self.skip(_SPACE, comments=True)
            c = self.peek()
            if c == ",":
                self.pos += 1
            elif c == "]" or (c and c in _NL):
                continue
            else:
                raise self.error(
                    "Expected an array value terminator ',' or an array terminator ']', "
                    f"but got '{c or 'EOF'}' instead."
                )

    def parse_double_quoted(self) -> str:
        out: list[str] = []
        while True:
            if self.pos >= len(self.text):
                raise self.error("Unexpected EOF.")
            c = self.text[self.pos]
            self.pos += 1
            if c == '"':
                return "".join(out)
            if c == "\\":
                out.append(self.parse_escape())
            else:
                out.append(c)

    def parse_escape(self) -> str:
        c = self.peek()
        self.pos += 1
        simple = {"t": "\t", "n": "\n", "r": "\r", '"': '"', "\\": "\\"}
        if c in simple:
            return simple[c]
        if c == "x":
            digits = self.text[self.pos : self.pos + 2]
            try:
                value = bytes.fromhex(digits)
            except ValueError:
                raise self.error(
                    f"Expected two hexadecimal digits after '\\x', but got '{digits}'"
                ) from None
            self.pos += 2
            return value.decode("latin-1")
        raise self.error(
            f"Invalid escape character '{c}'. Only the following escape characters are "
            'allowed: \\xXX, \\t, \\n, \\r, \\", \\\\.'
        )

    def parse_block(self) -> str:
        """``(`` ... a line holding only ``)``: the text in between, as is."""
        start = self.pos + 1
        i = start
        while True:
            j = self.text.find(")", i)
            if j < 0:
                raise self.error("Unexpected EOF, expected ')' on a line of its own")
            before = self.text[j - 1] if j > 0 else ""
            after = self.text[j + 1] if j + 1 < len(self.text) else ""
            if before == "\n" and after in ("", "\n", "\r"):
                self.pos = j + 1
                return self.text[start : j - 1]
            i = j + 1

    def parse_bare(self) -> Any:
        """A word up to a terminator: number, bool, variable, date-time or string."""
        out: list[str] = []
        escaped = False
        while self.pos < len(self.text):
            c = self.text[self.pos]
            if c in _BARE_END and not (c == "#" and out):
                break
            self.pos += 1
            if c == "\\":
                escaped = True
                out.append(self.parse_escape())
            else:
                out.append(c)
        word = "".join(out)
        if escaped:
            return word
        if word.lower() in _BOOLS:
            return _BOOLS[word.lower()]
        if word.startswith("$"):
            return self.variable(word[1:])
        if word[:1].isdigit() or word[:1] == "-":
            return self.number_or_string(word)
        return word

    def number_or_string(self, word: str) -> Any:
        m = _INT_RE.match(word)
        if m:
            value = int(m.group(1))
            suffix = (m.group(2) or "").lower()
            if suffix:
                power = _DECIMAL[suffix[0]]
                value *= 1000**power if len(suffix) == 1 else 1024**power
            if abs(value) > _INT64_MAX:
                raise self.error(f"integer '{word}' is out of the range")
            return value
        if _FLOAT_RE.match(word):
            return float(word)
        if _DATETIME_RE.match(word):
            return datetime.strptime(word, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        if word.startswith("-") and not word[1:2].isdigit():
            raise self.error(f"Expected a digit but got '{word[1:2]}'.")
        return word

    def variable(self, name: str) -> Any:
        if name.startswith("2a$"):  # a bcrypt hash, not a reference
            return "$" + name
        for scope in reversed(self.scopes):
            if name in scope:
                return scope[name]
        if name in self.env:
            try:
                return parse(f"{_ENV_KEY}={self.env[name]}", env={})[_ENV_KEY]
            except ConfigError as exc:
                raise self.error(
                    f"variable reference for '{name}' could not be parsed: {exc}"
                ) from None
        line = self.text.count("\n", 0, self.pos) + 1
        where = f"{self.path}: " if self.path else ""
        raise ConfigError(f"{where}variable reference for '{name}' on line {line} can not be found")


# -- writing -------------------------------------------------------------------------------


def dumps(mapping: Mapping[str, Any]) -> str:
    """``mapping`` in this format; ``parse(dumps(m)) == m`` for parsed mappings."""
    return "".join(f"{_quote(k)}: {_dump_value(v, 0)}\n" for k, v in mapping.items())


def _dump_value(value: Any, depth: int) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return _quote(value)
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if isinstance(value, list):
        return "[" + ", ".join(_dump_value(v, depth + 1) for v in value) + "]"
    if isinstance(value, Mapping):
        pad = "  " * (depth + 1)
        inner = "".join(
            f"{pad}{_quote(k)}: {_dump_value(v, depth + 1)}\n" for k, v in value.items()
        )
        return "{\n" + inner + "  " * depth + "}"
    raise TypeError(f"cannot write {type(value).__name__} in a NATS configuration")


def _quote(text: str) -> str:
    out = ['"']
    for c in text:
        if c in '"\\':
            out.append("\\" + c)
        elif c == "\n":
            out.append("\\n")
        elif c == "\t":
            out.append("\\t")
        elif c == "\r":
            out.append("\\r")
        elif ord(c) < 0x20:
            out.append(f"\\x{ord(c):02x}")
        else:
            out.append(c)
    out.append('"')
    return "".join(out)
