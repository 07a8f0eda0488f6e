"""finetune's command-line flags and options reference, generated from the models in ``finetune.config``.

One flag per field: ``--field-name`` (``_`` as ``-``), the field's docstring as its help, its type, choices and
bounds from the annotation (a number out of range or nan/inf is refused by argparse, naming the flag); a
nested section's fields as ``--<section>-<name>`` (``--alum-eps``); booleans as ``--name`` / ``--no-name``.
``SPELLINGS`` adds the names a model cannot derive: ``-o``, ``--alum`` for ``alum.enabled`` and the old
spellings ``--max-grad-norm`` / ``--log-every``. Only flags the user typed override ``--config``; tokens left
over (``--alum.eps 0.1``, ``--clip_grad 0.5``) are ``--key value`` overrides, as for ``pretrain train``.
"""

from __future__ import annotations

import argparse
import math
import types
import typing
from pathlib import Path
from typing import Any, Literal

import annotated_types
from pydantic import BaseModel

from pretrain.config_base import CommandLine, Section, load, parse_overrides
from pretrain.config_docs import section_table

# Extra spellings by dotted key; the first one listed replaces the generated name.
SPELLINGS: dict[str, list[str]] = {
    "output_dir": ["-o", "--output-dir"],
    "output": ["-o", "--output"],
    "alum.enabled": ["--alum"],  # the switch users know; --no-alum turns it off again
    "clip_grad": ["--clip-grad", "--max-grad-norm"],  # --max-grad-norm: the name before it followed pretrain's
    "log_interval": ["--log-interval", "--log-every"],  # --log-every: likewise
}


def leaf_fields(model: type[BaseModel], prefix: str = "") -> list[tuple[str, Any]]:
    """``(dotted key, FieldInfo)`` of every option of ``model``, nested sections' fields included."""
    out = []
    for name, info in model.model_fields.items():
        if isinstance(info.annotation, type) and issubclass(info.annotation, Section):
            out += leaf_fields(info.annotation, f"{prefix}{name}.")
        else:
            out.append((f"{prefix}{name}", info))
    return out


def flag_names(key: str) -> list[str]:
    """The flags that set ``key`` (``alum.step_size`` -> ``--alum-step-size``)."""
    return SPELLINGS.get(key, [f"--{key.replace('.', '-').replace('_', '-')}"])


def _number(kind: type, metadata: list) -> typing.Callable[[str], Any]:
    """An argparse ``type``: a finite ``kind`` within the field's bounds; nan/inf are refused."""
    bounds = []
    for m in metadata:
        for attr, sign, ok in (("ge", "≥", lambda v, b: v >= b), ("gt", ">", lambda v, b: v > b),
                               ("le", "≤", lambda v, b: v <= b), ("lt", "<", lambda v, b: v < b)):
            if isinstance(m, getattr(annotated_types, attr.capitalize())):
                bounds.append((sign, getattr(m, attr), ok))
    wanted = f"a finite {kind.__name__}" + "".join(f" {sign} {b:g}" for sign, b, _ in bounds[:1]) + \
        "".join(f" and {sign} {b:g}" for sign, b, _ in bounds[1:])

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not math.isfinite(value) or not all(ok(value, b) for _, b, ok in bounds):
            raise argparse.ArgumentTypeError(f"expected {wanted}, got {text!r}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


def _split_commas(text: str) -> list[str]:
    return [part for part in text.split(",") if part]


class _Given(argparse.Action):
    """Stores the value under ``given`` with the flag as typed: only typed flags override ``--config``, and an
    error in one names the spelling the user used."""

    def __init__(self, option_strings, dest, switch: bool = False, **kwargs):
        self.switch = switch
        if switch:  # --name / --no-name
            option_strings = [*option_strings, *(f"--no-{s[2:]}" for s in option_strings if s.startswith("--"))]
            kwargs["nargs"] = 0
        super().__init__(option_strings, dest, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        if self.switch:
            values = not option_string.startswith("--no-")
        elif isinstance(values, list) and values and isinstance(values[0], list):  # comma-separated items
            values = [item for part in values for item in part]
        given = {**getattr(namespace, "given", {}), self.dest: (values, option_string)}
        namespace.given = given


def _add_flag(group, key: str, info) -> None:
    annotation, metadata = info.annotation, list(info.metadata)
    args = typing.get_args(annotation)
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        annotation = next(a for a in args if a is not type(None))  # a flag cannot say None: leave it out
        args = typing.get_args(annotation)
    default = None if info.is_required() else info.get_default(call_default_factory=True)
    text = (info.description or "").replace("``", "").replace("%", "%%")  # argparse formats help with %
    text += " (required)" if info.is_required() else f" (default: {default})" if default is not None else ""
    kwargs: dict[str, Any] = {"help": text, "dest": key, "metavar": key.split(".")[-1].upper()}
    if typing.get_origin(annotation) is list:
        item, item_meta = args[0], []
        if typing.get_origin(item) is typing.Annotated:  # list[Annotated[float, Field(ge=0)]]: bounds per item
            item, *fields = typing.get_args(item)
            item_meta = [m for f in fields for m in getattr(f, "metadata", [f])]
        kwargs |= {"nargs": "+", "type": _split_commas if item is str else _number(item, item_meta)}
        if item is str:
            kwargs["help"] += " Comma- or space-separated."
    elif annotation is bool:
        kwargs |= {"switch": True, "metavar": None}
    elif typing.get_origin(annotation) is Literal:
        kwargs |= {"choices": args, "metavar": None}  # argparse then lists the choices
    elif annotation in (int, float):
        kwargs["type"] = _number(annotation, metadata)
    elif annotation not in (str, Path):
        raise TypeError(f"{key}: no flag type for {annotation!r}; add one to finetune.flags._add_flag")
    group.add_argument(*flag_names(key), action=_Given, **kwargs)


def add_option_flags(parser: argparse.ArgumentParser, model: type[BaseModel]) -> None:
    """``--config`` and one flag per option of ``model``; nested sections get an argument group each."""
    parser.add_argument("--config", help="JSON file with any of the options below (flags override it)")
    groups: dict[str, Any] = {}
    for key, info in leaf_fields(model):
        section = key.split(".")[0] if "." in key else ""
        if section and section not in groups:
            sub = model.model_fields[section]
            groups[section] = parser.add_argument_group(section, (sub.description or "").replace("``", ""))
        _add_flag(groups.get(section, parser), key, info)
    parser.add_argument("--local_rank", "--local-rank", type=int, default=-1, help=argparse.SUPPRESS)
    nested = f" or --section.key VALUE (--{next(iter(groups))}.<key> VALUE)" if groups else ""
    parser.epilog = f"Any option can also be given as --key VALUE{nested}."


def options_from(model: type[Section], args: argparse.Namespace, rest: list[str]) -> Section:
    """The options ``args`` (from ``add_option_flags``) and the left-over ``--key value`` tokens describe.

    Raises:
        UserError: naming the file, or the flag that gave the value, and the key.
    """
    typed = CommandLine()
    for key, (value, flag) in getattr(args, "given", {}).items():
        typed.set(key, value, flag)
    spelled = {key: next(f for f in flag_names(key) if f.startswith("--")) for key, _ in leaf_fields(model)}
    return load(model, args.config, typed.merged(parse_overrides(rest)), spelled)


# --------------------------------------------------------------------------------------------- reference

START = "<!-- finetune-reference:start (generated by `python -m finetune config-reference`) -->"
END = "<!-- finetune-reference:end -->"


def reference_markdown() -> str:
    """Tables of the options of classify and qa (shared, then each one's own), attack, text-attack and ALUM,
    with their flags."""
    from finetune.config import (
        AttackOptions,
        ClassifyOptions,
        FinetuneAlumSection,
        QAOptions,
        TableColumns,
        TextAttackOptions,
        TrainOptions,
    )

    def own(model: type[BaseModel], *bases: type[BaseModel]) -> list[str]:
        # A field is listed under the model that adds it or changes its default (qa's max_seq_len, lr, ...).
        return [n for n, f in model.model_fields.items()
                if not any(n in b.model_fields and repr(b.model_fields[n]) == repr(f) for b in bases)]

    shared = [n for n in TrainOptions.model_fields if n != "alum"]
    lines = [START, ""]
    lines += section_table("classify, qa", TrainOptions, names=shared, flags=flag_names)
    lines += section_table("classify", ClassifyOptions, names=own(ClassifyOptions, TrainOptions), flags=flag_names)
    lines += section_table("qa", QAOptions, names=own(QAOptions, TrainOptions), flags=flag_names)
    lines += section_table("attack", AttackOptions, names=own(AttackOptions, TableColumns) + own(TableColumns),
                           flags=flag_names)
    lines += section_table("text-attack", TextAttackOptions, names=own(TextAttackOptions, TableColumns)
                           + own(TableColumns), flags=flag_names)
    lines += section_table("alum", FinetuneAlumSection, prefix="alum.", flags=flag_names)
    lines.append(END)
    return "\n".join(lines)
