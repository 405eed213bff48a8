"""Helpers every stage shares: one user-error class, atomic writes, argparse flags from a config
dataclass, and the device choice.

Promise: `atomic_write(path, data)` writes bytes, a str or whatever a callable `write(tmp)` writes
to a temp file beside `path` and renames it over `path`, so no reader ever sees a partial file;
`add_config_args(parser, Config, ...)` adds one `--field` flag per dataclass field with the
field's default (and its docstring as the help text, `field_docs`); `resolve_device(name)` turns
cpu | cuda | auto into "cpu" or "cuda"; `UserError` is the error a user can fix. This module
imports no project module (every stage may import it) and imports torch only inside
`resolve_device`.

No-leakage rule: none (no data passes through here).

Run alone: no CLI.
"""

from __future__ import annotations

import argparse
import ast
import inspect
import os
import tempfile
from dataclasses import fields
from pathlib import Path

__all__ = ["UserError", "atomic_write", "field_docs", "add_config_args", "resolve_device"]


class UserError(ValueError):
    """An error the user can fix (a bad flag, a missing or unusable input), with a one-line
    message. Every CLI turns it into that one line on stderr and exit status 2, never a
    traceback. Stages subclass it (data_ingestion.IngestionError)."""


def atomic_write(path: str | os.PathLike, data) -> Path:
    """Write `data` (bytes, str, or a callable `write(tmp_path)`) to a temp file beside `path`,
    then os.replace it over `path`: a reader never sees a partial file. Returns `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; outputs are meant to be read
        if callable(data):
            data(tmp)
        else:
            tmp.write_bytes(data.encode() if isinstance(data, str) else bytes(data))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def field_docs(cls) -> dict[str, str]:
    """{field: the docstring literal under it} of a config dataclass (the --help texts)."""
    body = ast.parse(inspect.getsource(cls)).body[0].body
    return {a.target.id: " ".join(b.value.value.split()) for a, b in zip(body, body[1:], strict=False)
            if isinstance(a, ast.AnnAssign) and isinstance(b, ast.Expr)
            and isinstance(b.value, ast.Constant)}


def add_config_args(parser: argparse.ArgumentParser, cls, help_suffix: str | None = None,
                    bool_action: str | type = "store_true", **overrides: dict) -> None:
    """One `--{field}` flag per field of dataclass `cls`, default = the field's default, type =
    the annotation's (`float | None` -> float), bools a `bool_action` switch. help_suffix None:
    no help; else the field docstring + help_suffix (e.g. " (default: %(default)s)").
    overrides: {field: extra add_argument kwargs} (type, choices, required)."""
    docs = field_docs(cls) if help_suffix is not None else {}
    for f in fields(cls):
        kind = f.type if isinstance(f.type, str) else f.type.__name__
        kw = {"default": f.default}
        if help_suffix is not None:
            kw["help"] = docs.get(f.name, "").replace("%", "%%") + help_suffix
        if kind == "bool":
            kw["action"] = bool_action
        else:
            kw["type"] = {"int": int, "float": float, "str": str}[kind.split(" | ")[0]]
        parser.add_argument(f"--{f.name}", **kw | overrides.get(f.name, {}))


def resolve_device(name: str) -> str:
    """cpu | cuda | auto -> "cpu" or "cuda" (auto: cuda when torch sees a CUDA device). UserError
    for any other name, and for cuda when no CUDA device is available."""
    if name not in ("cpu", "cuda", "auto"):
        raise UserError(f"--device must be cpu, cuda or auto, got {name!r}")
    if name == "cpu":
        return "cpu"
    import torch  # lazy: only the stages that train or score need it

    if torch.cuda.is_available():
        return "cuda"
    if name == "cuda":
        raise UserError("--device cuda requested but no CUDA device is available: "
                        "use --device cpu or auto")
    return "cpu"
