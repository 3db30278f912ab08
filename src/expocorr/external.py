"""Other programs' outputs (``evaluate.external: {NAME: folder}``), scored as method ``external:NAME``.

Matching rule: the output for the test row of scene SCENE at EV `ev` is the file ``SCENE_<ev name>.EXT``
at the top of the folder, ``<ev name>`` as `expocorr.imaging.synthesis.ev_name` writes it (``ev-1.5``, ``ev+0.0``,
``ev+1.0``): the names the evaluate stage gives its own outputs in results/METHOD/; EXT is one of
``EXTENSIONS`` (any case); hidden files are passed over. A test row without its file is *missing*; a file
that is no row's is *unmatched*; both are listed, never dropped silently: the method is scored on the rows
it has, with ``n_missing``.
"""

from __future__ import annotations

from pathlib import Path

from expocorr import methods
from expocorr.errors import UserError
from expocorr.imaging.images import read_rgb
from expocorr.imaging.synthesis import ev_name

PREFIX = "external:"
EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff")


class ExternalError(UserError, ValueError):
    """An external method's folder cannot be scored; the message names the key or file."""


def name_of(method: str) -> str | None:
    """NAME of method ``external:NAME``, else None."""
    return method.removeprefix(PREFIX) if method.startswith(PREFIX) else None


def stem(method: str) -> str:
    """The file stem of `method`'s outputs: ``external-NAME`` for ``external:NAME`` (``:`` is special in
    DVC addresses), the method's name otherwise."""
    name = name_of(method)
    return method if name is None else f"external-{name}"


def expected_stem(row: dict) -> str:
    """The file stem an output of test row `row` must have: ``SCENE_<ev name>``."""
    return f"{row['scene']}_{ev_name(float(row['ev']))}"


def folder(cfg: dict, name: str) -> Path:
    """The folder of ``evaluate.external.NAME`` (`cfg`: the evaluate section), checked to exist."""
    known = cfg.get("external") or {}
    if name not in known:
        raise ExternalError(f"--method {PREFIX}{name}: evaluate.external has no {name!r} "
                            f"(known: {', '.join(sorted(known)) or 'none'})")
    path = Path(known[name])
    if not path.is_dir():
        raise ExternalError(f"evaluate.external.{name}: {path}: not a folder (missing, or a file)")
    return path


def match(path: Path, rows: list[dict]) -> tuple[dict[str, Path], list[dict], list[str]]:
    """(input of each matched row -> its output file, the rows without one, the files of `path` that are no
    row's; hidden files passed over). Two image files with one stem (a.png and a.jpg) are an error naming both."""
    by_stem: dict[str, Path] = {}
    unmatched = []
    for file in sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")):
        if file.suffix.lower() not in EXTENSIONS:
            unmatched.append(file.name)
        elif file.stem in by_stem:
            raise ExternalError(f"{by_stem[file.stem]} and {file}: two outputs for one test image; keep one")
        else:
            by_stem[file.stem] = file
    matched, missing = {}, []
    for row in rows:
        file = by_stem.pop(expected_stem(row), None)
        if file is None:
            missing.append(row)
        else:
            matched[row["input"]] = file
    return matched, missing, sorted(unmatched + [p.name for p in by_stem.values()])


def method(name: str, files: dict[str, Path]) -> methods.Method:
    """Method ``external:NAME`` of kind ``external``: its "output" for the input `ctx["input"]` is the file
    `files` matched to it, which must have the input's size (no resizing: a clear error naming the file)."""

    def read(rgb, ctx):
        file = files[ctx["input"]]
        output = read_rgb(file)
        if output.shape != rgb.shape:
            raise ExternalError(f"{file}: {output.shape[1]}x{output.shape[0]} px, but its test input {ctx['input']} "
                                f"is {rgb.shape[1]}x{rgb.shape[0]} px (evaluate.external.{name}; not resized)")
        return output

    return methods.Method(PREFIX + name, "external", read, source=f"evaluate.external.{name}")
