"""Stage `report`: metrics/, the train logs and the example outputs -> reports/report.{md,html},
reports/figures/ and reports/leaderboard.json.

Reads only ``report.*`` and files: ``metrics/NAME.json`` (the scores, with one ``extra`` group per set of real
bracketed scenes of ``evaluate.extra_sets``: a leaderboard column each, next to the synthetic test split's,
and one ``unpaired`` group per set of real photos without references of ``evaluate.unpaired_sets``: their
own section, a table and a grid), ``metrics/details/NAME.json``
(what the method is, counts, examples, worst case, provenance) and ``metrics/NAME_per_image.csv``
(the evaluate stage's), ``models/*/train_log.csv`` (optional), the images the details name
(``results/NAME/*.png`` and their inputs and references) and ``reports/bench/infer_latency.json``
(optional). The Markdown and the HTML are rendered from one list of blocks, so they say the same
thing; the HTML is self-contained (figures as base64 data URIs, the photo grids as JPEG, inline CSS).
Nothing is invented: a metric the evaluate stage did not compute is shown as "not computed".
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
import math
import os
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from PIL import Image

from expocorr.atomic import atomic_dir, write_text
from expocorr.errors import UserError
from expocorr.imaging.images import ImageError, read_rgb, resize_max_side, to_uint8
from expocorr.metrics.histogram import luminance
from expocorr.methods import LEARNED_KINDS
from expocorr.plot_data import write as write_plot_data
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
PHOTO_CELL = 2.8      # width of a photo in the qualitative figures (inches, at report.dpi)
PHOTO_MAX = 1024      # photos are read down to this long side (px) before they are fitted to a cell
JPEG_QUALITY = 85     # the photo figures are JPEG: a fraction of their size as PNG
LUMA_BINS = 64
MIME = {"png": "image/png", "svg": "image/svg+xml", "jpg": "image/jpeg"}
SSIM_SETTINGS = ("MATLAB-compatible (Wang et al. 2004): Gaussian window σ = 1.5, K1 = 0.01, K2 = 0.03, data range "
                 "255, no sample-covariance correction; mean over the RGB channels")  # expocorr.metrics.ssim


class ReportError(UserError, ValueError):
    """The report cannot be built from what is on disk; the message names the folder or file."""


# --- inputs --------------------------------------------------------------------------------------


def number(value) -> float | None:
    """`value` as a float when it is a number (bools and "not computed" strings are not)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None


def _ev_key(ev) -> float | None:
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
            if _ev_key(key) is None:
                raise ReportError(f"{self.source}: per_ev key {key!r} is not an EV number")
            out[_ev_key(key)] = value or {}
        return dict(sorted(out.items()))

    def count(self, group) -> int | None:
        """How many test images are behind a group's means (`overall`, `under`, `over`, or an EV number),
        from details' `n`; None when not recorded."""
        counts = self.data.get("n") if isinstance(self.data.get("n"), dict) else {}
        if not isinstance(group, str):
            counts, group = {_ev_key(k): v for k, v in (counts.get("per_ev") or {}).items()}, _ev_key(group)
        value = number(counts.get(group))
        return None if value is None else int(value)

    @property
    def examples(self) -> list[dict]:
        return [e for e in self.data.get("examples") or [] if isinstance(e, dict) and _ev_key(e.get("ev")) is not None]

    @property
    def worst(self) -> dict | None:
        worst = self.data.get("worst")
        return worst if isinstance(worst, dict) and "scene" in worst and _ev_key(worst.get("ev")) is not None else None


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


# --- tables --------------------------------------------------------------------------------------


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


def _leaderboard_table(rows: list[dict], methods: list[Method], latency: dict) -> Table:
    sets = extra_sets(methods)
    headers = ["#", "method", "kind", "PSNR (dB)", *(f"{name} PSNR (dB)" for name in sets), "SSIM",
               *(f"{name} SSIM" for name in sets), "ΔE2000", "hist lum", "hist con", "hist sat", "params", "s / MP"]
    body = []
    for row, m in zip(rows, methods):
        params_cell = NO_VALUE if row["n_parameters"] is None else (
            row["n_parameters"] if isinstance(row["n_parameters"], str) else f"{row['n_parameters']:,}")
        value = number(row["seconds_per_megapixel"])
        seconds = NOT_COMPUTED if value is None else f"{value:.3g}"  # 3 significant digits: 0.000123 .. 123
        if m.name in latency and seconds != NOT_COMPUTED:
            seconds += f" ({latency[m.name]['device']})"
        body.append([NO_VALUE if row["rank"] is None else str(row["rank"]), row["method"], kind_label(m),
                     fmt(row["psnr"], 2, m.cap), *(fmt(row["extra"][name]["psnr"], 2, m.cap) for name in sets),
                     fmt(row["ssim"], 4), *(fmt(row["extra"][name]["ssim"], 4) for name in sets),
                     fmt(row["delta_e2000"], 2), *(fmt(row[k], 3) for k in HIST), params_cell, seconds])
    return Table(headers, body, id="leaderboard")


def _extra_note(name: str, methods: list[Method]) -> str:
    """What the leaderboard's columns of extra test set `name` measure, and on how many pairs."""
    counts = sorted({f"{int(n['n_scenes'])} scene(s), {int(n['n_images'])} pair(s)" for n in
                     ((m.data.get("extra_sets") or {}).get(name) or {} for m in methods)
                     if number(n.get("n_scenes")) is not None and number(n.get("n_images")) is not None})
    missing = [m.name for m in methods if name not in m.extra]
    return (f"{name} PSNR / SSIM: real exposure errors, the bracketed scenes of `evaluate.extra_sets.{name}` "
            f"({' / '.join(counts) or 'counts not recorded'}): every exposure against its scene's reference, pairs whose input is "
            "that reference (the exposure nearest mid-grey, by default) left out of the means; PSNR (dB) and SSIM without a set name: the synthetic "
            "test split." + (f" Not scored on {name}: {', '.join(missing)} ({NOT_COMPUTED})." if missing else ""))


def _other_metrics_table(methods: list[Method]) -> Table:
    shown = {*SCORES, *HIST}
    extra = sorted({k for m in methods for k in m.overall if k not in shown and k not in OTHER_METRICS and k != "n"})
    keys = [*OTHER_METRICS, *extra]
    return Table(["method", *(LABELS.get(k, k) for k in keys)],
                 [[m.name, *(fmt(m.score(k), DIGITS.get(k, 3)) for k in keys)] for m in methods], id="other-metrics")


def _per_ev_table(methods: list[Method], evs: list[float]) -> Table:
    body = [[m.name, *(_pair(m.per_ev.get(ev, {}), m.cap) for ev in evs)] for m in methods]
    return Table(["method", *(f"EV {ev_label(ev)}" for ev in evs)], body, caption="PSNR (dB) / SSIM per EV",
                 id="per-ev")


def _pair(group: dict, cap: float | None) -> str:
    psnr, ssim = number(group.get("psnr")), number(group.get("ssim"))
    if psnr is None and ssim is None:
        return NOT_COMPUTED
    return f"{fmt(psnr, 2, cap)} / {fmt(ssim, 4)}"


def _groups_table(methods: list[Method]) -> Table:
    """under / zero / over: the zero column is the EV 0 entry of `per_ev`, when the inputs have one."""
    body = []
    for m in methods:
        groups = (m.data.get("under") or {}, m.per_ev.get(0.0) or {}, m.data.get("over") or {})
        counts = (m.count("under"), m.count(0.0), m.count("over"))
        body.append([m.name, *(_pair(g, m.cap) for g in groups),
                     *(NO_VALUE if n is None else str(n) for n in counts)])
    return Table(["method", "under", "zero (EV = 0)", "over", "n under", "n zero", "n over"], body,
                 caption="PSNR (dB) / SSIM per exposure group (under / over: EV < 0 / EV > 0, or as a benchmark "
                 "dataset's protocol defines them: MSEC counts EV 0 as over)", id="groups")


def _reference_tables(methods: list[Method]) -> list[Block]:
    several = [m for m in methods if len(m.data.get("references") or {}) > 1]
    if not several:
        return []
    names: list[str] = []
    for m in several:
        for ref in m.data["references"]:
            if ref not in names:
                names.append(ref)
    headline = {m.data.get("headline_reference") for m in several}
    names = sorted(names, key=lambda r: (r not in headline, r))
    blocks: list[Block] = [
        Heading("Per reference"),
        Para("Methods scored against several references (e.g. MSEC's experts a–e): overall means per reference."),
    ]
    for key in SCORES:
        body = []
        for m in several:
            refs = m.data["references"]
            body.append([m.name, *(fmt(m.score(key, (refs.get(r) or {}).get("overall") or {}), DIGITS[key])
                                   if r in refs else NO_VALUE for r in names)])
        blocks.append(Table(["method", *(f"{r} (headline)" if r in headline else r for r in names)], body,
                            caption=f"{LABELS[key]} per reference", id=f"per-reference-{key}"))
    return blocks


def _training_table(logs: dict[str, dict[str, np.ndarray]]) -> Table:
    body = []
    for name, columns in logs.items():
        epochs, psnr = columns["epoch"], columns.get("val_psnr")
        best = ("not logged", NO_VALUE)
        if psnr is not None and np.isfinite(psnr).any():
            i = int(np.nanargmax(psnr))
            best = (f"{psnr[i]:.2f}", f"{epochs[i]:g}")
        identity = columns.get("val_psnr_identity")
        identity_cell = (f"{identity[np.isfinite(identity)][-1]:.2f}" if identity is not None
                         and np.isfinite(identity).any() else "not logged")
        seconds = columns.get("seconds")
        seconds_cell = f"{np.nansum(seconds):.1f}" if seconds is not None and np.isfinite(seconds).any() else NO_VALUE
        body.append([name, str(len(epochs)), *best, identity_cell, seconds_cell])
    return Table(["model", "epochs run", "best val PSNR (dB)", "at epoch", "identity val PSNR (dB)", "train seconds"],
                 body, id="training")


# --- figures -------------------------------------------------------------------------------------


def ev_label(ev: float) -> str:
    return "0" if ev == 0 else f"{ev:+g}".replace("-", "−")


def method_colors(names: list[str]) -> dict[str, tuple]:
    cmap = matplotlib.colormaps["tab10" if len(names) <= 10 else "tab20"]
    return {name: cmap(i % cmap.N) for i, name in enumerate(names)}


def _style(method: Method) -> dict:
    return {"linestyle": "--"} if method.oracle else {}


def figure_per_ev(methods: list[Method], colors: dict) -> Figure | None:
    """PSNR and SSIM against EV, a line per method. PSNRs at the cap (identical images) are drawn as ▲ on
    the top edge, so that one capped EV does not flatten every other curve."""
    evs = sorted({ev for m in methods for ev in m.per_ev})
    if not evs:
        return None
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    for ax, key in zip(fig.subplots(1, 2), ("psnr", "ssim")):
        series = []
        for m in methods:
            ys = np.array([number((m.per_ev.get(ev) or {}).get(key)) for ev in evs], dtype=float)  # None -> nan
            capped = np.zeros(len(evs), bool) if key != "psnr" or m.cap is None else ys >= m.cap
            series.append((m, ys, capped))
        plain = np.concatenate([ys[~capped] for _, ys, capped in series])
        plain = plain[np.isfinite(plain)]
        any_capped = any(capped.any() for _, _, capped in series)
        top = None
        if any_capped and plain.size:
            top = plain.max() + 0.12 * max(np.ptp(plain), 1.0)
        for m, ys, capped in series:
            shown = np.where(capped, top, ys) if top is not None else ys
            ax.plot(evs, shown, marker="o", color=colors[m.name], label=kind_name(m), **_style(m))
            if top is not None and capped.any():
                ax.plot(np.array(evs)[capped], shown[capped], linestyle="none", marker="^", markersize=9,
                        color=colors[m.name], clip_on=False)
        if top is not None:
            bottom = plain.min() - 0.05 * max(np.ptp(plain), 1.0)
            ax.set_ylim(bottom, top)
        ax.set_xlabel("EV (stops)")
        ax.set_ylabel(LABELS[key])
        ax.set_xticks(evs, [ev_label(ev) for ev in evs])
        ax.axvline(0, color="0.7", linewidth=0.8, zorder=0)
        ax.grid(alpha=0.3)
        title = f"{LABELS[key].split(' ')[0]} per EV"
        if top is not None:
            caps = sorted({m.cap for m, _, capped in series if capped.any()})
            title += f"\n(▲ on the top edge: at the PSNR cap, {' / '.join(f'{c:g}' for c in caps)} dB)"
        ax.set_title(title, fontsize=10)
    handles, labels = fig.axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right upper", fontsize=8)
    return fig


def kind_name(method: Method) -> str:
    return f"{method.name} (oracle)" if method.oracle else method.name


def figure_under_over(methods: list[Method]) -> Figure | None:
    if not any(m.data.get("under") or m.data.get("over") for m in methods):
        return None
    fig = Figure(figsize=(max(7.0, 0.75 * len(methods) + 3), 7.5), layout="constrained")
    x = np.arange(len(methods))
    for ax, key in zip(fig.subplots(2, 1), ("psnr", "ssim")):
        values = []
        for offset, group, color in ((-0.2, "under", "#3b6fb6"), (0.2, "over", "#e08a2c")):
            ys = [number((m.data.get(group) or {}).get(key)) for m in methods]
            bars = ax.bar(x + offset, [0 if y is None else y for y in ys], width=0.4, color=color,
                          label=f"{group}-exposed (EV {'<' if group == 'under' else '>'} 0)")
            for bar, y in zip(bars, ys):
                if y is None:
                    ax.annotate(NOT_COMPUTED, (bar.get_x() + bar.get_width() / 2, 0), rotation=90, fontsize=6,
                                ha="center", va="bottom")
            values += [y for y in ys if y is not None]
        ax.set_xticks(x, [kind_name(m) for m in methods], rotation=30, ha="right", fontsize=8)
        ax.set_ylabel(LABELS[key])
        ax.grid(axis="y", alpha=0.3)
        ax.set_title(f"{LABELS[key].split(' ')[0]}: under- vs over-exposed inputs")
        if key == "ssim" and values and min(values) > 0.5:  # zoom in on the top of the SSIM scale
            ax.set_ylim(math.floor(min(values) * 20 - 1) / 20, 1.0)
    handles, labels = fig.axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside upper center", ncols=2, fontsize=8)
    return fig


def figure_per_image(methods: list[Method]) -> Figure | None:
    data = [(m, [v for v in (finite_float(r.get("psnr")) for r in m.per_image) if v is not None]) for m in methods]
    data = [(m, values) for m, values in data if values]
    if not data:
        return None
    fig = Figure(figsize=(9, 0.45 * len(data) + 1.4), layout="constrained")
    ax = fig.subplots()
    ax.boxplot([values for _, values in data][::-1], vert=False, widths=0.6)
    ax.set_yticks(range(1, len(data) + 1), [kind_name(m) for m, _ in data][::-1])
    ax.set_xlabel(LABELS["psnr"])
    ax.grid(axis="x", alpha=0.3)
    ax.set_title("PSNR per test image")
    return fig


def figure_training(logs: dict[str, dict[str, np.ndarray]], colors: dict) -> Figure | None:
    if not logs:
        return None
    fig = Figure(figsize=(11, 2.4 * len(logs) + 0.4), layout="constrained")
    axes = fig.subplots(len(logs), 2, squeeze=False)
    for (name, columns), (ax_psnr, ax_loss) in zip(logs.items(), axes):
        epochs, color = columns["epoch"], colors.get(name, "C0")
        if "val_psnr" in columns:
            ax_psnr.plot(epochs, columns["val_psnr"], marker="o", color=color, label=f"{name} (val)")
        if "val_psnr_identity" in columns:
            ax_psnr.plot(epochs, columns["val_psnr_identity"], linestyle="--", color="0.4", label="identity (input)")
        ax_psnr.set_title(f"{name}: validation PSNR", fontsize=10)
        ax_psnr.set_ylabel("PSNR (dB)")
        if ax_psnr.lines:
            ax_psnr.legend(fontsize=7)
        if "train_loss" in columns:
            ax_loss.plot(epochs, columns["train_loss"], marker="o", color=color)
        ax_loss.set_title(f"{name}: training loss", fontsize=10)
        ax_loss.set_ylabel("loss")
        for ax in (ax_psnr, ax_loss):
            ax.set_xlabel("epoch")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.grid(alpha=0.3)
            if not ax.lines:
                ax.text(0.5, 0.5, "not logged", transform=ax.transAxes, ha="center", va="center", color="0.5")
    return fig


class Images:
    """The example photos (read down to PHOTO_MAX) and their luma histograms, each file read once."""

    def __init__(self):
        self.photos: dict[str, np.ndarray | None] = {}
        self.hists: dict[str, np.ndarray | None] = {}
        self.missing: list[str] = []

    def _load(self, path: str) -> None:
        if path in self.photos:
            return
        try:
            rgb = to_uint8(read_rgb(path))
        except ImageError as exc:
            log.warning("report: %s", exc)
            self.missing.append(path)
            self.photos[path] = self.hists[path] = None
            return
        self.hists[path] = np.histogram(luminance(rgb), bins=LUMA_BINS, range=(0.0, 1.0))[0]
        self.photos[path] = to_uint8(resize_max_side(rgb.astype(np.float32) / 255.0, PHOTO_MAX))

    def photo(self, path: str | None) -> np.ndarray | None:
        if not path:
            return None
        self._load(path)
        return self.photos[path]

    def hist(self, path: str) -> np.ndarray | None:
        self._load(path)
        return self.hists[path]


@dataclass
class Cell:
    path: str | None
    psnr: float | None = None
    note: str | None = None  # under the photo when there is no PSNR (the no-reference scores)


@dataclass
class PhotoRow:
    label: str
    cells: list[Cell]  # input, output(s), reference


def grid_methods(methods: list[Method], choice) -> list[Method]:
    """The methods of the qualitative grid: those `report.grid_methods` names, or that many of the best by
    headline PSNR with example outputs (oracles and the identity, which is the input column, passed over)."""
    if isinstance(choice, int):
        shown = [m for m in methods if m.examples]
        return ([m for m in shown if not m.oracle and m.name != "identity"] or shown)[:choice]
    known = {m.name: m for m in methods}
    unknown = [name for name in choice if name not in known]
    if unknown:
        raise ReportError(f"report.grid_methods: {', '.join(unknown)} not evaluated (no {METRICS}/NAME.json); "
                          f"evaluated: {', '.join(known)}")
    return [known[name] for name in choice]


def grid_rows(chosen: list[Method], max_examples: int) -> list[PhotoRow]:
    """The first `max_examples` test pairs every chosen method kept (in the evaluate stage's order, which
    spreads them over scenes and under- and over-exposure), one row each, grouped by scene."""
    if not chosen:
        return []
    indexes = [{(e.get("scene"), _ev_key(e["ev"])): e for e in m.examples} for m in chosen]
    keys = [key for key in indexes[0] if all(key in ix for ix in indexes)][:max_examples]
    rows = []
    for key in sorted(keys, key=lambda k: (str(k[0]), k[1])):
        first = indexes[0][key]
        outputs = [Cell(ix[key].get("output"), number(ix[key].get("psnr"))) for ix in indexes]
        rows.append(PhotoRow(f"{key[0]}\nEV {ev_label(key[1])}",
                             [Cell(first.get("input")), *outputs, Cell(first.get("reference"))]))
    return rows


def worst_rows(methods: list[Method], chosen: list[Method]) -> list[tuple[Method, PhotoRow]]:
    """Each model's worst test pair by PSNR, then each grid baseline's: input, its output, reference."""
    rows = []
    for m in sorted(methods, key=lambda m: m.kind not in LEARNED_KINDS):  # leaderboard order within each kind
        w = m.worst
        if w is None or (m.kind not in LEARNED_KINDS and m not in chosen):
            continue
        label = f"{m.name}\n{w.get('scene')}\nEV {ev_label(_ev_key(w['ev']))}"
        rows.append((m, PhotoRow(label, [Cell(w.get("input")), Cell(w.get("output"), number(w.get("psnr"))),
                                         Cell(w.get("reference"))])))
    return rows


def figure_photos(rows: list[PhotoRow], headers: list[str], images: Images, dpi: int) -> Figure | None:
    """Rows of photos, each fitted to a PHOTO_CELL-inch-wide cell at `dpi` (so drawn pixel for pixel),
    PSNR under each output, the column headers on top and each row's label on its left."""
    if not rows:
        return None
    gap, strip, top = 0.06, 0.28, 0.35
    left = max(0.9, 0.3 + 0.075 * max(len(line) for row in rows for line in row.label.splitlines()))
    heights = []
    for row in rows:
        shape = next((p.shape for p in map(images.photo, (c.path for c in row.cells)) if p is not None), None)
        heights.append(PHOTO_CELL * (shape[0] / shape[1] if shape else 0.75))
    width = left + len(headers) * (PHOTO_CELL + gap)
    height = top + sum(h + strip for h in heights)
    fig = Figure(figsize=(width, height))
    y = height - top
    for i, row in enumerate(rows):
        y -= heights[i]
        size = (round(PHOTO_CELL * dpi), round(heights[i] * dpi))
        for j, cell in enumerate(row.cells):
            ax = fig.add_axes(((left + j * (PHOTO_CELL + gap)) / width, y / height, PHOTO_CELL / width,
                               heights[i] / height))
            ax.set_xticks([])
            ax.set_yticks([])
            photo = images.photo(cell.path)
            if photo is not None:
                fitted = np.asarray(Image.fromarray(photo).resize(size, Image.Resampling.LANCZOS))
                ax.imshow(fitted, interpolation="nearest", aspect="auto")
            else:
                ax.set_facecolor("0.92")
                ax.text(0.5, 0.5, "missing" if cell.path else "not recorded", transform=ax.transAxes,
                        ha="center", va="center", fontsize=8, color="0.4")
            if cell.psnr is not None or cell.note:
                ax.set_xlabel(f"{cell.psnr:.2f} dB" if cell.psnr is not None else cell.note, fontsize=8, labelpad=2)
            for spine in ax.spines.values():
                spine.set_visible(False)
            if i == 0:
                ax.set_title(headers[j], fontsize=9)
            if j == 0:
                ax.set_ylabel(row.label, fontsize=8, rotation=0, ha="right", va="center", labelpad=6)
        y -= strip
    return fig


def figure_luma(methods: list[Method], images: Images, colors: dict) -> Figure | None:
    panels = []
    for m in methods:
        outputs = [images.hist(e["output"]) for e in m.examples if e.get("output")]
        refs = [images.hist(r) for r in dict.fromkeys(e.get("reference") for e in m.examples) if r]
        inputs = [images.hist(r) for r in dict.fromkeys(e.get("input") for e in m.examples) if r]
        outputs, refs, inputs = ([h for h in hs if h is not None] for hs in (outputs, refs, inputs))
        if outputs and refs:
            panels.append((m, _density(outputs), _density(refs), _density(inputs) if inputs else None))
    if not panels:
        return None
    ncols = min(4, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig = Figure(figsize=(3.2 * ncols, 2.5 * nrows + 0.3), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    centres = (np.arange(LUMA_BINS) + 0.5) / LUMA_BINS
    width = 1.0 / LUMA_BINS
    for ax, (m, out, ref, inp) in zip(axes, panels):
        ax.bar(centres, ref, width=width, color="0.75", label="references")
        if inp is not None:
            ax.step(centres, inp, where="mid", color="0.35", linestyle=":", linewidth=1, label="inputs")
        ax.step(centres, out, where="mid", color=colors[m.name], linewidth=1.5, label="outputs")
        ax.set_title(kind_name(m), fontsize=9)
        ax.set_xlim(0, 1)
        ax.set_xlabel("luminance l", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    axes[0].set_ylabel("fraction of pixels", fontsize=8)
    axes[0].legend(fontsize=7)
    return fig


def _density(hists: list[np.ndarray]) -> np.ndarray:
    total = np.sum(hists, axis=0).astype(np.float64)
    return total / max(total.sum(), 1.0)


def render_figure(fig: Figure, fmt_name: str, dpi: int) -> bytes:
    """The figure's bytes (png, svg or jpg); no timestamps, so the same data give the same file."""
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    options = {"metadata": {"Date": None}} if fmt_name == "svg" else {}
    if fmt_name == "jpg":
        options = {"pil_kwargs": {"quality": JPEG_QUALITY, "optimize": True}}
    with matplotlib.rc_context({"svg.hashsalt": "expocorr", "svg.fonttype": "path"}):
        fig.savefig(buf, format="jpeg" if fmt_name == "jpg" else fmt_name, dpi=dpi, facecolor="white", **options)
    return buf.getvalue()


# --- documents -----------------------------------------------------------------------------------


@dataclass
class Heading:
    text: str
    level: int = 2


@dataclass
class Para:
    text: str  # `code` and **bold** spans allowed
    notice: bool = False  # set apart (a boxed paragraph; a quote in Markdown)


@dataclass
class Items:
    items: list[str]


@dataclass
class Table:
    headers: list[str]
    rows: list[list[str]]
    caption: str | None = None
    id: str | None = None


@dataclass
class FigureBlock:
    name: str  # file name under reports/figures/
    caption: str


Block = Heading | Para | Items | Table | FigureBlock


def to_markdown(blocks: list[Block]) -> str:
    def cell(text: str) -> str:
        return str(text).replace("|", "\\|").replace("\n", " ")

    parts = []
    for b in blocks:
        if isinstance(b, Heading):
            parts.append(f"{'#' * b.level} {b.text}")
        elif isinstance(b, Para):
            parts.append(f"> {b.text}" if b.notice else b.text)
        elif isinstance(b, Items):
            parts.append("\n".join(f"- {item}" for item in b.items))
        elif isinstance(b, Table):
            lines = [f"*{b.caption}*", ""] if b.caption else []
            lines.append("| " + " | ".join(cell(h) for h in b.headers) + " |")
            lines.append("|" + "|".join("---:" if _numeric(h) else "---" for h in b.headers) + "|")
            lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in b.rows]
            parts.append("\n".join(lines))
        elif isinstance(b, FigureBlock):
            parts.append(f"![{b.caption}](figures/{b.name})\n\n*{b.caption}*")
    return "\n\n".join(parts) + "\n"


def _numeric(header: str) -> bool:
    return header not in ("method", "kind", "model", "#")


CSS = """
body { font-family: -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; margin: 2rem auto;
       max-width: 1300px; padding: 0 1.5rem; color: #1d1d1f; line-height: 1.45; background: #fff; }
h1 { border-bottom: 2px solid #ddd; padding-bottom: .3rem; }
h2 { margin-top: 2.2rem; border-bottom: 1px solid #eee; padding-bottom: .2rem; }
table { border-collapse: collapse; margin: .8rem 0 1.2rem; font-size: .9rem; }
caption { caption-side: top; text-align: left; font-style: italic; padding-bottom: .3rem; }
th, td { border: 1px solid #d0d0d0; padding: .3rem .6rem; white-space: nowrap; }
th { background: #f2f4f7; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.nc { color: #888; font-style: italic; }
tbody tr:nth-child(even) { background: #fafafa; }
table#leaderboard tbody tr:first-child { background: #eef7ee; font-weight: 600; }
.scroll { overflow-x: auto; }
figure { margin: 1rem 0 1.6rem; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: .9rem; color: #555; margin-top: .3rem; }
code { background: #f4f4f4; padding: 0 .25rem; border-radius: 3px; font-size: .9em; }
p.notice { border-left: 4px solid #d9822b; background: #fff6ea; padding: .6rem .9rem; }
"""

def _inline(text: str) -> str:
    text = re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", html.escape(text, quote=False))
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", text).replace("\n", "<br>")


def to_html(blocks: list[Block], title: str, figures: dict[str, bytes]) -> str:
    out = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           f"<title>{html.escape(title)}</title>", f"<style>{CSS}</style>", "</head>", "<body>"]
    for b in blocks:
        if isinstance(b, Heading):
            out.append(f"<h{b.level}>{_inline(b.text)}</h{b.level}>")
        elif isinstance(b, Para):
            out.append(f'<p class="notice">{_inline(b.text)}</p>' if b.notice else f"<p>{_inline(b.text)}</p>")
        elif isinstance(b, Items):
            out.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in b.items) + "</ul>")
        elif isinstance(b, Table):
            ident = f' id="{html.escape(b.id)}"' if b.id else ""
            rows = []
            for row in b.rows:
                cells = []
                for header, value in zip(b.headers, row):
                    cls = "nc" if value == NOT_COMPUTED else "num" if _numeric(header) else ""
                    cells.append(f'<td class="{cls}">{_inline(value)}</td>' if cls else f"<td>{_inline(value)}</td>")
                rows.append("<tr>" + "".join(cells) + "</tr>")
            caption = f"<caption>{_inline(b.caption)}</caption>" if b.caption else ""
            out.append(f'<div class="scroll"><table{ident}>{caption}<thead><tr>'
                       + "".join(f"<th>{_inline(h)}</th>" for h in b.headers)
                       + "</tr></thead><tbody>" + "".join(rows) + "</tbody></table></div>")
        elif isinstance(b, FigureBlock):
            data = base64.b64encode(figures[b.name]).decode("ascii")
            mime = MIME[Path(b.name).suffix[1:]]
            out.append(f'<figure id="fig-{html.escape(Path(b.name).stem)}"><img alt="{html.escape(b.caption)}" '
                       f'src="data:{mime};base64,{data}"><figcaption>{_inline(b.caption)}</figcaption></figure>')
    out += ["</body>", "</html>"]
    return "\n".join(out) + "\n"


# --- the stage -----------------------------------------------------------------------------------


def _protocol(methods: list[Method]) -> list[Block]:
    protocols = sorted({str(m.data["protocol"]) for m in methods if m.data.get("protocol")})
    gt = [m.name for m in methods if m.data.get("gt_mean")]
    caps = sorted({number(m.data.get("psnr_cap")) for m in methods if number(m.data.get("psnr_cap")) is not None})
    cap_text = (f"PSNR of identical images is capped at {' / '.join(f'{c:g}' for c in caps)} dB "
                "(`psnr_cap` of the metrics files; a capped value is marked \"(cap)\")"
                if caps else "the metrics files state no PSNR cap (`psnr_cap`)")
    return [
        Heading("Protocol"),
        Items([
            ("Every method corrects every test image at full resolution; outputs are 8-bit RGB and are compared "
             "with the reference (the headline reference when a dataset has several)."),
            f"PSNR: peak 255, mean squared error over all pixels and channels; {cap_text}.",
            f"SSIM: {SSIM_SETTINGS}.",
            "ΔE2000: CIEDE2000 colour difference, mean over pixels, in CIELAB (D65) via scikit-image.",
            ("Histogram similarity (hist lum / con / sat): histogram intersection of per-image luminance, contrast "
             "and saturation distributions, outputs vs references; see `src/expocorr/metrics/histogram.py`."),
            ("Overall and per-EV values are the evaluate stage's means over test images (`metrics/NAME.json`); "
             "under = EV < 0, over = EV > 0, zero = EV = 0, unless a benchmark dataset's protocol (below) defines "
             "the groups."),
            *(f"Dataset protocol: {text}." for text in protocols),
            *([f"GT-mean: the outputs of {', '.join(gt)} were scaled to their reference's mean grey before scoring "
               "(`evaluate.gt_mean`; not comparable with unscaled scores)."] if gt else []),
            (f"A metric shown as \"{NOT_COMPUTED}\" was not computed by the evaluate stage (e.g. a no-reference "
             "metric without its weights; the reason is in `metrics/details/NAME.json`); no value is substituted."),
        ]),
    ]


def _capped(methods: list[Method]) -> str:
    """'name: k of n images' for the methods whose outputs score the PSNR cap on pairs that count in
    the means (not identical pairs, which the means leave out); '' when none."""
    counts = []
    for m in methods:
        values = [finite_float(r.get("psnr")) for r in m.per_image if r.get("identical_pair") != "1"]
        hits = sum(1 for v in values if m.cap is not None and v is not None and v >= m.cap)
        if hits:
            counts.append(f"{m.name}: {hits} of {len(values)} images")
    return ", ".join(counts)


def _per_method(methods: list[Method], key: str) -> str:
    return ", ".join(f"{m.name}: {m.data.get(key)}" for m in methods)


def _agreed(methods: list[Method], describe) -> str:
    """`describe(method)` when every method gives the same, else each value with its methods."""
    groups: dict[str, list[str]] = defaultdict(list)
    for m in methods:
        groups[describe(m)].append(m.name)
    if len(groups) == 1:
        return next(iter(groups))
    return "; ".join(f"{value} ({', '.join(names)})" for value, names in groups.items())


def _recorded(m: Method, *keys: str) -> bool:
    return all(m.provenance.get(k) is not None for k in keys)


def _data_line(m: Method) -> str:
    p = m.provenance
    if not _recorded(m, "data_source", "rendered_scenes", "rendered_images", "test_scenes", "test_images"):
        return "not recorded"
    return (f"`{p['data_source']}`: {p['rendered_scenes']} scenes, {p['rendered_images']} images rendered; "
            f"test split: {p['test_scenes']} scenes, {p['test_images']} images")


def _when(stamp) -> str:
    return str(stamp).replace("T", " ").removesuffix("+00:00")[:16] + " UTC"


def _provenance(methods: list[Method]) -> list[Block]:
    """Where the numbers come from, as each method's evaluate run recorded it (metrics/details/NAME.json)."""
    stamps = sorted(_when(m.provenance["evaluated_at"]) for m in methods if _recorded(m, "evaluated_at"))
    date = "not recorded" if not stamps else stamps[0] if stamps[0] == stamps[-1] else f"{stamps[0]} to {stamps[-1]}"
    if stamps and len(stamps) < len(methods):
        date += f" ({len(methods) - len(stamps)} method(s) not recorded)"

    def value(key):
        return lambda m: f"`{m.provenance[key]}`" if _recorded(m, key) else "not recorded"

    def machine(m):
        p = m.provenance
        if not _recorded(m, "machine", "device", "software"):
            return "not recorded"
        return f"{p['machine']}, device `{p['device']}`; {p['software']}"

    return [Heading("Provenance"), Items([
        f"Data: {_agreed(methods, _data_line)}.",
        f"Code: git commit {_agreed(methods, value('git_commit'))}.",
        f"Params hash (of params.yaml as parsed when evaluated): {_agreed(methods, value('params_hash'))}.",
        f"Evaluated: {date}.",
        f"Machine: {_agreed(methods, machine)}.",
    ])]


def _test_scenes(methods: list[Method]) -> int | None:
    """The fewest test scenes any method was evaluated on, or None when none recorded it."""
    counts = [int(m.provenance["test_scenes"]) for m in methods if number(m.provenance.get("test_scenes")) is not None]
    return min(counts) if counts else None


def build(params: dict) -> tuple[list[Block], dict[str, Figure], list[dict]]:
    """The report's blocks, its figures (file name -> matplotlib Figure) and the leaderboard rows."""
    cfg = params["report"]
    methods = load_methods()
    latency = load_latency()
    logs = load_train_logs()
    names = [m.name for m in methods]
    colors = method_colors(names + sorted(set(logs) - set(names)))
    logs = dict(sorted(logs.items(), key=lambda kv: (kv[0] not in names, names.index(kv[0]) if kv[0] in names
                                                     else 0, kv[0])))
    scenes = _test_scenes(methods)
    ranked = scenes is None or scenes >= MIN_RANKED_SCENES
    rows = leaderboard(methods, latency, ranked)
    ext = cfg["figure_format"]
    images = Images()
    figures: dict[str, Figure] = {}

    headlines = sorted({str(m.data.get("headline_reference")) for m in methods})
    n_images = sorted({m.data.get("n_images") for m in methods if number(m.data.get("n_images")) is not None})
    order = "Ranked by headline PSNR." if ranked else "Listed by headline PSNR, not ranked (see below)."
    blocks: list[Block] = [
        Heading(cfg["title"], 1),
        Para(f"{len(methods)} method(s) on {' / '.join(str(n) for n in n_images) or 'an unknown number of'} test "
             f"image(s), headline reference `{'`, `'.join(headlines)}`. {order}"),
    ]
    if not ranked:
        blocks.append(Para(f"**Too few test scenes to rank the methods:** the test split has {scenes} scene(s), "
                           f"fewer than {MIN_RANKED_SCENES}. Differences between methods on so few scenes say more "
                           "about the scenes than about the methods: the leaderboard lists them by mean PSNR without "
                           "rank numbers. Add photos (`data.source`) or raise `split.fractions.test` to rank them.",
                           notice=True))
    blocks += _provenance(methods)
    if len(n_images) > 1:
        blocks.append(Para("Warning: the methods were evaluated on different numbers of test images "
                           f"({_per_method(methods, 'n_images')}); "
                           "their scores are not directly comparable."))
    if len(headlines) > 1:
        blocks.append(Para("Warning: the methods were scored against different headline references "
                           f"({_per_method(methods, 'headline_reference')})."))
    blocks += _protocol(methods)

    notes = [f"params: trainable parameters of a model (`n_parameters`); {NO_VALUE} for a baseline."]
    notes += [_extra_note(name, methods) for name in extra_sets(methods)]
    if any(m.oracle for m in methods):
        notes.append("oracle: a baseline that looks at the reference (or the true exposure) to correct; an upper "
                     "bound for its family, not a competitor.")
    notes.append(f"s / MP: seconds per megapixel, from `{LATENCY}` (its CPU run on the most megapixels; device in "
                 "brackets) where it has the method, else the evaluate stage's own timing "
                 "(`seconds_per_megapixel`, the evaluate device)." if latency else
                 "s / MP: seconds per megapixel measured by the evaluate stage (`seconds_per_megapixel`) on its "
                 "device; no inference benchmark (`reports/bench/infer_latency.json`) was found.")
    external = [m for m in methods if m.kind == "external"]
    if external:
        notes.append("external: another program's outputs (`evaluate.external`), matched to the test images by file "
                     "name and scored by the same code; an external method is scored on the test images it has an "
                     "output for (`n_missing`: those it has not, listed in `metrics/details/external-NAME.json`): "
                     + ", ".join(f"{m.name} {m.data.get('n_missing', NOT_COMPUTED)} missing" for m in external) + ".")
    identical = sorted({int(number(m.data.get("n_identical_pairs"))) for m in methods
                        if number(m.data.get("n_identical_pairs"))})
    if identical:
        notes.append(f"{' / '.join(map(str, identical))} test pair(s) have an input identical to the reference "
                     "(EV 0 renders of a photo, `n_identical_pairs`): they are left out of the overall, under and "
                     "over means and kept in the EV 0 values, where doing nothing scores the PSNR cap.")
    capped = _capped(methods)
    if capped:
        notes.append("Warning: some outputs are identical to their reference and score the PSNR cap on pairs that "
                     f"count in the means ({capped}); such images weigh heavily in a mean PSNR, so compare the "
                     "per-EV and under / over values too.")
    blocks += [Heading("Leaderboard"), _leaderboard_table(rows, methods, latency), Items(notes),
               Heading("Other metrics"), _other_metrics_table(methods)]
    blocks += _reference_tables(methods)

    blocks.append(Heading("Exposure"))
    fig = figure_per_ev(methods, colors)
    if fig is not None:
        figures[f"per_ev.{ext}"] = fig
        blocks.append(FigureBlock(f"per_ev.{ext}", "PSNR and SSIM per relative exposure (EV) of the input, one line "
                                  "per method (oracle baselines dashed)."))
        blocks.append(_per_ev_table(methods, sorted({ev for m in methods for ev in m.per_ev})))
    else:
        blocks.append(Para("No per-EV metrics in the metrics files."))
    fig = figure_under_over(methods)
    if fig is not None:
        figures[f"under_over.{ext}"] = fig
        blocks.append(FigureBlock(f"under_over.{ext}", "PSNR and SSIM on under-exposed (EV < 0) vs over-exposed "
                                  "(EV > 0) inputs."))
        blocks.append(_groups_table(methods))

    fig = figure_per_image(methods)
    if fig is not None:
        figures[f"per_image_psnr.{ext}"] = fig
        blocks += [Heading("Per-image PSNR"),
                   FigureBlock(f"per_image_psnr.{ext}", "Distribution of PSNR over test images (one point per row of "
                               "`metrics/NAME_per_image.csv`), best method on top.")]

    blocks.append(Heading("Training"))
    fig = figure_training(logs, colors)
    if fig is not None:
        figures[f"training.{ext}"] = fig
        blocks += [FigureBlock(f"training.{ext}", "Validation PSNR per epoch (dashed: the identity, i.e. the "
                               "uncorrected input, on the same validation images) and mean training loss, from "
                               "`models/NAME/train_log.csv`."), _training_table(logs)]
    else:
        blocks.append(Para(f"No training logs (`{MODELS}/NAME/train_log.csv`) found."))

    blocks += _qualitative(methods, cfg, images, figures)
    blocks += _unpaired(methods, cfg, images, figures)
    fig = figure_luma(methods, images, colors)
    if fig is not None:
        figures[f"luma_histograms.{ext}"] = fig
        blocks += [Heading("Luminance histograms"),
                   FigureBlock(f"luma_histograms.{ext}", f"Luminance (l = 0.27 R + 0.67 G + 0.06 B, as in the "
                               f"histogram-similarity metric; {LUMA_BINS} bins) of all example outputs of each method "
                               "(line) vs their references (grey bars) and inputs (dotted), as fractions of pixels.")]
    if images.missing:
        blocks.append(Para("Images named in the metrics files but not found or unreadable (shown as \"missing\"): "
                           + ", ".join(f"`{p}`" for p in images.missing) + "."))

    inputs = [p.as_posix() for m in methods for p in (m.source, m.details_source)]
    inputs += [f"{METRICS}/{m.source.stem}_per_image.csv" for m in methods if m.per_image]
    inputs += [f"{MODELS}/{name}/train_log.csv" for name in logs] + ([LATENCY.as_posix()] if latency else [])
    blocks += [Heading("Inputs"), Para("This report was built by `expocorr report` from: "
                                       + ", ".join(f"`{p}`" for p in sorted(inputs)) + ".")]
    return blocks, figures, rows


def _qualitative(methods: list[Method], cfg: dict, images: Images, figures: dict[str, Figure]) -> list[Block]:
    """The example grid (input / the grid methods / reference) and each model's worst case, as JPEG."""
    chosen = grid_methods(methods, cfg["grid_methods"])
    blocks: list[Block] = [Heading("Qualitative examples")]
    rows = grid_rows(chosen, cfg["max_examples"])
    fig = figure_photos(rows, ["input", *(kind_name(m) for m in chosen), "reference"], images, cfg["dpi"])
    if fig is not None:
        figures["qualitative.jpg"] = fig
        how = (f"the best {cfg['grid_methods']} by headline PSNR, oracles and the identity passed over"
               if isinstance(cfg["grid_methods"], int) else "as listed")
        blocks.append(FigureBlock("qualitative.jpg", (
            f"One row per test pair (scene, EV), the same for every method: {len(rows)} of the examples the "
            f"evaluate stage kept (`report.max_examples` = {cfg['max_examples']}); columns: the input, the methods "
            f"of `report.grid_methods` ({how}: {', '.join(m.name for m in chosen)}) and the reference; PSNR under "
            "each output.")))
    else:
        blocks.append(Para("No example outputs in the metrics files (`examples` of `metrics/details/NAME.json`)."))
    worst = worst_rows(methods, chosen)
    fig = figure_photos([row for _, row in worst], ["input", "output", "reference"], images, cfg["dpi"])
    if fig is not None:
        figures["worst_cases.jpg"] = fig
        blocks += [Heading("Worst cases"),
                   FigureBlock("worst_cases.jpg", "Each model's worst test pair by headline PSNR (and each grid "
                               "baseline's): the input, the method's output and the reference."),
                   Items([f"worst of {m.name}: {m.worst['scene']} at EV {ev_label(_ev_key(m.worst['ev']))}, PSNR "
                          f"{fmt(number(m.worst.get('psnr')), 2)} dB (`{m.worst.get('output')}`)" for m, _ in worst])]
    return blocks


def _unpaired_note(scores: dict) -> str:
    return " / ".join(f"{LABELS[k]} {finite_float(scores.get(k)):.2f}" for k in UNPAIRED_SCORES
                      if finite_float(scores.get(k)) is not None)


def unpaired_rows(name: str, chosen: list[Method], methods: list[Method], max_examples: int) -> list[PhotoRow]:
    """The grid of unpaired set `name`: its first `max_examples` photos whose outputs the evaluate stage
    kept (the first method with examples of the set gives the photos), the input (the identity's scores
    under it when evaluated) then each chosen method's output with its no-reference scores under it."""
    def kept(m: Method) -> dict:
        return {e.get("photo"): e for e in m.unpaired_details(name).get("examples") or [] if isinstance(e, dict)}

    first = next((list(kept(m).values()) for m in [*chosen, *methods] if kept(m)), [])
    identity = next((kept(m) for m in methods if m.name == "identity"), {})  # its scores are the inputs'
    rows = []
    for example in first[:max_examples]:
        photo = example.get("photo")
        source = Cell(example.get("input"), note=_unpaired_note(identity[photo]) if photo in identity else None)
        outputs = [Cell(ix[photo].get("output"), note=_unpaired_note(ix[photo])) if photo in ix else Cell(None)
                   for ix in map(kept, chosen)]
        rows.append(PhotoRow(str(photo), [source, *outputs]))
    return rows


def _unpaired(methods: list[Method], cfg: dict, images: Images, figures: dict[str, Figure]) -> list[Block]:
    """Real photos without references: BRISQUE / NIQE / grid artefacts per method and set, and one grid
    per set (JPEG)."""
    sets = unpaired_sets(methods)
    if not sets:
        return []
    counts = {name: sorted({int(m.unpaired[name]["n_images"]) for m in methods
                            if number(m.unpaired.get(name, {}).get("n_images")) is not None}) for name in sets}
    blocks: list[Block] = [Heading("Real photos without references"), Para(
        "The photos of `evaluate.unpaired_sets` (" + "; ".join(
            f"{name}: {' / '.join(map(str, counts[name])) or 'no'} photo(s)" for name in sets)
        + ") have no reference: each method's outputs are scored with the no-reference BRISQUE and NIQE "
        "(means over the photos; **lower is better**), and for grid artefacts: `grid` is how many 8-bit grey "
        "levels more of a 2-, 4- or 8-px periodic pattern the output has than its input (a faint printed "
        "checkerboard scores about 2; `expocorr.metrics.checkerboard`). The identity's row is the inputs' own scores. "
        "They say how natural an output looks, not whether its exposure is right; NIQE with the bundled "
        "pristine model is not comparable to published NIQE numbers.")]
    headers = ["method", *(f"{name} {LABELS[k]}" for name in sets for k in UNPAIRED_SCORES)]
    body = [[f"{kind_name(m)} (the inputs)" if m.name == "identity" else kind_name(m),
             *(fmt(m.score(k, m.unpaired.get(name, {})), 2) for name in sets for k in UNPAIRED_SCORES)]
            for m in methods]
    blocks.append(Table(headers, body, caption="No-reference scores on real photos (lower is better)",
                        id="unpaired"))
    missing = [f"{m.name} on {name}: {m.unpaired_details(name)['status']}" for m in methods for name in sets
               if str(m.unpaired_details(name).get("status", "")).startswith(NOT_COMPUTED)]
    if missing:
        blocks.append(Items(missing))
    chosen = grid_methods(methods, cfg["grid_methods"])
    for name in sets:
        rows = unpaired_rows(name, chosen, methods, cfg["max_examples"])
        fig = figure_photos(rows, ["input", *(kind_name(m) for m in chosen)], images, cfg["dpi"])
        if fig is None:
            continue
        figures[f"unpaired_{name}.jpg"] = fig
        blocks.append(FigureBlock(f"unpaired_{name}.jpg", (
            f"{name}: the first {len(rows)} photos whose outputs the evaluate stage kept (`report.max_examples` = "
            f"{cfg['max_examples']}); columns: the input and the methods of `report.grid_methods` "
            f"({', '.join(m.name for m in chosen)}); BRISQUE / NIQE / grid under each photo (lower is better).")))
    return blocks


def _read_leaderboard(path: Path) -> list[dict]:
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ReportError(f"{path}: missing") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ReportError(f"{path}: not a readable leaderboard JSON: {exc}") from None
    if not isinstance(rows, list) or not all(isinstance(r, dict) and "method" in r for r in rows):
        raise ReportError(f"{path}: not a leaderboard.json of the report stage (a list of rows with a 'method')")
    return rows


def _dataset_heading(record: dict | None) -> tuple[str, list[str]]:
    """A dataset's heading and its lines (a leaderboard written before rows recorded it: "not recorded")."""
    if record is None:
        return "Dataset not recorded", [("These rows do not record their dataset (a leaderboard of an older "
                                         "expocorr): run their report stage again.")]

    def value(key):
        return "not recorded" if record.get(key) is None else record[key]

    return f"Dataset: {value('source')}", [
        (f"Rendered: {value('scenes')} scenes, {value('images')} images; test split: {value('test_scenes')} scenes, "
         f"{value('test_images')} images."),
        f"Reference: `{value('reference')}`; resolution: {value('resolution')}.",
        f"SSIM: {value('ssim')}; PSNR of identical images capped at {value('psnr_cap')} dB.",
        *([f"Protocol: {record['protocol']}."] if record.get("protocol") else []),
        *(["GT-mean: outputs scaled to their reference's mean grey before scoring (`evaluate.gt_mean`)."]
          if record.get("gt_mean") else []),
    ]


def merge(files: list[str], out: str) -> None:
    """`expocorr report --merge A.json B.json ... --out OUT.md` (or ``.html``): the rows of several
    leaderboard.json files in one page, one table per dataset (rows whose ``dataset`` records are equal), best
    headline PSNR first, each row naming its file."""
    out_path = Path(out)
    if out_path.suffix not in (".md", ".html"):
        raise ReportError(f"--out {out}: must end in .md or .html")
    groups: dict[str, tuple[dict | None, list]] = {}
    for name in files:
        for row in _read_leaderboard(Path(name)):
            record = row.get("dataset") if isinstance(row.get("dataset"), dict) else None
            groups.setdefault(json.dumps(record, sort_keys=True), (record, []))[1].append((name, row))
    title = "expocorr leaderboards by dataset"
    blocks: list[Block] = [Heading(title, 1), Para(f"{len(files)} leaderboard(s) ({', '.join(f'`{f}`' for f in files)}), "
                                                   f"{len(groups)} dataset(s). Rows are compared within a dataset only.")]
    for record, rows in groups.values():
        heading, lines = _dataset_heading(record)
        rows.sort(key=lambda item: (number(item[1].get("psnr")) is None, -(number(item[1].get("psnr")) or 0.0)))
        body = [[str(row["method"]), str(row.get("kind")) + (" (oracle)" if row.get("oracle") else "")
                 + (f" ({row['n_missing']} missing)" if row.get("n_missing") else ""),
                 fmt(row.get("psnr"), 2), fmt(row.get("ssim"), 4), fmt(row.get("delta_e2000"), 2),
                 str(row.get("n_images")), f"`{name}`"] for name, row in rows]
        blocks += [Heading(heading), Items(lines),
                   Table(["method", "kind", "PSNR (dB)", "SSIM", "ΔE2000", "test images", "leaderboard"], body)]
    write_text(out_path, to_markdown(blocks) if out_path.suffix == ".md" else to_html(blocks, title, {}))
    log.info("report: %d leaderboard(s), %d dataset(s) -> %s", len(files), len(groups), out_path)


def _json_safe(value):
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def run(params: dict) -> None:
    """Write reports/report.md, report.html, leaderboard.json and figures/ from metrics/ and the train logs."""
    cfg = params["report"]
    blocks, figures, rows = build(params)
    rendered = {name: render_figure(fig, Path(name).suffix[1:], cfg["dpi"]) for name, fig in figures.items()}
    with atomic_dir(FIGURES) as tmp:
        os.chmod(tmp, 0o755)
        for name, data in rendered.items():
            (tmp / name).write_bytes(data)
    write_text(OUT / "report.md", to_markdown(blocks))
    write_text(OUT / "report.html", to_html(blocks, cfg["title"], rendered))
    leader = [{k: _json_safe(v) for k, v in row.items()} for row in rows]
    write_text(OUT / "leaderboard.json", json.dumps(leader, indent=2, ensure_ascii=False) + "\n")
    write_plot_data(leader)  # reports/plots/*.csv and reports/leaderboard.csv (dvc plots, snakemake --report)
    log.info("report: %d method(s), %d figure(s) -> %s, %s", len(rows), len(rendered), OUT / "report.md",
             OUT / "report.html")
