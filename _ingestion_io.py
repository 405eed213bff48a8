"""Shared helpers of the stages: atomic file writes and argparse flags from a config dataclass.

Promise: `atomic_write(path, data)` writes bytes, a str or whatever a callable `write(tmp)`
writes to a temp file beside `path` and renames it over `path` (no partial file is ever seen);
`add_config_args(parser, Config, ...)` adds one `--field` flag per dataclass field with the
field's default, and `field_docs(Config)` gives the field docstrings used as --help texts;
`IngestionError` is the ingestion stage's one-line user error. data_ingestion re-exports them;
every stage below it imports them from there (demo_data and download_bucket import no project
module and keep their own writers).

No-leakage rule: none (no data passes through here).

Run alone: no CLI.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from dataclasses import fields
from pathlib import Path


class IngestionError(ValueError):
    """A user error (no usable price file, bad bar_interval); the message is one line.
    Defined here so that data_ingestion and its _ingestion_bars raise the same class."""


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
    import ast
    import inspect

    body = ast.parse(inspect.getsource(cls)).body[0].body
    return {a.target.id: " ".join(b.value.value.split()) for a, b in zip(body, body[1:], strict=False)
            if isinstance(a, ast.AnnAssign) and isinstance(b, ast.Expr) and isinstance(b.value, ast.Constant)}


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
