"""The NATS configuration format reader (cluster/natsconf.py)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from cluster.natsconf import ConfigError, dumps, kind_name, parse, parse_file


@pytest.mark.parametrize(
    "text", ["port: 4222", "port = 4222", "port 4222", "port:4222", "port=4222"]
)
def test_key_value_separators(text: str) -> None:
    assert parse(text) == {"port": 4222}


def test_entries_end_with_newline_semicolon_or_comma() -> None:
    assert parse("a: 1; b: 2, c: 3\nd: 4") == {"a": 1, "b": 2, "c": 3, "d": 4}


def test_comments() -> None:
    text = """
    # hash comment
    a: 1 # after a value
    // slash comment
    b: "x" // after a value
    url: nats://host:4222
    m { # in a map
      c: 2 // here too
    }
    """
    assert parse(text) == {"a": 1, "b": "x", "url": "nats://host:4222", "m": {"c": 2}}


def test_quoted_keys_and_json_style_top() -> None:
    assert parse('{"a.b": 1, \'c d\': "x"}') == {"a.b": 1, "c d": "x"}


def test_strings() -> None:
    text = r"""
    dq: "tab\there \"q\" back\\slash \x41"
    sq: 'raw \t $x'
    bare: some-word
    ip: 127.0.0.1:4222
    dur: 10s
    hm: 1h30m
    esc: a\tb
    """
    assert parse(text) == {
        "dq": 'tab\there "q" back\\slash A',
        "sq": "raw \\t $x",
        "bare": "some-word",
        "ip": "127.0.0.1:4222",
        "dur": "10s",
        "hm": "1h30m",
        "esc": "a\tb",
    }


def test_block_string() -> None:
    text = "b (\n  line one )\n  line two\n)\nnext: 1\n"
    assert parse(text) == {"b": "\n  line one )\n  line two", "next": 1}


@pytest.mark.parametrize("word", ["true", "TRUE", "yes", "on"])
def test_true(word: str) -> None:
    assert parse(f"x: {word}") == {"x": True}


@pytest.mark.parametrize("word", ["false", "No", "off"])
def test_false(word: str) -> None:
    assert parse(f"x: {word}") == {"x": False}


@pytest.mark.parametrize(
    "text,value",
    [
        ("0", 0),
        ("-12", -12),
        ("2k", 2000),
        ("2K", 2000),
        ("2kb", 2048),
        ("2KiB", 2048),
        ("3m", 3_000_000),
        ("3MB", 3 * 1024**2),
        ("1g", 10**9),
        ("1GB", 1024**3),
        ("1gi", 1024**3),
        ("1t", 10**12),
        ("1tb", 1024**4),
        ("1.5", 1.5),
    ],
)
def test_numbers_and_sizes(text: str, value: float) -> None:
    assert parse(f"x: {text}") == {"x": value}


def test_integer_out_of_range() -> None:
    with pytest.raises(ConfigError, match="out of the range"):
        parse("x: 99999999999999999999")


def test_datetime() -> None:
    assert parse("t: 2024-01-02T03:04:05Z") == {"t": datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)}


def test_arrays_and_nesting() -> None:
    text = """
    peers: [
      "a=127.0.0.1:7001",   # comment
      b
      c, 1, true, [x, y], {k: v}
    ]
    empty: []
    cluster {
      inner { deep = 1 }
    }
    """
    assert parse(text) == {
        "peers": ["a=127.0.0.1:7001", "b", "c", 1, True, ["x", "y"], {"k": "v"}],
        "empty": [],
        "cluster": {"inner": {"deep": 1}},
    }


def test_variables_from_scope_and_environment() -> None:
    text = """
    port: 4222
    name: "n1"
    m {
      p: $port
      local: 5
      again: $local
      from_env: $STAN_TEST_VAR
      size: $STAN_TEST_SIZE
    }
    """
    env = {"STAN_TEST_VAR": "hello", "STAN_TEST_SIZE": "1KB"}
    assert parse(text, env=env)["m"] == {
        "p": 4222,
        "local": 5,
        "again": 5,
        "from_env": "hello",
        "size": 1024,
    }


def test_unknown_variable() -> None:
    with pytest.raises(
        ConfigError, match="variable reference for 'NOPE' on line 2 can not be found"
    ):
        parse("a: 1\nb: $NOPE\n", env={})


def test_bcrypt_value_is_not_a_variable() -> None:
    h = "$2a$11$W2zko751KUvVy59mUTWmpOdWjpEm5qhcCZRd05GjI/sSOT.xtiHyG"
    assert parse(f"password: {h}") == {"password": h}


def test_include(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "limits.conf").write_text("max_msgs: 10\nmax_age: '1h'\n")
    (tmp_path / "main.conf").write_text(
        "streaming {\n  id: x\n  store_limits {\n    include 'sub/limits.conf'\n  }\n}\n"
    )
    assert parse_file(tmp_path / "main.conf") == {
        "streaming": {"id": "x", "store_limits": {"max_msgs": 10, "max_age": "1h"}}
    }


def test_include_missing(tmp_path: Path) -> None:
    (tmp_path / "main.conf").write_text("include nope.conf\n")
    with pytest.raises(ConfigError, match="error parsing include file 'nope.conf'"):
        parse_file(tmp_path / "main.conf")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="error opening config file"):
        parse_file(tmp_path / "missing.conf")


@pytest.mark.parametrize(
    "text,message",
    [
        ("a: 1 2", "Expected a top-level value to end"),
        ("m { a: 1 ", "expected '}'"),
        ("a: [1, 2", "array terminator ']'"),
        ('a: "open', "Unexpected EOF"),
        ("a: .5", "Floats must start with a digit"),
        ('a: "\\q"', "Invalid escape character"),
        ("= 1", "Unexpected key separator"),
        ("a:\n1", "found new line"),
    ],
)
def test_errors(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        parse(text, path="f.conf")
    assert str(info.value).startswith("f.conf: Parse error on line")


def test_kinds() -> None:
    values = parse("s: x\nb: true\ni: 1\nf: 1.5\nl: []\nm: {}\nt: 2024-01-02T03:04:05Z")
    assert {k: kind_name(v) for k, v in values.items()} == {
        "s": "string",
        "b": "bool",
        "i": "int64",
        "f": "float64",
        "l": "slice",
        "m": "map",
        "t": "struct",
    }


def test_dumps_round_trip() -> None:
    original = parse(
        r"""
        port: 4222
        s: "quote \" tab \t nl \n ctl \x01 unicode é"
        flags: [true, false, 1.25, -3]
        authorization { user: "u", password: "p w" }
        cluster { routes: ["nats://a:6222", "nats://b:6222"] }
        t: 2024-01-02T03:04:05Z
        "odd key": {}
        """
    )
    assert parse(dumps(original)) == original
