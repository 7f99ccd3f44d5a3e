"""What every command shares: the parser class with the one flag convention, flags generated from
settings dataclasses (the ``--push-to-hub`` options are :mod:`lmeval_layerprune.cli._hub`).

**One flag convention.** Every long option is accepted with dashes and with underscores
(``--max-steps`` and ``--max_steps``, ``--include-path`` and lm-eval's ``--include_path``), as
TRL's ``HfArgumentParser`` does; ``--help`` shows the spelling the command declares. This is done
once, in :class:`FlagParser` (every subparser inherits it), by rewriting the other spelling of a
known option before argparse sees it.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import types
import typing
from collections.abc import Callable, Sequence
from typing import Any


def _other_spellings(option: str) -> list[str]:
    body = option[2:]
    return ["--" + body.replace("_", "-"), "--" + body.replace("-", "_")]


class FlagParser(argparse.ArgumentParser):
    """An :class:`argparse.ArgumentParser` that accepts ``--a-b`` and ``--a_b`` for every long option."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.long_options: set[str] = set()
        super().__init__(*args, **kwargs)

    def _track(self, container: Any) -> Any:
        add = container.add_argument

        def add_argument(*args: Any, **kwargs: Any) -> argparse.Action:
            action = add(*args, **kwargs)
            self.long_options.update(o for o in action.option_strings if o.startswith("--"))
            return action

        container.add_argument = add_argument
        return container

    def add_argument(self, *args: Any, **kwargs: Any) -> argparse.Action:  # type: ignore[override]
        action = super().add_argument(*args, **kwargs)
        self.long_options.update(o for o in action.option_strings if o.startswith("--"))
        return action

    def add_argument_group(self, *args: Any, **kwargs: Any) -> Any:
        return self._track(super().add_argument_group(*args, **kwargs))

    def add_mutually_exclusive_group(self, *args: Any, **kwargs: Any) -> Any:
        return self._track(super().add_mutually_exclusive_group(*args, **kwargs))

    def normalise(self, argv: Sequence[str]) -> list[str]:
        """``argv`` with each long option in the spelling this parser declared."""
        out: list[str] = []
        for i, tok in enumerate(argv):
            if tok == "--":
                out.extend(argv[i:])
                break
            if tok.startswith("--") and len(tok) > 2:
                name, eq, value = tok.partition("=")
                if name not in self.long_options:
                    name = next((alt for alt in _other_spellings(name) if alt in self.long_options), name)
                tok = name + eq + value
            out.append(tok)
        return out

    def parse_known_args(self, args: Sequence[str] | None = None, namespace: Any = None) -> Any:  # type: ignore[override]
        args = sys.argv[1:] if args is None else list(args)
        return super().parse_known_args(self.normalise(args), namespace)


# ------------------------------------------------------------ dataclass flags


def _comma_list(item: Callable[[str], Any]) -> Callable[[str], tuple[Any, ...]]:
    def parse(text: str) -> tuple[Any, ...]:
        return tuple(item(p.strip()) for p in text.split(",") if p.strip())

    parse.__name__ = f"comma-separated {getattr(item, '__name__', 'value')} list"
    return parse


def _flag_type(hint: Any) -> tuple[Callable[[str], Any] | None, bool]:
    """(argparse ``type``, is_bool) for a field's type hint; ``X | None`` is ``X``."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return _flag_type(args[0]) if len(args) == 1 else (str, False)
    if hint is bool:
        return None, True
    if origin in (tuple, list):
        args = [a for a in typing.get_args(hint) if a is not Ellipsis]
        return _comma_list(args[0] if args else str), False
    if hint in (int, float, str):
        return hint, False
    return str, False


def _show(default: Any) -> str:
    if isinstance(default, tuple | list):
        return ",".join(map(str, default)) or "''"
    return str(default)


def add_dataclass_flags(
    parser: argparse.ArgumentParser,
    cls: type,
    *,
    help: dict[str, str] | None = None,
    choices: dict[str, Sequence[Any]] | None = None,
    exclude: Sequence[str] = (),
    positional: Sequence[str] = (),
) -> list[str]:
    """Add one flag per field of the dataclass ``cls`` (``--field-name``, typed and defaulted from the
    field; tuples are comma-separated lists), as TRL's ``HfArgumentParser`` does. Fields in
    ``positional`` become positional arguments. Returns the field names added."""
    hints = typing.get_type_hints(cls)
    help = help or {}
    choices = choices or {}
    added = []
    for f in dataclasses.fields(cls):
        if f.name in exclude or not f.init:
            continue
        kind, is_bool = _flag_type(hints[f.name])
        default = f.default
        if default is dataclasses.MISSING and f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        text = help.get(f.name) or f.metadata.get("help", "")
        if f.name in positional:
            parser.add_argument(f.name, type=kind, help=text)
        elif is_bool:
            parser.add_argument(
                f"--{f.name.replace('_', '-')}", dest=f.name, action=argparse.BooleanOptionalAction,
                default=default, help=text,
            )  # fmt: skip
        else:
            required = default is dataclasses.MISSING
            shown = "" if required or default is None or "default:" in text else f" (default: {_show(default)})"
            parser.add_argument(
                f"--{f.name.replace('_', '-')}",
                dest=f.name,
                type=kind,
                default=None if required else default,
                required=required,
                choices=choices.get(f.name),
                help=(text + shown).strip() or None,
            )
        added.append(f.name)
    return added


def dataclass_from_args(cls: type, args: argparse.Namespace, **overrides: Any) -> Any:
    """An instance of ``cls`` from the parsed flags of :func:`add_dataclass_flags`."""
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if f.init and hasattr(args, f.name)}
    values.update(overrides)
    return cls(**values)
