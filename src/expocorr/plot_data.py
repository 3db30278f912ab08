"""Tables the report stage writes for `dvc plots show` and `snakemake --report`.

Long format, one row per method and x value, so that one plot draws one line per method whatever
train.models and evaluate.baselines hold (workflow/plots/lines.json colours the lines by `method`):

* ``reports/plots/psnr_per_ev.csv``: method, ev, psnr, ssim, n — the mean over the test images at
  each EV of ``metrics/NAME_per_image.csv`` (identical pairs included, as in the metrics' per_ev);
* ``reports/plots/training.csv``: method, epoch, train_loss, val_psnr — ``models/NAME/train_log.csv``;
* ``reports/leaderboard.csv``: the headline columns of the leaderboard rows, then the columns of the extra
  and unpaired sets (``extra_SET_psnr``, ``extra_SET_ssim``, ``unpaired_SET_brisque``, ``unpaired_SET_niqe``),
  numbers to 4 significant digits (the table on the first page of ``snakemake --report``).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from expocorr.tables import finite_float, read_csv, write_csv

PLOTS = Path("reports/plots")
PER_EV = PLOTS / "psnr_per_ev.csv"
TRAINING = PLOTS / "training.csv"
LEADERBOARD = Path("reports/leaderboard.csv")
TRAINING_COLUMNS = ("train_loss", "val_psnr")
# leaderboard.json key -> column of reports/leaderboard.csv
LEADERBOARD_COLUMNS = {"rank": "#", "method": "method", "kind": "kind", "psnr": "PSNR (dB)", "ssim": "SSIM",
                       "delta_e2000": "ΔE2000", "n_parameters": "params", "seconds_per_megapixel": "s / MP"}


def _mean(values: list[float]) -> float | str:
    return round(sum(values) / len(values), 4) if values else ""


def method_name(stem: str) -> str:
    """The method whose files are named `stem`: ``external:NAME`` for ``external-NAME`` (`expocorr.external`)."""
    return "external:" + stem.removeprefix("external-") if stem.startswith("external-") else stem


def per_ev_rows(metrics: Path) -> list[dict]:
    """Mean PSNR and SSIM per method and EV from every metrics/NAME_per_image.csv."""
    rows = []
    for path in sorted(metrics.glob("*_per_image.csv")):
        by_ev: dict[float, list[dict]] = defaultdict(list)
        for row in read_csv(path):
            ev = finite_float(row.get("ev"))
            if ev is not None:
                by_ev[ev + 0.0].append(row)
        for ev, group in sorted(by_ev.items()):
            scores = {key: [v for v in (finite_float(r.get(key)) for r in group) if v is not None] for key in ("psnr", "ssim")}
            rows.append({"method": method_name(path.name.removesuffix("_per_image.csv")), "ev": f"{ev:g}",
                         **{key: _mean(values) for key, values in scores.items()}, "n": len(group)})
    return rows


def training_rows(models: Path) -> list[dict]:
    """Loss and validation PSNR per model and epoch from every models/NAME/train_log.csv."""
    return [{"method": path.parent.name, "epoch": row["epoch"], **{key: row.get(key, "") for key in TRAINING_COLUMNS}}
            for path in sorted(models.glob("*/train_log.csv")) for row in read_csv(path)]


def set_columns(leaderboard: list[dict]) -> list[str]:
    """The per-set columns of the leaderboard rows (``extra_SET_*``, ``unpaired_SET_*``), in their order."""
    return [key for key in (leaderboard[0] if leaderboard else {}) if key.startswith(("extra_", "unpaired_"))]


def leaderboard_rows(leaderboard: list[dict]) -> list[dict]:
    """The headline and per-set columns of the leaderboard rows (an oracle's kind says so), numbers to 4 digits."""
    rows = []
    for row in leaderboard:
        cells = {column: row.get(key) for key, column in LEADERBOARD_COLUMNS.items()}
        cells |= {key: row.get(key) for key in set_columns(leaderboard)}
        cells["kind"] = f"{cells['kind']} (oracle)" if row.get("oracle") else cells["kind"]
        rows.append({k: f"{v:.4g}" if isinstance(v, float) else v for k, v in cells.items()})
    return rows


def write(leaderboard: list[dict], metrics: Path = Path("metrics"), models: Path = Path("models")) -> None:
    """Write the per-EV, training and leaderboard tables (each atomically)."""
    write_csv(PER_EV, per_ev_rows(metrics), ["method", "ev", "psnr", "ssim", "n"])
    write_csv(TRAINING, training_rows(models), ["method", "epoch", *TRAINING_COLUMNS])
    write_csv(LEADERBOARD, leaderboard_rows(leaderboard), [*LEADERBOARD_COLUMNS.values(), *set_columns(leaderboard)])
