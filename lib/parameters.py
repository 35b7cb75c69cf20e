"""One source of truth for a step's parameters: a dataclass whose fields carry their help.

A step (evaluate, bias, report) declares its parameters once, as a dataclass of ``param`` fields;
from it come the step's command line (``python -m lib.<step> key=value ...``, ``--help`` listing
every field with its default and help), the parameters cell of its notebook (``--notebook-parameters``,
kept in sync by ``tests/test_parameters.py``) and the configuration read back from a notebook's
namespace. ``lib.train.TrainConfig`` is declared the same way (with ``section`` titles).

    @dataclass
    class BiasConfig:
        top_k: int = param(10, "the top-k whose languages are counted")

    config = parse_command_line(BiasConfig, "python -m lib.bias", "Language bias of runs.")
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
from pathlib import Path
from typing import Any, Sequence, TypeVar

from lib.io import parse_override, read_yaml_mapping


Config = TypeVar("Config")
PROFILE_LINE = 'profile = os.environ.get("HBT_PROFILE", "full")  # "smoke": the small CI profile'


def param(default: Any, help: str, smoke: Any = dataclasses.MISSING, section: str | None = None) -> Any:
    """A field with its help text and, optionally, its value in the notebooks' CI profile
    (``HBT_PROFILE=smoke``) and the title of the section it opens, all read by ``--help`` and by
    the generated parameters cell."""
    metadata = ({"help": help} | ({} if smoke is dataclasses.MISSING else {"smoke": smoke})
                | ({"section": section} if section else {}))
    return dataclasses.field(default=default, metadata=metadata)


def _literal(value: Any) -> str:
    return json.dumps(value) if isinstance(value, str) else repr(value)


def fields_help(cls: type) -> str:
    """Every field as ``name=default`` and its help (``smoke`` value too), by section, for ``--help``."""
    lines = []
    for f in dataclasses.fields(cls):
        if "section" in f.metadata:
            lines.append(f"{f.metadata['section']}:")
        smoke = f" (smoke profile: {f.metadata['smoke']!r})" if "smoke" in f.metadata else ""
        lines.append(f"  {f.name}={f.default!r}{smoke}\n      {f.metadata['help']}")
    return "\n".join(lines)


def notebook_parameters(cls: type) -> str:
    """A notebook's parameters cell: one plain constant per field (its default, or
    ``{"full": default, "smoke": value}[profile]``), commented with its help."""
    lines = ["import os", "", PROFILE_LINE, ""]
    for number, f in enumerate(dataclasses.fields(cls)):
        if "section" in f.metadata:
            lines += ([""] if number else []) + [f"# {f.metadata['section']}"]
        value = _literal(f.default)
        if "smoke" in f.metadata:
            value = f'{{"full": {value}, "smoke": {_literal(f.metadata["smoke"])}}}[profile]'
        lines.append(f"{f.name} = {value}".ljust(34) + f"  # {f.metadata['help']}")
    return "\n".join(lines)


def from_namespace(cls: type[Config], namespace: dict[str, Any]) -> Config:
    """The fields found in ``namespace`` (a notebook's ``globals()`` after its parameters cell)."""
    return cls(**{f.name: namespace[f.name] for f in dataclasses.fields(cls) if f.name in namespace})


def from_overrides(cls: type[Config], path: str | Path | None = None, overrides: Sequence[str] = ()) -> Config:
    """A YAML (or JSON) file of fields, then ``key=value`` overrides (values parsed as YAML). A text
    field (default a string) takes null as empty and a list as its comma-separated form."""
    values: dict[str, Any] = {}
    if path:
        if not Path(path).is_file():
            raise ValueError(f"--config {path}: no such file; give a YAML file of {cls.__name__} fields")
        values = read_yaml_mapping(path, f"{cls.__name__} fields")
    for item in overrides:
        try:
            key, value = parse_override(item)
        except ValueError as error:
            raise ValueError(f"override {error}") from None
        values[key] = value
    text = {f.name for f in dataclasses.fields(cls) if isinstance(f.default, str)}
    known = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(values) - set(known))
    if unknown:
        close = {name: difflib.get_close_matches(name, known, n=1) for name in unknown}
        hints = "; ".join(f"{name}: did you mean {match[0]}?" for name, match in close.items() if match)
        raise ValueError(f"unknown {cls.__name__} parameters {unknown}" + (f" ({hints})" if hints else "")
                         + "; every parameter is listed by --help")
    for name in text & set(values):
        if values[name] is None:
            values[name] = ""
        elif isinstance(values[name], (list, tuple)):
            values[name] = ",".join(str(v) for v in values[name])
    return cls(**values)


def parse_command_line(cls: type[Config], prog: str, description: str,
                       argv: Sequence[str] | None = None) -> Config | None:
    """``prog [--config file.yaml] [key=value ...]``; ``--help`` lists every field with its default;
    ``--notebook-parameters`` prints the notebook's parameters cell and returns None."""
    parser = argparse.ArgumentParser(prog=prog, description=description + " Every parameter can be set as key=value.",
                                     epilog="parameters (key=default, help):\n" + fields_help(cls),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help=f"YAML file of {cls.__name__} fields")
    parser.add_argument("overrides", nargs="*", help="key=value (values read as YAML)")
    parser.add_argument("--notebook-parameters", action="store_true",
                        help="print the notebook's parameters cell (generated from the fields) and exit")
    args = parser.parse_args(argv)
    if args.notebook_parameters:
        print(notebook_parameters(cls))
        return None
    return from_overrides(cls, args.config, args.overrides)
