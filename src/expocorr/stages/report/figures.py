"""The report's figures (matplotlib, Agg): scores per EV, under/over, per image, training curves, the photo
grids and the luminance histograms; `render_figure` encodes one as PNG, SVG or JPEG."""

from __future__ import annotations

import io
import logging
import math
from dataclasses import dataclass

import matplotlib
import numpy as np
from expocorr.imaging.images import ImageError, read_rgb, resize_max_side, to_uint8
from expocorr.methods import LEARNED_KINDS
from expocorr.metrics.histogram import luminance
from expocorr.stages.report.data import (LABELS, METRICS, NOT_COMPUTED, Method, ReportError, ev_key, ev_label,
                                         kind_name, number)
from expocorr.tables import finite_float
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from PIL import Image

log = logging.getLogger(__name__)


PHOTO_CELL = 2.8      # width of a photo in the qualitative figures (inches, at report.dpi)
PHOTO_MAX = 1024      # photos are read down to this long side (px) before they are fitted to a cell
JPEG_QUALITY = 85     # the photo figures are JPEG: a fraction of their size as PNG
LUMA_BINS = 64


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
    indexes = [{(e.get("scene"), ev_key(e["ev"])): e for e in m.examples} for m in chosen]
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
        label = f"{m.name}\n{w.get('scene')}\nEV {ev_label(ev_key(w['ev']))}"
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
