"""Configuration files checked against the dataclasses that hold them, for every voxwire process.

The gateway and the adapter each keep their settings in frozen dataclasses whose annotations
say what a value may be. ``check_table`` walks a parsed TOML table against such a dataclass, so
a typo'd key, a string where a number belongs or a negative timeout is refused when the file is
loaded, with one line naming the file, the key and what is wrong (``ConfigError``), instead of
a start that breaks later or a limit that silently compares a string. What the types cannot say
(0 allowed, a list that must not be empty, the form of a string) each process gives as
``Rules``.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import tomllib
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

# (dataclass, field name): what a rule is about.
Owner = tuple[type, str]


class ConfigError(ValueError):
    """A configuration that cannot be used; the message names the file (when there is one),
    the key and what is wrong, on one line."""


@dataclass(frozen=True, slots=True)
class Relation:
    """A rule between fields of the built configuration, e.g. a high-water mark at most its
    hard bound: ``holds(config)`` is False when ``key`` (the path the file spells) is wrong
    for ``why``."""

    key: str
    holds: Callable[[Any], bool]
    why: str


@dataclass(frozen=True)
class Rules:
    """What a field's type does not say. Numbers must be positive (a zero size, count or
    timeout would refuse everything) except the fields in ``zero_allowed``, where 0 has a
    meaning; lists in ``non_empty`` must hold something; a string field in ``strings`` is
    checked by its function (the problem, or None); ``relations`` between fields are checked
    on the built configuration (``check_relations``): values each valid alone can still make
    every session fail."""

    zero_allowed: frozenset[Owner] = frozenset()
    non_empty: frozenset[Owner] = frozenset()
    strings: Mapping[Owner, Callable[[str], str | None]] = field(default_factory=dict)
    relations: tuple[Relation, ...] = ()


def check_relations(config: Any, rules: Rules) -> None:
    """Raises ConfigError for the first relation of ``rules`` that ``config`` breaks."""
    for relation in rules.relations:
        if not relation.holds(config):
            raise ConfigError(f"{relation.key}: {relation.why}")


def read_toml(path: Path) -> dict[str, Any]:
    """The parsed file. Raises ConfigError naming ``path`` (unreadable, not UTF-8, not TOML)."""
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None


def host_port(value: str, *, empty_ok: bool = False) -> str | None:
    """The problem with a ``host:port`` string, or None."""
    if value == "" and empty_ok:
        return None
    if "://" in value or "/" in value:
        # A URL (http://host:8001, the habit of Triton's HTTP clients) named a host that
        # never resolves, and the process served on without a word of it.
        return f"must be host:port (no scheme or path), not {value!r}"
    _, colon, port = value.rpartition(":")
    if colon and port.isdigit() and int(port) <= 65535:
        return None
    return f"must be host:port, not {value!r}"


def one_of(*choices: str) -> Callable[[str], str | None]:
    """A string rule: ``value`` must be one of ``choices``."""

    def rule(value: str) -> str | None:
        return None if value in choices else f"must be one of {', '.join(choices)}, not {value!r}"

    return rule


def check_table(cls: type, table: Any, path: tuple[str, ...], rules: Rules) -> dict[str, Any]:
    """The values of ``table`` for the dataclass ``cls`` (its fields' annotations drive the
    checks; nested dataclasses are checked as tables, and stay dicts), normalized (a list for a
    tuple field becomes a tuple, an int for a float field a float).

    Raises:
        ConfigError: ``table`` is not a table, holds an unknown key, or a value of the wrong
            type or out of range; the message names the key path.
    """
    if not isinstance(table, Mapping):
        raise ConfigError(f"{where(path)}: must be a table, not {table!r}")
    known = {f.name for f in fields(cls)}
    unknown = [name for name in table if name not in known]
    if unknown:
        names = ", ".join(where((*path, name)) + _near(name, known) for name in sorted(unknown))
        raise ConfigError(f"unknown key{'s' if len(unknown) > 1 else ''}: {names}")
    hints = typing.get_type_hints(cls)
    return {
        name: _check_value(hints[name], value, (*path, name), (cls, name), rules)
        for name, value in table.items()
    }


def _near(name: str, known: set[str]) -> str:
    """A hint naming the known key closest to the unknown ``name``, if one is close: a typo
    (``keys_fil``), or a command-line flag's name for a key spelt otherwise (``--adapter`` is
    ``adapters``)."""
    close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.75)
    return f" (did you mean {close[0]}?)" if close else ""


def _check_value(kind: Any, value: Any, path: tuple[str, ...], owner: Owner, rules: Rules) -> Any:
    """``value`` checked against the annotation ``kind``; ``owner`` (dataclass, field) picks
    the range and string rules."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):  # X | None: TOML has no None
        (kind,) = [a for a in args if a is not type(None)]
        return _check_value(kind, value, path, owner, rules)
    if isinstance(kind, type) and dataclasses.is_dataclass(kind):
        return check_table(kind, value, path, rules)
    if origin is tuple or origin is list:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where(path)}: must be a list, not {value!r}")
        if not value and owner in rules.non_empty:
            raise ConfigError(f"{where(path)}: must not be empty")
        items = [
            _check_value(args[0], v, (*path[:-1], f"{path[-1]}[{i}]"), owner, rules)
            for i, v in enumerate(value)
        ]
        return tuple(items) if origin is tuple else items
    if origin is Mapping or origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where(path)}: must be a table, not {value!r}")
        return {
            str(k): _check_value(args[1], v, (*path, str(k)), owner, rules)
            for k, v in value.items()
        }
    problem = _scalar_problem(kind, value, owner, rules)
    if problem is not None:
        raise ConfigError(f"{where(path)}: {problem}")
    if kind is float:
        return float(value)
    return Path(value) if kind is Path else value


def _scalar_problem(kind: Any, value: Any, owner: Owner, rules: Rules) -> str | None:
    """What is wrong with a scalar ``value`` of a field typed ``kind``, or None."""
    if kind is bool:
        return None if isinstance(value, bool) else f"must be true or false, not {value!r}"
    if kind is str or kind is Path:
        if not isinstance(value, str) and not (kind is Path and isinstance(value, Path)):
            return f"must be a string, not {value!r}"
        rule = rules.strings.get(owner)
        return rule(str(value)) if rule is not None else None
    if kind is int or kind is float:
        return _number_problem(kind, value, owner in rules.zero_allowed)
    raise TypeError(f"no configuration check for {kind!r} ({owner[0].__name__}.{owner[1]})")


def _number_problem(kind: type, value: Any, zero_allowed: bool) -> str | None:
    sign = "non-negative" if zero_allowed else "positive"
    noun = "integer" if kind is int else "number"
    # bool is an int subclass, but `true` for a size is a mistake; an int is a fine float.
    accepted = (int,) if kind is int else (int, float)
    ok = isinstance(value, accepted) and not isinstance(value, bool)
    if ok and isinstance(value, float) and not math.isfinite(value):
        ok = False  # TOML's inf and nan
    if ok and (value < 0 or (value == 0 and not zero_allowed)):
        ok = False
    return None if ok else f"must be a {sign} {noun}, not {value!r}"


def where(path: tuple[str, ...]) -> str:
    """A key path as the TOML file spells it: ``listen``, ``[stt] max_frame_bytes``."""
    if len(path) <= 1:
        return path[0] if path else "the configuration"
    return f"[{path[0]}] {'.'.join(path[1:])}"
