"""Command-line flags made from settings dataclasses: a setting is declared once, with its default and help, and is a
flag from then on (TRL's `HfArgumentParser` habit, with argparse)."""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from typing import Any


@dataclasses.dataclass(frozen=True)
class Flag:
    """One flag to make from a dataclass field.

    Args:
        field (`dataclasses.Field`): the setting; its metadata may hold ``help``, ``flag`` (the flag's name, e.g.
            ``"--name"``; a name that starts with ``--no-`` stores False), ``metavar``, ``choices``, ``nargs`` with
            ``const`` (a flag whose value may be left out) and ``switch`` (a bool given as ``--name`` alone; other
            bools take ``--no-name`` too). A `list` field is a flag given once per value.
        hint (`Any`): the field's type, resolved.
        dest (`str`): where the value goes among the parsed arguments (the recipe's flat name of the setting).
        default (`Any`): the default the help shows (the dataclass's, or the recipe's where it differs).
        suffix (`str`, *optional*): said after the help, e.g. which engines take an option.
    """

    field: dataclasses.Field
    hint: Any
    dest: str
    default: Any = None
    suffix: str = ""

    @property
    def name(self) -> str:
        """The flag as it is typed: its metadata's ``flag``, else ``--`` and `dest` with dashes (``--min-tokens``)."""
        return self.field.metadata.get("flag") or "--" + self.dest.replace("_", "-")

    def add_to(self, group: argparse._ActionsContainer) -> None:
        """Add the flag to `group`. It is left out of the parsed arguments unless it is given, so that each setting
        left out keeps its default where it is declared."""
        metadata = self.field.metadata
        flag = self.name
        text = " ".join(part for part in (metadata.get("help", ""), self._default_text(), self.suffix) if part)
        options: dict[str, Any] = {"dest": self.dest, "default": argparse.SUPPRESS, "help": text}
        kind = _value_type(self.hint)
        if flag.startswith("--no-"):
            options["action"] = "store_false"
        elif kind is bool and metadata.get("switch"):
            options["action"] = "store_true"
        elif kind is bool:
            options["action"] = argparse.BooleanOptionalAction
        elif "choices" in metadata or typing.get_origin(kind) is typing.Literal:
            options["choices"] = metadata.get("choices") or typing.get_args(kind)
        else:
            if typing.get_origin(kind) is list:  # repeatable: --decontaminate A --decontaminate B
                options["action"], kind = "append", typing.get_args(kind)[0]
            options["type"] = kind if kind in (int, float) else str
            options["metavar"] = metadata.get("metavar") or flag.removeprefix("--").replace("-", "_").upper()
            if "nargs" in metadata:  # a value that may be left out: --semantic-dedup [THRESHOLD]
                options["nargs"], options["const"] = metadata["nargs"], metadata.get("const")
        group.add_argument(flag, **options)

    def _default_text(self) -> str:
        switch = self.field.metadata.get("switch") or self.field.metadata.get("flag", "").startswith("--no-")
        if switch or self.default in (None, dataclasses.MISSING):
            return ""
        return f"(default: {self.default})"


def flags_of(
    cls: type,
    *,
    dest: Callable[[dataclasses.Field], str] = lambda field: field.name,
    defaults: Mapping[str, Any] | None = None,
    keep: Callable[[dataclasses.Field], bool] = lambda field: True,
) -> list[Flag]:
    """The flags of a settings dataclass's fields: every field but those whose metadata says ``cli=False``.

    Args:
        cls (`type`): the dataclass.
        dest (`Callable`, *optional*): a field's name among the parsed arguments (e.g. ``reward_`` + its name).
        defaults (`Mapping`, *optional*): defaults to show instead of the dataclass's, by field name.
        keep (`Callable`, *optional*): which fields to make flags of.

    Returns:
        `list[Flag]`: in the order of the fields.
    """
    hints = typing.get_type_hints(cls)
    defaults = defaults or {}
    found = []
    for field in dataclasses.fields(cls):
        if not field.init or field.name == "_" or field.metadata.get("cli") is False or not keep(field):
            continue
        default = defaults.get(field.name, field.default)
        found.append(Flag(field, hints[field.name], dest(field), default))
    return found


def add_flags(group: argparse._ActionsContainer, flags: Iterable[Flag]) -> None:
    """Add each of `flags` to `group` (an argument group of a parser)."""
    for flag in flags:
        flag.add_to(group)


def _value_type(hint: Any) -> Any:
    """The type of a setting's value: ``int`` for ``int | None``, the type itself otherwise."""
    args = [arg for arg in typing.get_args(hint) if arg is not type(None)]
    return args[0] if typing.get_origin(hint) in (typing.Union, types.UnionType) and len(args) == 1 else hint
