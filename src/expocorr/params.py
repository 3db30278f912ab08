"""Load params.yaml and validate it against the schema both engines share."""

from __future__ import annotations

import functools
import math
import os
import stat
from importlib import resources
from pathlib import Path

import jsonschema
import yaml

from expocorr import plugins
from expocorr.errors import UserError, printable

SCHEMA_NAME = "params.schema.yaml"
# The `evaluate` keys every evaluation reads (the scoring protocol): what each evaluate stage declares, so
# that adding a baseline or an external method (evaluate.baselines, evaluate.external) reruns no other one.
EVALUATE_PROTOCOL = ("extra_sets", "unpaired_sets", "headline_reference", "y_channel", "gt_mean", "psnr_cap",
                     "n_examples", "device", "noref")
MAX_BYTES = 1 << 20  # params.yaml is about 20 kB
MAX_DEPTH = 16  # params.yaml nests 6 levels (train.msec.arch.adv_epochs.0.0)


class ParamsError(UserError, ValueError):
    """Invalid parameters; the message names the key path."""


# libyaml's loader when PyYAML has it (ten times faster); the plain-data check uses the pure-Python parser,
# whose events arrive one at a time (libyaml scans up to 1000 nesting levels ahead).
FAST_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def schema() -> dict:
    """The JSON schema of params.yaml (shipped with the package)."""
    return yaml.load(resources.files("expocorr").joinpath(SCHEMA_NAME).read_text(), Loader=FAST_LOADER)


@functools.lru_cache(maxsize=1)
def _schema() -> dict:
    return schema()


@functools.lru_cache(maxsize=4)
def _validator(plugin_models: tuple[str, ...] = ()) -> jsonschema.Draft202012Validator:
    """The schema's validator, with the plugin models `plugin_models` validated as the built-ins are."""
    return jsonschema.Draft202012Validator(plugins.extend_schema(_schema(), plugin_models) if plugin_models
                                           else _schema())


def _load_plugins(params: dict, source: str) -> tuple[str, ...]:
    """Import the modules of train.plugins and the `expocorr.models` entry points; the plugin model names.
    A malformed train.plugins imports nothing here: the schema then names what is wrong with it."""
    train = params.get("train") if isinstance(params, dict) else None
    listed = train.get("plugins") if isinstance(train, dict) else None
    try:
        if isinstance(listed, list) and all(isinstance(n, str) and plugins.MODULE.fullmatch(n) for n in listed):
            plugins.import_modules(listed)
        plugins.load_entry_points()
        return plugins.registered(_schema())
    except plugins.PluginError as exc:
        raise ParamsError(f"{source}: {exc}") from None


def _key_path(error: jsonschema.ValidationError) -> str:
    return ".".join(printable(p) for p in error.absolute_path) or "<top level>"


def _describe(error: jsonschema.ValidationError) -> str:
    """One line naming the key path, the offending value and what is allowed."""
    path, kind, sub = _key_path(error), error.validator, error.validator_value
    if kind == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(allowed))
        where = f"{path}." if error.absolute_path else ""
        return f"{where}{printable(extra[0])}: unknown key; allowed keys here: {', '.join(allowed)}"
    if kind == "required":
        missing = [k for k in sub if k not in error.instance]
        where = f"{path}." if error.absolute_path else ""
        return f"{where}{missing[0]}: missing required key"
    if kind == "enum":
        return f"{path}: {error.instance!r} is not allowed; allowed values: {', '.join(map(str, sub))}"
    if kind == "type":
        want = " or ".join(sub) if isinstance(sub, list) else sub
        return f"{path}: expected {want}, got {type(error.instance).__name__} {error.instance!r}"
    if kind in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"):
        op = {"minimum": ">=", "exclusiveMinimum": ">", "maximum": "<=", "exclusiveMaximum": "<"}[kind]
        bounds = _bounds(error.schema)
        return f"{path}: {error.instance!r} is out of range; allowed: {op} {sub}{bounds}"
    if kind == "minItems":
        return f"{path}: needs at least {sub} item(s), got {len(error.instance)}"
    if kind == "uniqueItems":
        return f"{path}: items must be unique, got {error.instance!r}"
    if kind == "pattern":
        return f"{path}: {error.instance!r} does not match the allowed pattern {sub}"
    if kind == "minLength":
        return f"{path}: must not be empty"
    return f"{path}: {error.message}"


def _bounds(subschema: dict) -> str:
    lo = subschema.get("minimum", subschema.get("exclusiveMinimum"))
    hi = subschema.get("maximum", subschema.get("exclusiveMaximum"))
    return f" (range {lo} .. {hi})" if lo is not None and hi is not None else ""


def validate(params: dict, source: str = "params.yaml") -> dict:
    """Raise ParamsError (one line, naming the key path) unless `params` is valid. The plugin modules of
    train.plugins are imported first (`expocorr.plugins`): their models' sections are validated too."""
    validator = _validator(_load_plugins(params, source))
    error = jsonschema.exceptions.best_match(validator.iter_errors(params), key=_depth_first)
    if error is not None:
        raise ParamsError(f"{source}: {_describe(error)}")
    _check_semantics(params, source)
    return params


def _depth_first(error: jsonschema.ValidationError):
    # Prefer the most specific (deepest) error so the message names the leaf key (best_match takes the max).
    return (len(error.absolute_path),) + jsonschema.exceptions.relevance(error)


def _non_finite(node, path: str = "") -> str | None:
    """Key path of the first NaN or infinite number (YAML .nan/.inf pass every JSON-schema bound check)."""
    if isinstance(node, float) and not math.isfinite(node):
        return path or "<top level>"
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in items:
        found = _non_finite(value, f"{path}.{printable(key)}" if path else printable(key))
        if found:
            return found
    return None


def _check_semantics(params: dict, source: str) -> None:
    from expocorr import checkpoints

    bad = _non_finite(params)
    if bad:
        raise ParamsError(f"{source}: {bad}: must be a finite number")
    for name, entry in params["pretrained"].items():
        try:
            checkpoints.resolve(name, entry)
        except checkpoints.PretrainedError as exc:
            raise ParamsError(f"{source}: {exc}") from None
    data = params["data"]
    if data["source"] in ("folder", "raw") and not data["folder"]:
        raise ParamsError(f"{source}: data.folder: required when data.source is {data['source']!r}")
    if data["source"] == "url":
        missing = [f"data.{key}" for key in ("url", "sha256") if not data[key]]
        if missing:
            raise ParamsError(
                f"{source}: {' and '.join(missing)}: required when data.source is 'url' (both data.url and data.sha256)"
            )
    if data["source"] == "stacks":
        if not (data["folder"] or data["url"] or data["stacks"]["preset"]):
            raise ParamsError(f"{source}: data.folder: required when data.source is 'stacks' (or data.url and "
                              "data.sha256, or data.stacks.preset)")
        if data["url"] and not data["sha256"] and not data["folder"]:
            raise ParamsError(f"{source}: data.sha256: required with data.url when data.source is 'stacks'")
    if data["source"] in ("lol", "lcdp") and not data[data["source"]]["archive"]:
        raise ParamsError(f"{source}: data.{data['source']}.archive: required when data.source is {data['source']!r} "
                          "(a URL, a local zip/tar, or the folder it was extracted to)")
    if data["source"] == "sice":
        for part, archive in data["sice"].items():
            if not archive["archive"]:
                raise ParamsError(f"{source}: data.sice.{part}.archive: required when data.source is 'sice' (a URL, "
                                  "a local zip/tar, or the folder it was extracted to)")
    if data["source"] == "msec":
        for split, archive in data["msec"].items():
            if not archive["url"]:
                raise ParamsError(f"{source}: data.msec.{split}.url: required when data.source is 'msec'")
    fractions = params["split"]["fractions"]
    total = sum(fractions.values())
    if not math.isclose(total, 1.0, abs_tol=1e-6):
        raise ParamsError(f"{source}: split.fractions: train + val + test must sum to 1, got {total:g}")


def _duplicate_key(node: yaml.Node | None, path: str = "") -> str | None:
    """'key.path (line N)' of the first key given twice in one mapping (PyYAML silently keeps the last)."""
    if isinstance(node, yaml.MappingNode):
        seen = set()
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            where = f"{path}.{printable(key)}" if path else printable(key)
            if key is not None and key in seen:
                return f"{where} (line {key_node.start_mark.line + 1})"
            seen.add(key)
            found = _duplicate_key(value_node, where)
            if found:
                return found
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            found = _duplicate_key(item, f"{path}.{i}" if path else str(i))
            if found:
                return found
    return None


def _yaml_error(exc: yaml.YAMLError) -> str:
    """A YAML error on one line: what is wrong and where."""
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    mark = getattr(exc, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"{problem}{where}"


def _not_plain_data(text: str) -> str | None:
    """Why `text` is more than plain YAML data (an anchor or alias, a tag, a merge key, nesting deeper
    than MAX_DEPTH), or None. Read as a stream of parser events: nothing is built or expanded, so a
    "billion laughs" file or a 100,000-deep one is refused at its first offending line."""
    depth = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        line = f"line {event.start_mark.line + 1}"
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            return f"{line}: YAML anchors and aliases (&name, *name) are not allowed; write the values out"
        if getattr(event, "tag", None) is not None:
            return f"{line}: YAML tags ({event.tag!r}) are not allowed; params hold plain values only"
        if isinstance(event, yaml.ScalarEvent) and event.value == "<<" and event.implicit[0]:
            return f"{line}: YAML merge keys (<<) are not allowed; write the keys out"
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                return f"{line}: nested deeper than {MAX_DEPTH} levels"
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1
    return None


def _read(path: Path) -> str:
    """The text of a regular file of at most MAX_BYTES (a FIFO or device is refused, never read)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO opens without waiting for a writer
    except FileNotFoundError:
        raise ParamsError(f"{printable(path)}: params file not found") from None
    except OSError as exc:
        raise ParamsError(f"{printable(path)}: cannot read the params file: {exc.strerror or exc}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ParamsError(f"{printable(path)}: cannot read the params file: not a regular file")
        data = b""
        while len(data) <= MAX_BYTES and (chunk := os.read(fd, MAX_BYTES + 1 - len(data))):
            data += chunk
    except OSError as exc:
        raise ParamsError(f"{printable(path)}: cannot read the params file: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    if len(data) > MAX_BYTES:
        raise ParamsError(f"{printable(path)}: larger than a params file can be ({MAX_BYTES} bytes)")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ParamsError(f"{printable(path)}: not a UTF-8 text file") from None


def load(path: str | Path = "params.yaml") -> dict:
    """Read and validate a params file as plain YAML data; errors name the file and the key path.

    Refused before anything is built: anchors, aliases, tags, merge keys, nesting deeper than MAX_DEPTH,
    files over MAX_BYTES, and YTE templating (`__use_yte__`, which Snakemake's `configfile:` would run)."""
    path = Path(path)
    name = printable(path)
    text = _read(path)
    try:
        problem = _not_plain_data(text)
        if problem:
            raise ParamsError(f"{name}: not plain YAML data: {problem}")
        duplicate = _duplicate_key(yaml.compose(text, Loader=FAST_LOADER))
        params = yaml.load(text, Loader=FAST_LOADER)
    except yaml.YAMLError as exc:
        raise ParamsError(f"{name}: not valid YAML: {_yaml_error(exc)}") from None
    if duplicate:
        raise ParamsError(f"{name}: {duplicate}: key given twice")
    if not isinstance(params, dict):
        raise ParamsError(f"{name}: expected a mapping of sections at the top level")
    if "__use_yte__" in params:
        raise ParamsError(f"{name}: __use_yte__: YTE templating is not supported (its expressions would run "
                          "as code); params hold plain YAML data")
    return validate(params, name)
