"""CSV tables of the pipeline (index, manifest, splits), read and written atomically."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

from expocorr.atomic import write_text


def write_csv(path: str | Path, rows: list[dict], fields: list[str]) -> None:
    """Write `rows` (only `fields`, paths as POSIX strings) to `path` atomically."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (v.as_posix() if isinstance(v, Path) else v) for k, v in row.items()})
    write_text(path, buf.getvalue())


def read_csv(path: str | Path) -> list[dict]:
    """Rows of a CSV file as dicts of strings."""
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def finite_float(text) -> float | None:
    """A table cell as a finite float, else None (empty, non-numeric, NaN or infinite)."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None
