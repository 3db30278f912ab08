"""The report's data: metrics/*.json and their details read into `Method`s, the latency benchmark and the
train logs, the leaderboard rows and the number formats (`fmt`)."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from expocorr.errors import UserError
from expocorr.methods import LEARNED_KINDS
from expocorr.tables import finite_float, read_csv

log = logging.getLogger(__name__)


METRICS = Path("metrics")
DETAILS = METRICS / "details"
MODELS = Path("models")
LATENCY = Path("reports/bench/infer_latency.json")
OUT = Path("reports")
FIGURES = OUT / "figures"
NOT_COMPUTED = "not computed"
NO_VALUE = "—"
SCORES = ("psnr", "ssim", "delta_e2000")
UNPAIRED_SCORES = ("brisque", "niqe", "grid")  # no-reference, lower is better (grid: artefacts, grey levels)
HIST = ("hist_luminance", "hist_contrast", "hist_saturation")
OTHER_METRICS = ("psnr_y", "ssim_y", "brisque", "niqe", "lpips", "pi", "inception_score")
LABELS = {"psnr": "PSNR (dB)", "ssim": "SSIM", "delta_e2000": "ΔE2000", "hist_luminance": "hist lum",
          "hist_contrast": "hist con", "hist_saturation": "hist sat", "psnr_y": "PSNR-Y (dB)", "ssim_y": "SSIM-Y",
          "brisque": "BRISQUE", "niqe": "NIQE", "grid": "grid", "lpips": "LPIPS", "pi": "PI", "inception_score": "Inception score"}
DIGITS = {"psnr": 2, "ssim": 4, "delta_e2000": 2, "psnr_y": 2, "ssim_y": 4}
MIN_RANKED_SCENES = 5  # fewer test scenes: the report lists the methods but does not rank them
SSIM_SETTINGS = ("MATLAB-compatible (Wang et al. 2004): Gaussian window σ = 1.5, K1 = 0.01, K2 = 0.03, data range "
                 "255, no sample-covariance correction; mean over the RGB channels")  # expocorr.metrics.ssim


class ReportError(UserError, ValueError):
    """The report cannot be built from what is on disk; the message names the folder or file."""


def number(value) -> float | None:
    """`value` as a float when it is a number (bools and "not computed" strings are not)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None


def ev_key(ev) -> float | None:
    """An EV as a dict key (4 decimals, no -0.0), or None when it is not a number."""
    value = finite_float(ev)
    return None if value is None else round(value, 4) + 0.0


@dataclass
class Method:
    """One method: metrics/NAME.json and metrics/details/NAME.json merged (their keys do not overlap),
    with its per-image table when there is one."""

    name: str
    kind: str
    oracle: bool
    data: dict
    source: Path
    per_image: list[dict] = field(default_factory=list)

    @property
    def details_source(self) -> Path:
        return self.source.parent / DETAILS.name / self.source.name

    @property
    def cap(self) -> float | None:
        return number(self.data.get("psnr_cap"))

    @property
    def overall(self) -> dict:
        return self.data.get("overall") or {}

    @property
    def provenance(self) -> dict:
        value = self.data.get("provenance")
        return value if isinstance(value, dict) else {}

    def score(self, key: str, group: dict | None = None):
        """A number, or NOT_COMPUTED for a missing, null or "not computed" value."""
        value = (self.overall if group is None else group).get(key)
        return value if number(value) is not None else NOT_COMPUTED

    @property
    def extra(self) -> dict[str, dict]:
        """Extra test set -> its scores (``extra`` of metrics/NAME.json: psnr, ssim, delta_e2000, under, over)."""
        value = self.data.get("extra")
        return {str(k): v for k, v in value.items() if isinstance(v, dict)} if isinstance(value, dict) else {}

    @property
    def unpaired(self) -> dict[str, dict]:
        """Unpaired set -> its scores (``unpaired`` of metrics/NAME.json: brisque, niqe, n_images)."""
        value = self.data.get("unpaired")
        return {str(k): v for k, v in value.items() if isinstance(v, dict)} if isinstance(value, dict) else {}

    def unpaired_details(self, name: str) -> dict:
        """``unpaired_sets.NAME`` of metrics/details/NAME.json (status, n_images, examples), or {}."""
        value = (self.data.get("unpaired_sets") or {}).get(name)
        return value if isinstance(value, dict) else {}

    @property
    def per_ev(self) -> dict[float, dict]:
        out = {}
        for key, value in (self.data.get("per_ev") or {}).items():
            if ev_key(key) is None:
                raise ReportError(f"{self.source}: per_ev key {key!r} is not an EV number")
            out[ev_key(key)] = value or {}
        return dict(sorted(out.items()))

    def count(self, group) -> int | None:
        """How many test images are behind a group's means (`overall`, `under`, `over`, or an EV number),
        from details' `n`; None when not recorded."""
        counts = self.data.get("n") if isinstance(self.data.get("n"), dict) else {}
        if not isinstance(group, str):
            counts, group = {ev_key(k): v for k, v in (counts.get("per_ev") or {}).items()}, ev_key(group)
        value = number(counts.get(group))
        return None if value is None else int(value)

    @property
    def examples(self) -> list[dict]:
        return [e for e in self.data.get("examples") or [] if isinstance(e, dict) and ev_key(e.get("ev")) is not None]

    @property
    def worst(self) -> dict | None:
        worst = self.data.get("worst")
        return worst if isinstance(worst, dict) and "scene" in worst and ev_key(worst.get("ev")) is not None else None


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ReportError(f"{path}: missing; the evaluate stage writes it with {METRICS}/{path.name} "
                          "(run that stage again)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ReportError(f"{path}: not a readable metrics JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ReportError(f"{path}: not a metrics file of the evaluate stage (not a JSON object)")
    return data


def load_methods(folder: Path = METRICS) -> list[Method]:
    """Every metrics/NAME.json with its metrics/details/NAME.json (and NAME_per_image.csv when present)."""
    files = sorted(folder.glob("*.json")) if folder.is_dir() else []
    if not files:
        raise ReportError(f"{folder}/: no metrics files ({folder}/NAME.json); run the evaluate stage first")
    methods: dict[str, Method] = {}
    for path in files:
        scores = _read_json(path)
        if not isinstance(scores.get("overall"), dict):
            raise ReportError(f"{path}: not a metrics file of the evaluate stage (no 'overall' section)")
        details = _read_json(path.parent / DETAILS.name / path.name)
        data = {**details, **scores}
        name = str(data.get("method") or path.stem)
        if name in methods:
            raise ReportError(f"{path}: method {name!r} is also in {methods[name].source}")
        kind = data.get("kind") if data.get("kind") in (*LEARNED_KINDS, "baseline", "external") else "baseline"
        method = Method(name, kind, bool(data.get("oracle")), data, path)
        table = folder / f"{path.stem}_per_image.csv"
        if table.exists():
            method.per_image = read_csv(table)
        methods[name] = method
    return sorted(methods.values(), key=_rank_key)


def _rank_key(method: Method):
    psnr = number(method.overall.get("psnr"))
    return (psnr is None, -(psnr if psnr is not None else 0.0), method.name)


def load_latency(path: Path = LATENCY) -> dict[str, dict]:
    """Method -> the benchmark entry to quote: its CPU run on the most megapixels, else its largest run."""
    if not path.exists():
        return {}
    try:
        results = json.loads(path.read_text(encoding="utf-8"))["results"]
        entries = [{"method": str(r["method"]), "device": str(r["device"]), "megapixels": float(r["megapixels"]),
                    "seconds": float(r["seconds"])} for r in results]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise ReportError(f"{path}: expected {{'results': [{{method, device, megapixels, seconds, ...}}]}}: "
                          f"{type(exc).__name__}: {exc}") from None
    chosen: dict[str, dict] = {}
    for entry in entries:
        if entry["megapixels"] <= 0:
            continue
        rank = (entry["device"] == "cpu", entry["megapixels"])
        best = chosen.get(entry["method"])
        if best is None or rank > (best["device"] == "cpu", best["megapixels"]):
            chosen[entry["method"]] = entry
    return chosen


def load_train_logs(folder: Path = MODELS) -> dict[str, dict[str, np.ndarray]]:
    """Model -> column -> values of models/NAME/train_log.csv (blank cells are NaN)."""
    logs = {}
    for path in sorted(folder.glob("*/train_log.csv")):
        rows = read_csv(path)
        if not rows:
            continue
        if "epoch" not in rows[0]:
            raise ReportError(f"{path}: no 'epoch' column; not a train log of the train stage")
        logs[path.parent.name] = {
            column: np.array([finite_float(r.get(column)) if finite_float(r.get(column)) is not None else np.nan for r in rows])
            for column in rows[0]
        }
    return logs


def fmt(value, digits: int = 3, cap: float | None = None) -> str:
    if isinstance(value, str):
        return value
    value = number(value)
    if value is None:
        return NOT_COMPUTED
    text = f"{value:.{digits}f}"
    return f"{text} (cap)" if cap is not None and value >= cap else text


def kind_label(method: Method) -> str:
    """The kind column: "baseline (oracle)", "external (2 missing)" (test images it has no output for); "(GT-mean)"
    when its outputs were scaled to their reference's mean before scoring (`evaluate.gt_mean`)."""
    label = f"{method.kind} (oracle)" if method.oracle else method.kind
    missing = number(method.data.get("n_missing")) if method.kind == "external" else None
    label += f" ({int(missing)} missing)" if missing else ""
    return label + (" (GT-mean)" if method.data.get("gt_mean") else "")


def extra_sets(methods: list[Method]) -> list[str]:
    """The extra test sets any method was scored on, in the order the metrics files list them."""
    return list(dict.fromkeys(name for m in methods for name in m.extra))


def unpaired_sets(methods: list[Method]) -> list[str]:
    """The unpaired sets (real photos without references) any method was scored on, in the files' order."""
    return list(dict.fromkeys(name for m in methods for name in m.unpaired))


def leaderboard(methods: list[Method], latency: dict[str, dict], ranked: bool = True) -> list[dict]:
    """One row per method, best headline PSNR first: the values as read (numbers or "not computed");
    `rank` None when the test split is too small to rank (`ranked` false); `extra`: per extra test set
    (real bracketed scenes), its PSNR, SSIM and ΔE2000 ("not computed" for a method not scored on it), also
    as columns `extra_SET_psnr`, `extra_SET_ssim`; per unpaired set, `unpaired_SET_brisque`, `unpaired_SET_niqe`, `unpaired_SET_grid`."""
    sets, unpaired = extra_sets(methods), unpaired_sets(methods)
    rows = []
    for rank, m in enumerate(methods, 1):
        if m.name in latency:
            bench = latency[m.name]
            seconds = bench["seconds"] / bench["megapixels"]
            source = f"{LATENCY} ({bench['device']}, {bench['megapixels']:g} MP)"
        else:
            seconds, source = m.score("seconds_per_megapixel", m.data), m.details_source.as_posix()
        n_parameters = m.data.get("n_parameters")
        rows.append({
            "rank": rank if ranked else None, "method": m.name, "kind": m.kind, "oracle": m.oracle,
            **{key: m.score(key) for key in (*SCORES, *HIST)},
            "n_parameters": (int(n_parameters) if number(n_parameters) is not None else NOT_COMPUTED)
            if m.kind in LEARNED_KINDS else None,
            "seconds_per_megapixel": seconds, "seconds_per_megapixel_source": source,
            "n_images": m.data.get("n_images"), "headline_reference": m.data.get("headline_reference"),
            **({"n_missing": m.data.get("n_missing")} if m.kind == "external" else {}),
            **({"extra": {name: {key: m.score(key, m.extra.get(name, {})) for key in SCORES} for name in sets}}
               if sets else {}),
            **{f"extra_{name}_{key}": m.score(key, m.extra.get(name, {})) for name in sets for key in ("psnr", "ssim")},
            **{f"unpaired_{name}_{key}": m.score(key, m.unpaired.get(name, {})) for name in unpaired
               for key in UNPAIRED_SCORES},
            "dataset": dataset(m),
        })
    return rows


def dataset(m: Method) -> dict:
    """Which data and protocol gave `m`'s scores, as its evaluate run recorded them (None: not recorded): the
    data source, its rendered scenes and images, the test split's, the headline reference, the resolution
    policy, the SSIM settings and the PSNR cap. `expocorr report --merge` makes one table per distinct record."""
    p = m.provenance
    side = number(p.get("test_max_side"))
    return {"source": p.get("data_source"), "scenes": p.get("rendered_scenes"), "images": p.get("rendered_images"),
            "test_scenes": p.get("test_scenes"), "test_images": p.get("test_images"),
            "reference": m.data.get("headline_reference"),
            "resolution": "full resolution" + (f" (test images up to {int(side)} px on the long side)" if side else ""),
            "ssim": SSIM_SETTINGS, "psnr_cap": m.cap, "protocol": m.data.get("protocol"),
            "gt_mean": bool(m.data.get("gt_mean"))}


def ev_label(ev: float) -> str:
    return "0" if ev == 0 else f"{ev:+g}".replace("-", "−")


def kind_name(method: Method) -> str:
    return f"{method.name} (oracle)" if method.oracle else method.name
