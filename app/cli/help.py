"""Plain help text: values named the Unix way (`TENANT_ID`, `--url URL`), flags bare.

typer (0.2x) labels every value with its Python type: `<str>` after an argument, `<bool>`
after each flag (even `--help`), `{tenant_id}` in the usage line. Those read as noise to an
operator, so the labels are replaced here, once, for every command: a parameter's `metavar`
when it has one, else its name in capitals; nothing after a flag. A test walks every
command's help to keep it so.
"""

from __future__ import annotations

from typing import Any

from typer.core import TyperArgument, TyperOption


def _argument_name(self: TyperArgument) -> str:
    return self.metavar or (self.name or "").upper()


def _argument_usage(self: TyperArgument) -> str:
    name = _argument_name(self) if self.required else f"[{_argument_name(self)}]"
    return name + ("..." if self.nargs != 1 else "")


def _argument_type(_self: TyperArgument, ctx: Any) -> str | None:  # noqa: ARG001 (typer's call)
    return None  # the name says what goes there


def _option_type(self: TyperOption, ctx: Any) -> str | None:  # noqa: ARG001 (typer's call)
    if self.metavar is not None:
        return self.metavar
    if self.is_flag or self.count:
        return None
    name = (self.name or "").upper()
    # A repeatable option takes one value each time: `--queue QUEUE`.
    return f"{name}..." if self.nargs != 1 else name


def install() -> None:
    TyperArgument.display_name_raw = property(_argument_name)  # type: ignore[method-assign,assignment]
    TyperArgument._usage_display_name = _argument_usage  # type: ignore[method-assign]
    TyperArgument.display_type_rich = _argument_type  # type: ignore[method-assign,assignment]
    TyperOption.display_type_rich = _option_type  # type: ignore[method-assign]
