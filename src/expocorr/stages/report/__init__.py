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

import json
import logging
import math
import os
from pathlib import Path

from expocorr.atomic import atomic_dir, write_text
from expocorr.plot_data import write as write_plot_data
from expocorr.stages.report.data import (FIGURES, LABELS, LATENCY, METRICS, MIN_RANKED_SCENES, MODELS, NO_VALUE,
                                         NOT_COMPUTED, OUT, UNPAIRED_SCORES, Method, ReportError, ev_key, ev_label,
                                         extra_sets, fmt, kind_name, leaderboard, load_latency, load_methods,
                                         load_train_logs, number, unpaired_sets)
from expocorr.stages.report.document import Block, FigureBlock, Heading, Items, Para, Table, to_html, to_markdown
from expocorr.stages.report.figures import (LUMA_BINS, Cell, Images, PhotoRow, figure_luma, figure_per_ev,
                                            figure_per_image, figure_photos, figure_training, figure_under_over,
                                            grid_methods, grid_rows, method_colors, render_figure, worst_rows)
from expocorr.stages.report.tables import (capped_note, extra_note, groups_table, leaderboard_table,
                                           other_metrics_table, per_ev_table, per_method, protocol_blocks,
                                           provenance_blocks, reference_tables, training_table)
from expocorr.tables import finite_float
from matplotlib.figure import Figure

log = logging.getLogger(__name__)


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
    blocks += provenance_blocks(methods)
    if len(n_images) > 1:
        blocks.append(Para("Warning: the methods were evaluated on different numbers of test images "
                           f"({per_method(methods, 'n_images')}); "
                           "their scores are not directly comparable."))
    if len(headlines) > 1:
        blocks.append(Para("Warning: the methods were scored against different headline references "
                           f"({per_method(methods, 'headline_reference')})."))
    blocks += protocol_blocks(methods)

    notes = [f"params: trainable parameters of a model (`n_parameters`); {NO_VALUE} for a baseline."]
    notes += [extra_note(name, methods) for name in extra_sets(methods)]
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
    capped = capped_note(methods)
    if capped:
        notes.append("Warning: some outputs are identical to their reference and score the PSNR cap on pairs that "
                     f"count in the means ({capped}); such images weigh heavily in a mean PSNR, so compare the "
                     "per-EV and under / over values too.")
    blocks += [Heading("Leaderboard"), leaderboard_table(rows, methods, latency), Items(notes),
               Heading("Other metrics"), other_metrics_table(methods)]
    blocks += reference_tables(methods)

    blocks.append(Heading("Exposure"))
    fig = figure_per_ev(methods, colors)
    if fig is not None:
        figures[f"per_ev.{ext}"] = fig
        blocks.append(FigureBlock(f"per_ev.{ext}", "PSNR and SSIM per relative exposure (EV) of the input, one line "
                                  "per method (oracle baselines dashed)."))
        blocks.append(per_ev_table(methods, sorted({ev for m in methods for ev in m.per_ev})))
    else:
        blocks.append(Para("No per-EV metrics in the metrics files."))
    fig = figure_under_over(methods)
    if fig is not None:
        figures[f"under_over.{ext}"] = fig
        blocks.append(FigureBlock(f"under_over.{ext}", "PSNR and SSIM on under-exposed (EV < 0) vs over-exposed "
                                  "(EV > 0) inputs."))
        blocks.append(groups_table(methods))

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
                               "`models/NAME/train_log.csv`."), training_table(logs)]
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
                   Items([f"worst of {m.name}: {m.worst['scene']} at EV {ev_label(ev_key(m.worst['ev']))}, PSNR "
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
