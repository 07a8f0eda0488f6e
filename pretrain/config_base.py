"""What every typed config of the project shares: the pydantic base, JSON loading, overrides, one error format.

``pretrain train``'s ``RunConfig`` and ``finetune``'s classify / qa / attack options all subclass ``Section`` and
load through ``load``: a JSON file (duplicate keys rejected, syntax errors as ``file:line:col``), then the values
the command line set (``--a.b value`` tokens, or finetune's generated flags), then validation. Every problem is
one ``UserError`` line that names the file or the flag, the key, and what was expected.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from data_tools.errors import UserError, reading
from data_tools.jsonfile import parse_json


class Section(BaseModel):
    """A config model: unknown keys rejected, assignments validated, one docstring per field."""

    # Attribute docstrings become field descriptions: the READMEs' references and finetune's --help come from them.
    # allow_inf_nan=False: nan/inf never make sense as a setting (nan even passes no bound: every comparison fails).
    model_config = ConfigDict(extra="forbid", validate_assignment=True, use_attribute_docstrings=True,
                              allow_inf_nan=False)

    renamed: ClassVar[dict[str, str]] = {}
    """Old top-level key -> its current name, for files written before a rename (both at once: an error)."""

    @model_validator(mode="before")
    @classmethod
    def _current_names(cls, data: Any) -> Any:
        return rename_keys(cls, data) if isinstance(data, dict) else data


def rename_keys(cls: type[BaseModel], data: dict[str, Any]) -> dict[str, Any]:
    """``data`` with the old names of ``cls.renamed`` replaced by the current ones (a copy when any)."""
    for old, new in getattr(cls, "renamed", {}).items():
        if old in data:
            if new in data:
                raise ValueError(f"{old}: the old name of {new}; give only one of them")
            data = {new if k == old else k: v for k, v in data.items()}
    return data


S = TypeVar("S", bound=BaseModel)


# --------------------------------------------------------------------------------------------- JSON files


def _no_duplicates(source: str):
    # json.loads keeps the last of two equal keys silently; a config that says a thing twice is a mistake.
    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        seen: dict[str, Any] = {}
        for key, value in pairs:
            if key in seen:
                raise UserError(f"{source}: duplicate key {key!r} (each key may appear once per object)")
            seen[key] = value
        return seen

    return hook


def load_json(path: str | Path) -> dict[str, Any]:
    """Read a JSON object, rejecting duplicate keys; UserError naming the file (and line) otherwise.

    Args:
        path: JSON file.
    Returns:
        The parsed object.
    """
    path = Path(path)
    with reading(path, "config file", "a JSON file"):
        text = path.read_text(encoding="utf-8")
    obj = parse_json(text, path, column=True, object_pairs_hook=_no_duplicates(str(path)))
    if not isinstance(obj, dict):
        raise UserError(f"{path}: expected a JSON object at the top level, got {type(obj).__name__}")
    return obj


# --------------------------------------------------------------------------------------------- command line


@dataclass
class CommandLine:
    """Values set on the command line, by dotted key, and the flag that set each (errors blame that flag)."""

    values: dict[str, Any] = field(default_factory=dict)
    flags: dict[str, str] = field(default_factory=dict)

    def set(self, key: str, value: Any, flag: str) -> None:
        """Record ``key = value``, given as ``flag``."""
        self.values[key] = value
        self.flags[key] = flag

    def merged(self, other: CommandLine) -> CommandLine:
        """Both; ``other`` wins where both set a key."""
        return CommandLine({**self.values, **other.values}, {**self.flags, **other.flags})

    def applied_to(self, raw: dict[str, Any]) -> dict[str, Any]:
        """A copy of ``raw`` with every value set at its dotted key (sections created as needed)."""
        out = json.loads(json.dumps(raw))
        for key, value in self.values.items():
            *parents, leaf = key.split(".")
            node = out
            for part in parents:
                node = node.setdefault(part, {})
                if not isinstance(node, dict):
                    raise UserError(f"command line {self.flags[key]}: {part!r} is not a section")
            node[leaf] = value
        return out


def _parse_value(text: str) -> Any:
    # JSON first so that numbers, booleans, null and lists work; anything else is a plain string (a path).
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_overrides(tokens: list[str]) -> CommandLine:
    """``--a.b value`` / ``--a.b=value`` tokens (values read as JSON where they parse, else as strings).

    Args:
        tokens: e.g. ``["--train.micro_batch", "4", "--alum.enabled=false"]``; ``-`` in a key reads as ``_``.
    Returns:
        The keys and values; UserError for a token that is not an override or lacks its value.
    """
    out = CommandLine()
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if not token.startswith("--") or len(token) == 2:
            raise UserError(f"override {token!r}: expected --key VALUE or --section.key VALUE (e.g. --alum.alpha 2)")
        if "=" in token:
            key, value = token[2:].split("=", 1)
            i += 1
        else:
            if i + 1 >= len(tokens):
                raise UserError(f"override {token}: missing a value")
            key, value = token[2:], tokens[i + 1]
            i += 2
        key = key.replace("-", "_")
        out.set(key, _parse_value(value), f"--{key}")
    return out


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``--a.b value`` / ``--a.b=value`` override tokens to a raw config dict (a copy is returned)."""
    return parse_overrides(overrides).applied_to(raw)


# --------------------------------------------------------------------------------------------- validation


def format_error(exc: ValidationError, source: str | None = None, flags: Mapping[str, str] | None = None,
                 options: Mapping[str, str] | None = None) -> str:
    """The first error of ``exc`` as one line: where (the file, or the flag that gave the value), key, problem.

    Args:
        exc: pydantic's error.
        source: the file the values came from (None: no file; the line then starts at the key).
        flags: dotted key -> the command-line flag that set it; such a key's error names the flag instead.
        options: dotted key -> the flag that could give it, named when the key is missing.
    """
    flags = flags or {}
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
    msg = err["msg"].removeprefix("Value error, ")
    given = err.get("input")
    # A model-wide check sees the whole section (a dict) and names the keys it relates in its message.
    whole_section = err["type"] == "value_error" and isinstance(given, dict)
    flag = next((flags[k] for k in _prefixes(loc) if k in flags), None)
    if flag:  # the value came from the command line, not from the file
        where, key = f"command line {flag}", ""
    elif flags and whole_section:
        listed = ", ".join(sorted(flags.values()))
        where, key = (f"{source} with command-line overrides {listed}" if source else f"command line {listed}"), ""
    else:
        where, key = source, f"{loc}: "
    prefix = f"{where}: " if where else ""
    if err["type"] == "extra_forbidden":
        return f"{prefix}unknown key {loc!r}"
    if err["type"] == "missing":
        hint = f" (give {options[loc]})" if options and loc in options else ""
        return f"{prefix}missing required key {loc!r}{hint}"
    if whole_section:
        return f"{prefix}{msg}"
    if err["type"] == "value_error":  # a field's own check: its message already says what it got
        return f"{prefix}{key}{msg}"
    return f"{prefix}{key}{msg}{'' if isinstance(given, dict) else f' (got {given!r})'}"


def _prefixes(loc: str) -> list[str]:
    # "eps.0" (an item of a list given by --eps) is blamed on the flag of "eps".
    parts = loc.split(".")
    return [".".join(parts[:n]) for n in range(len(parts), 0, -1)]


def validate(cls: type[S], raw: dict[str, Any], source: str | None = None,
             flags: Mapping[str, str] | None = None, options: Mapping[str, str] | None = None) -> S:
    """``cls`` from ``raw``, or a one-line UserError (see ``format_error``)."""
    try:
        return cls.model_validate(raw)
    except ValidationError as exc:
        raise UserError(format_error(exc, source, flags, options)) from None


def load(cls: type[S], path: str | Path | None, command_line: CommandLine | list[str] | None = None,
         options: Mapping[str, str] | None = None) -> S:
    """Load ``cls`` from a JSON file (optional), then the command line's values on top.

    Args:
        cls: the config model.
        path: its JSON file, or None (every value from the command line and the defaults).
        command_line: parsed values, or raw ``--a.b value`` tokens.
        options: dotted key -> its flag, named in the error for a missing key.
    Returns:
        The validated config; UserError naming the file or flag and the key on any problem.
    """
    if not isinstance(command_line, CommandLine):
        command_line = parse_overrides(command_line or [])
    source = str(path) if path else None
    try:  # old names first, so that the command line's current name overrides a file's old one
        raw = rename_keys(cls, load_json(path)) if path else {}
    except ValueError as exc:
        raise UserError(f"{source}: {exc}") from None
    return validate(cls, command_line.applied_to(raw), source, command_line.flags, options)
