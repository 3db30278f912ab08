"""Load params.yaml and validate it against the schema both engines share."""

from __future__ import annotations

import math
from importlib import resources
from pathlib import Path

import jsonschema
import yaml

from expocorr.errors import UserError

SCHEMA_NAME = "params.schema.yaml"


class ParamsError(UserError, ValueError):
    """Invalid parameters; the message names the key path."""


def schema() -> dict:
    """The JSON schema of params.yaml (shipped with the package)."""
    return yaml.safe_load(resources.files("expocorr").joinpath(SCHEMA_NAME).read_text())


def _key_path(error: jsonschema.ValidationError) -> str:
    return ".".join(str(p) for p in error.absolute_path) or "<top level>"


def _describe(error: jsonschema.ValidationError) -> str:
    """One line naming the key path, the offending value and what is allowed."""
    path, kind, sub = _key_path(error), error.validator, error.validator_value
    if kind == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(allowed))
        where = f"{path}." if error.absolute_path else ""
        return f"{where}{extra[0]}: unknown key; allowed keys here: {', '.join(allowed)}"
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
    """Raise ParamsError (one line, naming the key path) unless `params` is valid."""
    validator = jsonschema.Draft202012Validator(schema())
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
        found = _non_finite(value, f"{path}.{key}" if path else str(key))
        if found:
            return found
    return None


def _check_semantics(params: dict, source: str) -> None:
    bad = _non_finite(params)
    if bad:
        raise ParamsError(f"{source}: {bad}: must be a finite number")
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
            where = f"{path}.{key}" if path else str(key)
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


def load(path: str | Path = "params.yaml") -> dict:
    """Read and validate a params file; errors name the file and the key path."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
        duplicate = _duplicate_key(yaml.compose(text, Loader=yaml.SafeLoader))
        params = yaml.safe_load(text)
    except FileNotFoundError:
        raise ParamsError(f"{path}: params file not found") from None
    except OSError as exc:
        raise ParamsError(f"{path}: cannot read the params file: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ParamsError(f"{path}: not a UTF-8 text file") from None
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML: {_yaml_error(exc)}") from None
    if duplicate:
        raise ParamsError(f"{path}: {duplicate}: key given twice")
    if not isinstance(params, dict):
        raise ParamsError(f"{path}: expected a mapping of sections at the top level")
    return validate(params, str(path))
