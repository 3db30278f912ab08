"""The report's tables (leaderboard, per-EV, groups, references, training) and its protocol and provenance
sections, as blocks."""

from __future__ import annotations

import logging
from collections import defaultdict

import numpy as np
from expocorr.stages.report.data import (DIGITS, HIST, LABELS, NO_VALUE, NOT_COMPUTED, OTHER_METRICS, SCORES,
                                         SSIM_SETTINGS, Method, ev_label, extra_sets, fmt, kind_label, number)
from expocorr.stages.report.document import Block, Heading, Items, Para, Table
from expocorr.tables import finite_float

log = logging.getLogger(__name__)


def leaderboard_table(rows: list[dict], methods: list[Method], latency: dict) -> Table:
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


def extra_note(name: str, methods: list[Method]) -> str:
    """What the leaderboard's columns of extra test set `name` measure, and on how many pairs."""
    counts = sorted({f"{int(n['n_scenes'])} scene(s), {int(n['n_images'])} pair(s)" for n in
                     ((m.data.get("extra_sets") or {}).get(name) or {} for m in methods)
                     if number(n.get("n_scenes")) is not None and number(n.get("n_images")) is not None})
    missing = [m.name for m in methods if name not in m.extra]
    return (f"{name} PSNR / SSIM: real exposure errors, the bracketed scenes of `evaluate.extra_sets.{name}` "
            f"({' / '.join(counts) or 'counts not recorded'}): every exposure against its scene's reference, pairs whose input is "
            "that reference (the exposure nearest mid-grey, by default) left out of the means; PSNR (dB) and SSIM without a set name: the synthetic "
            "test split." + (f" Not scored on {name}: {', '.join(missing)} ({NOT_COMPUTED})." if missing else ""))


def other_metrics_table(methods: list[Method]) -> Table:
    shown = {*SCORES, *HIST}
    extra = sorted({k for m in methods for k in m.overall if k not in shown and k not in OTHER_METRICS and k != "n"})
    keys = [*OTHER_METRICS, *extra]
    return Table(["method", *(LABELS.get(k, k) for k in keys)],
                 [[m.name, *(fmt(m.score(k), DIGITS.get(k, 3)) for k in keys)] for m in methods], id="other-metrics")


def per_ev_table(methods: list[Method], evs: list[float]) -> Table:
    body = [[m.name, *(_pair(m.per_ev.get(ev, {}), m.cap) for ev in evs)] for m in methods]
    return Table(["method", *(f"EV {ev_label(ev)}" for ev in evs)], body, caption="PSNR (dB) / SSIM per EV",
                 id="per-ev")


def _pair(group: dict, cap: float | None) -> str:
    psnr, ssim = number(group.get("psnr")), number(group.get("ssim"))
    if psnr is None and ssim is None:
        return NOT_COMPUTED
    return f"{fmt(psnr, 2, cap)} / {fmt(ssim, 4)}"


def groups_table(methods: list[Method]) -> Table:
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


def reference_tables(methods: list[Method]) -> list[Block]:
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


def training_table(logs: dict[str, dict[str, np.ndarray]]) -> Table:
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


def protocol_blocks(methods: list[Method]) -> list[Block]:
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


def capped_note(methods: list[Method]) -> str:
    """'name: k of n images' for the methods whose outputs score the PSNR cap on pairs that count in
    the means (not identical pairs, which the means leave out); '' when none."""
    counts = []
    for m in methods:
        values = [finite_float(r.get("psnr")) for r in m.per_image if r.get("identical_pair") != "1"]
        hits = sum(1 for v in values if m.cap is not None and v is not None and v >= m.cap)
        if hits:
            counts.append(f"{m.name}: {hits} of {len(values)} images")
    return ", ".join(counts)


def per_method(methods: list[Method], key: str) -> str:
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


def provenance_blocks(methods: list[Method]) -> list[Block]:
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
