"""One source of truth for a step's parameters: a dataclass whose fields carry their help.

A step declares its parameters once, as a dataclass of ``param`` fields (``help`` and, where the
small CI profile differs, ``smoke``); from it come the step's command line (``python -m lib.<step>
key=value ...``, ``--help`` listing every field with its default and help), the parameters cell
of its notebook (plain constants, one per field, written by ``scripts/sync_parameters.py``) and
the configuration read back from a notebook's namespace.

The smoke profile (``HBT_PROFILE=smoke``: tiny backbone, few steps) is the table
``smoke_values(cls)``, read from the fields' metadata, and applied in one place:
``profile_values`` gives it to the command lines (``parse_command_line``, ``lib.train``) and
``notebook_config`` to the notebooks, in the cell after the parameters cell. There it also refuses
a parameter papermill injected that the notebook does not declare (papermill itself only warns).

    @dataclass
    class BiasConfig:
        top_k: int = param(10, "the top-k whose languages are counted")

    config = parse_command_line(BiasConfig, "python -m lib.bias", "Language bias of runs.")
    config = notebook_config(BiasConfig, globals())      # in a notebook, after its parameters cell
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import difflib
import json
import os
from pathlib import Path
from typing import Any, Sequence, TypeVar

from lib.io import parse_override, read_yaml_mapping
from lib.validation import ParameterError


Config = TypeVar("Config")
PROFILE_VARIABLE = "HBT_PROFILE"
PROFILES = ("full", "smoke")
# the first line of the cell papermill injects after the parameters cell (its translator's comment)
INJECTED_HEADER = "# Parameters"


def param(default: Any, help: str, smoke: Any = dataclasses.MISSING, section: str | None = None) -> Any:
    """A field with its help text and, optionally, its value in the notebooks' CI profile
    (``HBT_PROFILE=smoke``) and the title of the section it opens, all read by ``--help`` and by
    the generated parameters cell."""
    metadata = ({"help": help} | ({} if smoke is dataclasses.MISSING else {"smoke": smoke})
                | ({"section": section} if section else {}))
    return dataclasses.field(default=default, metadata=metadata)


def _literal(value: Any) -> str:
    return json.dumps(value) if isinstance(value, str) else repr(value)


PROFILE_HELP = (f"\n\n{PROFILE_VARIABLE}=smoke (environment) starts from the smoke profile's values instead of "
                "the defaults; a file or key=value still overrides them.")


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
    """A notebook's parameters cell: one plain constant per field (its default), commented with its
    help, in sections; papermill reads it as it is (``papermill --help-notebook``)."""
    lines = []
    for number, f in enumerate(dataclasses.fields(cls)):
        if "section" in f.metadata:
            lines += ([""] if number else []) + [f"# {f.metadata['section']}"]
        lines.append(f"{f.name} = {_literal(f.default)}".ljust(34) + f"  # {f.metadata['help']}")
    return "\n".join(lines)


def active_profile() -> str:
    """``HBT_PROFILE`` (full when unset): ``smoke`` is the small CI profile."""
    profile = os.environ.get(PROFILE_VARIABLE, "") or "full"
    if profile not in PROFILES:
        raise ParameterError(f"{PROFILE_VARIABLE}={profile!r}: expected one of {list(PROFILES)}; "
                             "unset it for the full profile")
    return profile


def smoke_values(cls: type) -> dict[str, Any]:
    """The smoke profile of a step: the fields whose ``smoke`` value replaces their default."""
    return {f.name: f.metadata["smoke"] for f in dataclasses.fields(cls) if "smoke" in f.metadata}


def profile_values(cls: type, profile: str | None = None) -> dict[str, Any]:
    """The values ``profile`` (default ``HBT_PROFILE``) puts in place of the defaults: none for full."""
    return smoke_values(cls) if (profile or active_profile()) == "smoke" else {}


class UnknownParameterError(ParameterError):
    """A parameter a notebook does not declare; shown by IPython as its one-line message."""

    def _render_traceback_(self) -> list[str]:      # IPython prints this instead of the traceback
        return [f"{type(self).__name__}: {self}"]


def unknown_parameters_message(cls: type, names: Sequence[str], where: str = "") -> str | None:
    """The error for ``names`` that are not fields of ``cls`` (each with its closest field), or None."""
    known = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(names) - set(known))
    if not unknown:
        return None
    close = {name: difflib.get_close_matches(name, known, n=1) for name in unknown}
    hints = "; ".join(f"{name}: did you mean {match[0]}?" for name, match in close.items() if match)
    return (f"unknown {cls.__name__} parameters {unknown}{where}" + (f" ({hints})" if hints else "")
            + "; every parameter is listed by --help and in the notebook's parameters cell")


def injected_names(namespace: dict[str, Any]) -> set[str]:
    """Names assigned by the cell papermill injected (``# Parameters`` first), found in the kernel's
    input history (IPython's ``In``); empty where nothing was injected."""
    names: set[str] = set()
    for source in namespace.get("In", []) or []:
        if isinstance(source, str) and source.lstrip().startswith(INJECTED_HEADER):
            for node in ast.parse(source).body:
                targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
                names |= {t.id for t in targets if isinstance(t, ast.Name)}
    return names


def notebook_config(cls: type[Config], namespace: dict[str, Any], profile: str | None = None) -> Config:
    """A notebook's configuration, read from its namespace after the parameters cell (``globals()``).

    1. A name papermill injected that is not a field of ``cls`` is refused (one-line error naming
       the closest field), before anything is loaded.
    2. ``profile`` (default ``HBT_PROFILE``) replaces the defaults that were neither injected nor
       changed in the parameters cell with its values (``smoke_values``).
    3. The resolved values are written back into ``namespace``, so later cells see what runs.
    """
    injected = injected_names(namespace)
    message = unknown_parameters_message(cls, injected, " injected by papermill")
    if message:
        raise UnknownParameterError(message)
    defaults = {f.name: f.default for f in dataclasses.fields(cls)}
    values = {name: namespace[name] for name in defaults if name in namespace}
    for name, value in profile_values(cls, profile).items():
        if name not in injected and values.get(name, defaults[name]) == defaults[name]:
            values[name] = value
    config = cls(**values)
    namespace.update({name: getattr(config, name) for name in defaults})
    return config


def from_namespace(cls: type[Config], namespace: dict[str, Any]) -> Config:
    """The fields found in ``namespace`` (a notebook's ``globals()`` after its parameters cell)."""
    return cls(**{f.name: namespace[f.name] for f in dataclasses.fields(cls) if f.name in namespace})


def from_overrides(cls: type[Config], path: str | Path | None = None, overrides: Sequence[str] = (),
                   profile: str = "full") -> Config:
    """The ``profile``'s values (``profile_values``; none for full), then a YAML (or JSON) file of
    fields, then ``key=value`` overrides (values parsed as YAML). A text field (default a string)
    takes null as empty and a list as its comma-separated form."""
    values: dict[str, Any] = dict(profile_values(cls, profile))
    if path:
        if not Path(path).is_file():
            raise ValueError(f"--config {path}: no such file; give a YAML file of {cls.__name__} fields")
        values.update(read_yaml_mapping(path, f"{cls.__name__} fields"))
    for item in overrides:
        try:
            key, value = parse_override(item)
        except ValueError as error:
            raise ValueError(f"override {error}") from None
        values[key] = value
    text = {f.name for f in dataclasses.fields(cls) if isinstance(f.default, str)}
    message = unknown_parameters_message(cls, list(values))
    if message:
        raise ValueError(message)
    for name in text & set(values):
        if values[name] is None:
            values[name] = ""
        elif isinstance(values[name], (list, tuple)):
            values[name] = ",".join(str(v) for v in values[name])
    return cls(**values)


def parse_command_line(cls: type[Config], prog: str, description: str,
                       argv: Sequence[str] | None = None) -> Config | None:
    """``prog [--config file.yaml] [key=value ...]``, over the ``HBT_PROFILE`` profile's values;
    ``--help`` lists every field with its default; ``--notebook-parameters`` prints the notebook's
    parameters cell and returns None."""
    parser = argparse.ArgumentParser(prog=prog, description=description + " Every parameter can be set as key=value.",
                                     epilog="parameters (key=default, help):\n" + fields_help(cls) + PROFILE_HELP,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help=f"YAML file of {cls.__name__} fields")
    parser.add_argument("overrides", nargs="*", help="key=value (values read as YAML)")
    parser.add_argument("--notebook-parameters", action="store_true",
                        help="print the notebook's parameters cell (generated from the fields) and exit")
    args = parser.parse_args(argv)
    if args.notebook_parameters:
        print(notebook_parameters(cls))
        return None
    return from_overrides(cls, args.config, args.overrides, profile=active_profile())
