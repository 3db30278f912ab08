"""Models from outside expocorr (README "Add a model"): the modules named in ``train.plugins`` and the
entry points of group ``expocorr.models``.

A plugin module registers its models on import with ``expocorr.models.register`` (the built-ins'
decorator), optionally with ``arch_schema``: the JSON schema of its ``train.NAME.arch``, which
`extend_schema` puts where a built-in's is (``$defs/arch/NAME``), so the section is validated alike.
Nothing here imports torch until a plugin is loaded: without plugins, validating params stays light.
"""

from __future__ import annotations

import copy
import functools
import importlib
import re
import sys
from importlib import metadata

import jsonschema

from expocorr.errors import UserError

GROUP = "expocorr.models"
MODULE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")
NAME = re.compile(r"[a-z][a-z0-9_]{0,39}")  # goes into paths, rule and stage names, metric keys
RESERVED = {"common", "models", "plugins"}  # the other keys of the train section


class PluginError(UserError, ValueError):
    """A plugin that cannot be loaded or registers an unusable model; the message names it."""


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".rstrip(": ")


def import_modules(names: list[str]) -> None:
    """Import each module of `train.plugins` (each registers its models)."""
    for name in names:
        try:
            importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001  (a missing module, a syntax error, a name taken: one line)
            raise PluginError(f"train.plugins: cannot import plugin module {name!r} ({_reason(exc)}); is it "
                              "on PYTHONPATH or installed?") from None


@functools.lru_cache(maxsize=1)
def load_entry_points() -> None:
    """Load the `expocorr.models` entry points of the installed distributions (once per process)."""
    for entry in metadata.entry_points(group=GROUP):
        try:
            entry.load()
        except Exception as exc:  # noqa: BLE001  (as import_modules)
            raise PluginError(f"entry point {entry.name} = {entry.value} (group {GROUP}): cannot load it "
                              f"({_reason(exc)})") from None


def registered(schema: dict) -> tuple[str, ...]:
    """Names of the registered models that `schema` (params.schema.yaml) does not know, checked usable."""
    registry = sys.modules.get("expocorr.models.registry")
    if registry is None:  # no model imported yet: no plugin either
        return ()
    names = tuple(sorted(set(registry.MODELS) - set(schema["$defs"]["arch"])))
    baselines = set(schema["properties"]["evaluate"]["properties"]["baselines"]["items"]["enum"])
    for name in names:
        where = f"model {name!r} (registered by {registry.MODELS[name].__module__})"
        if not NAME.fullmatch(name):
            raise PluginError(f"{where}: a model name is 1-40 lower-case letters, digits and _, starting with a "
                              "letter (it names files, stages and metrics)")
        if name in RESERVED | baselines:
            raise PluginError(f"{where}: {name!r} is taken (a key of the train section or a baseline); choose "
                              "another name")
        fragment = registry.ARCH_SCHEMAS.get(name, {"type": "object"})
        try:
            jsonschema.Draft202012Validator.check_schema(fragment)
        except jsonschema.SchemaError as exc:
            raise PluginError(f"{where}: arch_schema is not a valid JSON schema: {exc.message}") from None
    return names


def extend_schema(schema: dict, names: tuple[str, ...]) -> dict:
    """`schema` with plugin models `names` where the built-ins are: allowed in train.models, a train.NAME
    section (required when train.models lists NAME) of the same keys, its arch under `$defs/arch/NAME`."""
    from expocorr.models.registry import ARCH_SCHEMAS

    schema = copy.deepcopy(schema)
    train = schema["properties"]["train"]
    for name in names:
        schema["$defs"]["arch"][name] = ARCH_SCHEMAS.get(name, {"type": "object"})
        train["properties"][name] = {"allOf": [{"$ref": "#/$defs/model"},
                                               {"properties": {"arch": {"$ref": f"#/$defs/arch/{name}"}}}]}
        train["properties"]["models"]["items"]["enum"].append(name)
        train.setdefault("allOf", []).append({"if": {"properties": {"models": {"type": "array",
                                                                               "contains": {"const": name}}}},
                                              "then": {"required": [name]}})
    return schema
