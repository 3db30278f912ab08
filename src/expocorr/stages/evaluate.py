"""Stage `evaluate`: one method on the test split at full resolution -> metrics/NAME.json,
metrics/details/NAME.json, metrics/NAME_per_image.csv and the example outputs in results/NAME/.

``metrics/NAME.json`` holds numbers only, the scores that `dvc metrics show` and `dvc metrics diff`
compare (and MLflow logs): ``overall``, ``under``, ``over`` and ``per_ev``, and ``extra``: one group per
set of ``evaluate.extra_sets`` (real bracketed scenes rendered by `expocorr render-extra` into
data/extra/SET/), ``{psnr, ssim, delta_e2000, under, over}``, and ``unpaired``: one group per set of
``evaluate.unpaired_sets`` (real photos without references, data/extra/SET/), the means of the no-reference
scores computed and ``n_images``. Everything else goes to
``metrics/details/NAME.json``: what the method is, counts, timing, scores against every reference,
no-reference status, the example outputs and the worst case, the params and the provenance; the extra
sets' per-image scores go to ``metrics/details/NAME_extra.csv`` and the unpaired sets' to
``metrics/details/NAME_unpaired.csv`` (both with a ``set`` column). The outputs of the first
``evaluate.n_examples`` photos of each unpaired set are kept in results/NAME/unpaired/SET/; a method that
cannot run on a lone photo of unknown exposure (an oracle, a stack merge) has the set "not computed".

Reads only ``evaluate.*`` (and ``render.*`` as context for the oracle baseline), the test split, the
rendered images, data/extra and, for a model, ``models/NAME/model.pt``; for ``external:NAME``, the outputs
another program left in the folder of ``evaluate.external.NAME`` (`expocorr.external`: the matching rule),
scored on the test split only, into files named ``external-NAME``. The provenance block records the
circumstances of the run as they were (``data.source``, a hash of the params, commit, date, machine).
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import time
from collections import defaultdict
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import mlflow
import numpy as np
from tqdm import tqdm

from expocorr import external, methods, tracking
from expocorr.sources import stacks
from expocorr.stages import render_extra, split
from expocorr.atomic import atomic_dir, write_text
from expocorr.baselines import BASELINES
from expocorr.baselines.registry import BaselineError
from expocorr.errors import UserError
from expocorr.imaging.colour import LUMA_BT601
from expocorr.imaging.images import read_rgb, to_uint8, write_rgb
from expocorr.metrics import HistogramSimilarity, NoReference, delta_e2000, psnr, ssim
from expocorr.metrics.checkerboard import grid_excess
from expocorr.metrics.noref import NOT_COMPUTED
from expocorr.params import EVALUATE_PROTOCOL
from expocorr.imaging.synthesis import ev_name
from expocorr.stages.render import IMAGES
from expocorr.tables import read_csv, write_csv

log = logging.getLogger(__name__)

METRICS = Path("metrics")
DETAILS = METRICS / "details"
RESULTS = Path("results")
SCORES = ("psnr", "ssim", "delta_e2000")
EV_SCORES = ("psnr", "ssim")  # per EV in metrics/NAME.json (per image, ΔE too: metrics/NAME_per_image.csv)
EXTRA_FIELDS = ["set", "scene", "ev", "input", "reference", "identical_pair", *SCORES]  # metrics/details/NAME_extra.csv
UNPAIRED_FIELDS = ["set", "photo", "input", "output", "grid"]  # + the no-reference scores: ..._unpaired.csv


class EvaluateError(UserError, RuntimeError):
    """The evaluation cannot run; the message names the method, file or key."""


def outputs(method: str) -> dict[str, Path]:
    """The declared outputs of `expocorr evaluate --method method` (``external:NAME``: files named
    ``external-NAME``)."""
    name = external.stem(method)
    return {"json": METRICS / f"{name}.json", "details": DETAILS / f"{name}.json",
            "csv": METRICS / f"{name}_per_image.csv", "extra": DETAILS / f"{name}_extra.csv",
            "unpaired": DETAILS / f"{name}_unpaired.csv", "results": RESULTS / name}


def reference_columns(rows: list[dict], headline: str) -> tuple[list[str], str]:
    """The reference columns present in the split, and the headline one (`evaluate.headline_reference`)."""
    columns = [c for c in rows[0] if c.startswith("reference") and any(r.get(c) for r in rows)]
    for candidate in (f"reference_{headline}", headline, "reference"):
        if candidate in columns:
            return columns, candidate
    raise EvaluateError(f"evaluate.headline_reference: {headline!r} matches no reference column ({columns})")


def example_rows(rows: list[dict], n: int) -> list[dict]:
    """`n` (scene, EV) rows of the test split, the same for every method: one scene after another, each
    at the next EV of a rotation that alternates under- and over-exposure, strongest first (−1.5, +1.5,
    −1, +1, 0), started one step further on each scene; so a few examples span scenes and both errors."""
    by_scene: dict[str, dict[float, dict]] = defaultdict(dict)
    for row in rows:
        by_scene[row["scene"]].setdefault(float(row["ev"]), row)
    evs = sorted({ev for pairs in by_scene.values() for ev in pairs})
    under, over = [ev for ev in evs if ev < 0], [ev for ev in evs if ev > 0][::-1]
    rotation = [ev for pair in zip(under, over) for ev in pair] + under[len(over):] + over[len(under):]
    rotation += [ev for ev in evs if ev == 0]
    order = []
    for s, scene in enumerate(sorted(by_scene)):
        own = [ev for ev in rotation if ev in by_scene[scene]]
        start = s % len(own)
        order += [(k, s, by_scene[scene][ev]) for k, ev in enumerate(own[start:] + own[:start])]
    return [row for _, _, row in sorted(order, key=lambda t: t[:2])[:max(n, 0)]]


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else float("nan")


def exposure(record: dict) -> str:
    """A scored image's group: the dataset's own (`exposure` column: MSEC counts EV 0 as over, LOL is all
    under, LCDP mixed), else under for EV < 0, over for EV > 0, '' for EV 0."""
    if record.get("exposure"):
        return record["exposure"]
    return "under" if record["ev"] < 0 else "over" if record["ev"] > 0 else ""


def gt_mean(output: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """`output` (uint8) scaled so its mean grey equals `reference`'s, clipped, truncated to uint8: the "GT-mean"
    scoring of low-light papers, as in KinD's evaluate_LOLdataset.py and LLFlow's test code (grey = BT.601 luma,
    OpenCV's BGR2GRAY weights)."""
    weights = np.array(LUMA_BT601, np.float32)
    out, ref = output.astype(np.float32) / 255.0, reference.astype(np.float32) / 255.0
    mean_out = float((out @ weights).mean())
    if mean_out == 0.0:  # a black output: no scale brings it to the reference's mean
        return output
    return (np.clip(out * (float((ref @ weights).mean()) / mean_out), 0.0, 1.0) * 255.0).astype(np.uint8)


def aggregate(per_image: list[dict], column: str) -> tuple[dict, dict]:
    """Means of PSNR/SSIM/ΔE against reference `column` (`overall`, `under`, `over`: `exposure`; PSNR and
    SSIM `per_ev`), and the number of images behind each mean.

    `overall` leaves out pairs whose input already equals the headline reference (a synthetic EV 0
    render): doing nothing scores the PSNR cap on them, which would rank the identity first. They
    still count in `per_ev`, where they measure how much a method harms a good photo.
    """
    keys = [k for k in (*SCORES, "psnr_y", "ssim_y") if f"{k}:{column}" in per_image[0]]

    def means(subset: list[dict], names) -> dict:
        return {k: _mean([r[f"{k}:{column}"] for r in subset]) for k in names}

    groups = {"overall": [r for r in per_image if not r["identical_pair"]] or per_image,
              "under": [r for r in per_image if exposure(r) == "under"],
              "over": [r for r in per_image if exposure(r) == "over"]}
    groups = {name: subset for name, subset in groups.items() if subset}
    by_ev = {str(ev): [r for r in per_image if r["ev"] == ev] for ev in sorted({r["ev"] for r in per_image})}
    scores = {name: means(subset, keys) for name, subset in groups.items()}
    scores["per_ev"] = {ev: means(subset, [k for k in EV_SCORES if k in keys]) for ev, subset in by_ev.items()}
    counts = {name: len(subset) for name, subset in groups.items()}
    counts["per_ev"] = {ev: len(subset) for ev, subset in by_ev.items()}
    return scores, counts


def provenance(params: dict, rows: list[dict], device) -> dict:
    """What and where this evaluation ran on: the data source and the size of its rendered set and of
    the test split, the commit, a hash of the params (as parsed), the date and the machine."""
    data = params["data"]
    where = {"folder": data["folder"], "raw": data["folder"], "url": data["url"],
             "stacks": data["stacks"]["preset"] or data["folder"] or data["url"]}.get(data["source"])
    inputs = [p for p in IMAGES.rglob("*.png") if not p.name.startswith("reference")] if IMAGES.is_dir() else []
    gpu = None
    if str(device).startswith("cuda"):  # a model's torch.device (a baseline runs on "cpu")
        import torch

        gpu = torch.cuda.get_device_name(device)
    return {
        "data_source": data["source"] + (f" ({where})" if where else ""),
        "rendered_scenes": len({p.relative_to(IMAGES).parts[0] for p in inputs}), "rendered_images": len(inputs),
        "test_scenes": len({r["scene"] for r in rows}), "test_images": len(rows),
        "git_commit": tracking.git_commit(), "params_hash": tracking.params_hash(params),
        "evaluated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.node()} ({platform.system()} {platform.machine()}, {os.cpu_count()} CPUs)",
        "device": str(device) + (f" ({gpu})" if gpu else ""),
        "software": f"Python {platform.python_version()}, torch {metadata.version('torch')}",
    }


def run(params: dict, method: str) -> None:
    """Evaluate `method` (a trained model, a baseline, or ``external:NAME``: the outputs in the folder of
    ``evaluate.external.NAME``) on data/splits/test.csv."""
    cfg = params["evaluate"]
    rows = read_csv(split.OUT / "test.csv")
    if not rows:
        raise EvaluateError(f"{split.OUT / 'test.csv'}: the test split is empty")
    columns, headline = reference_columns(rows, cfg["headline_reference"])
    for name, kind in render_extra.set_kinds(cfg).items():  # before any work
        if external.name_of(method) is None and not render_extra.manifest(name).exists():  # external: not read
            key = "extra_sets" if kind == "bracketed" else "unpaired_sets"
            raise EvaluateError(f"{render_extra.manifest(name)}: missing; evaluate.{key} names {name!r}: run "
                                "`expocorr render-extra` first")
    device, scored, matching = "cpu", rows, {}
    if external.name_of(method) is not None:  # another program's outputs: scored where they exist
        corrector, scored, matching = _external(cfg, external.name_of(method), rows)
    else:
        if method not in BASELINES:  # torch: for a model only
            from expocorr import inference

            try:
                device = inference.pick_device(cfg["device"])
            except methods.MethodError as exc:
                raise EvaluateError(f"evaluate.device: {exc}") from None
        corrector = methods.load_method(method, device)
    if method in params["train"]["models"] and corrector.kind != "model":
        raise EvaluateError(f"--method {method}: listed in train.models but not loadable as a model")
    noref = NoReference(cfg["noref"], device)
    for name, why in noref.status().items():  # one line per score: computed, or the reason it is not
        log.info("evaluate %s: %s: %s", method, name, why)
    histogram = HistogramSimilarity()
    examples = {(r["scene"], r["ev"]): i for i, r in enumerate(example_rows(rows, cfg["n_examples"]))}
    files = outputs(method)

    per_image, seconds, megapixels, max_side = [], 0.0, 0.0, 0
    with atomic_dir(files["results"]) as results_tmp:
        for row in tqdm(scored, desc=f"evaluate {method}", unit="image", disable=None):
            image, output, elapsed = _correct(corrector, row, params)
            seconds += elapsed
            megapixels += image.shape[0] * image.shape[1] / 1e6
            max_side = max(max_side, *image.shape[:2])
            record = {"scene": row["scene"], "ev": float(row["ev"]), "input": row["input"], "reference": row[headline],
                      "exposure": row.get("exposure") or ""}
            references = {column: to_uint8(read_rgb(row[column])) for column in columns}
            record["identical_pair"] = bool(np.array_equal(to_uint8(image), references[headline]))
            _score(record, row, output, references, cfg)
            histogram.add(output, references[headline])
            record.update(_round6(noref.score(output)))
            noref.add(output)
            record["_output"], record["_example"] = output, examples.get((row["scene"], row["ev"]))
            per_image.append(record)
        kept = sorted((r for r in per_image if r["_example"] is not None), key=lambda r: r["_example"])
        worst = min(per_image, key=lambda r: r[f"psnr:{headline}"])
        for record in kept + [worst]:
            name = f"{record['scene']}_{ev_name(record['ev'])}.png"
            write_rgb(results_tmp / name, record["_output"])
            record["output"] = (files["results"] / name).as_posix()
        unpaired, unpaired_details, unpaired_rows = {}, {}, []
        own_sets = corrector.kind != "external"  # another program's outputs cover the test split only
        for name in cfg["unpaired_sets"] or {}:
            if not own_sets:
                unpaired_details[name] = {"n_images": 0, "status": f"{NOT_COMPUTED}: another program's outputs "
                                                                   "(evaluate.external) cover the test split only"}
                continue
            scores_, details_, table_ = evaluate_unpaired(name, corrector, params, noref,
                                                          (results_tmp, files["results"]))
            unpaired[name], unpaired_details[name] = scores_, details_
            unpaired_rows += table_

    extra, extra_details, extra_rows = {}, {}, []
    for name in (cfg["extra_sets"] or {}) if own_sets else ():
        scores_, details_, table_ = evaluate_extra(name, corrector, params)
        extra[name], extra_details[name] = scores_, details_
        extra_rows += table_
    scores, counts = aggregate(per_image, headline)
    set_level = _round6(noref.result())  # the Inception Score of the set: no per-image column
    splits = set_level.pop("inception_score_splits", None)  # a count: details
    scores["overall"].update({**histogram.result(), **_noref_means(per_image, noref), **set_level})
    metrics = _numbers({**scores, **({"extra": extra} if extra else {}),
                        **({"unpaired": unpaired} if unpaired else {})})
    details = {
        "method": method, "kind": corrector.kind, "oracle": corrector.oracle, "headline_reference": headline,
        "protocol": "; ".join(sorted({r["protocol"] for r in rows if r.get("protocol")})) or None,
        "gt_mean": cfg["gt_mean"], "psnr_cap": cfg["psnr_cap"], "n_images": len(per_image),
        "n_identical_pairs": sum(r["identical_pair"] for r in per_image), "n": counts,
        **matching, "n_parameters": corrector.n_parameters,
        "seconds_per_megapixel": seconds / megapixels if own_sets else None,  # external: not its run time
        "references": {c: _numbers({k: v for k, v in aggregate(per_image, c)[0].items() if k in ("overall", "per_ev")})
                       for c in columns},
        "noref": noref.status(),
        **({"inception_score_splits": splits} if splits is not None else {}),
        **({"extra_sets": extra_details} if extra_details else {}),
        **({"unpaired_sets": unpaired_details} if unpaired_details else {}),
        "examples": [_example(r, headline) for r in kept],
        "worst": _example(worst, headline),
        "provenance": {**provenance(params, rows, device), "test_max_side": max_side},  # px, scored as they are
        "params": {"evaluate": protocol(params, method), "method": corrector.settings},
    }

    table = [{"scene": r["scene"], "ev": r["ev"], "input": r["input"], "reference": r["reference"],
              "identical_pair": int(r["identical_pair"]),
              **{k.replace(f":{headline}", ""): v for k, v in r.items() if k.endswith(f":{headline}")},
              **{k: r[k] for k in noref.names if k in r}} for r in per_image]
    write_csv(files["csv"], table, list(table[0].keys()))
    write_csv(files["extra"], extra_rows, EXTRA_FIELDS + (["psnr_y", "ssim_y"] if cfg["y_channel"] else []))
    write_csv(files["unpaired"], unpaired_rows, UNPAIRED_FIELDS + list(noref.names))
    write_text(files["details"], json.dumps(_finite(details), indent=2) + "\n")
    write_text(files["json"], json.dumps(metrics, indent=2) + "\n")
    _log_to_mlflow(params, method, corrector)
    overall = metrics["overall"]
    log.info("evaluate %s: %d images, PSNR %.2f dB, SSIM %.4f, ΔE2000 %.2f (vs %s)", method, len(per_image),
             overall["psnr"], overall["ssim"], overall["delta_e2000"], headline)
    for name, group in metrics.get("extra", {}).items():
        log.info("evaluate %s: extra set %s: %d pairs, PSNR %.2f dB, SSIM %.4f, ΔE2000 %.2f", method, name,
                 extra_details[name]["n_images"], group["psnr"], group["ssim"], group["delta_e2000"])
    for name, details_ in unpaired_details.items():
        group = metrics.get("unpaired", {}).get(name, {})
        means = ", ".join(f"{k} {v:.3f}" for k, v in group.items() if k != "n_images")
        log.info("evaluate %s: unpaired set %s: %d photos, %s", method, name, details_["n_images"],
                 means or details_["status"])


def protocol(params: dict, method: str) -> dict:
    """The `evaluate` params this evaluation of `method` reads, as its stage declares them
    (`params.EVALUATE_PROTOCOL`, and ``external.NAME`` for ``external:NAME``): what it records."""
    cfg = params["evaluate"]
    name = external.name_of(method)
    return {**{k: cfg[k] for k in EVALUATE_PROTOCOL}, **({"external": {name: cfg["external"][name]}} if name else {})}


def _external(cfg: dict, name: str, rows: list[dict]) -> tuple[methods.Method, list[dict], dict]:
    """Method ``external:NAME``, the test rows it has an output for, and what the details record of the
    matching (``folder``, ``n_missing``, ``missing``: the rows without an output and the file stem each
    needs, ``unmatched``: the folder's files that are no row's), logged as one warning line when not empty."""
    try:
        folder = external.folder(cfg, name)
        files, missing, unmatched = external.match(folder, rows)
    except OSError as exc:
        raise EvaluateError(f"evaluate.external.{name}: cannot list its folder: {exc}") from None
    if not files:
        raise EvaluateError(f"evaluate.external.{name}: {folder}: no file matches a test image (expected names "
                            f"such as {external.expected_stem(rows[0])}.png: SCENE_<ev name>, README \"Other "
                            "methods' outputs\")")
    if missing or unmatched:
        log.warning("evaluate external:%s: %d of %d test images have no output in %s (scored without them: %s); "
                    "%d file(s) match no test image (%s); listed in %s", name, len(missing), len(rows), folder,
                    ", ".join(external.expected_stem(r) for r in missing) or "none", len(unmatched),
                    ", ".join(unmatched) or "none", outputs(external.PREFIX + name)["details"])
    matching = {"folder": folder.as_posix(), "n_missing": len(missing),
                "missing": [{"scene": r["scene"], "ev": float(r["ev"]), "input": r["input"],
                             "expected": external.expected_stem(r)} for r in missing],
                "unmatched": unmatched}
    return external.method(name, files), [r for r in rows if r["input"] in files], matching


def _correct(corrector: methods.Method, row: dict, params: dict) -> tuple[np.ndarray, np.ndarray, float]:
    """(the input of a manifest row, `corrector`'s uint8 output, the seconds it took)."""
    image = read_rgb(row["input"])
    ctx = {"ev": float(row["ev"]), "render": params["render"]}
    if row.get("tau"):  # render.tau a range: the scene's own draw
        ctx["tau"] = float(row["tau"])
    if corrector.kind == "external":  # its output is the file matched to this input
        ctx["input"] = row["input"]
    if row.get("stack") and corrector.kind == "baseline":  # exposure stacks: the scene's registered bracket
        ctx["stack"] = stacks.read_stack(row["stack"])
    t0 = time.perf_counter()
    output = to_uint8(corrector(image, ctx))
    return image, output, time.perf_counter() - t0


def _score(record: dict, row: dict, output: np.ndarray, references: dict, cfg: dict) -> None:
    """Add PSNR/SSIM/ΔE (and the luma scores with `evaluate.y_channel`) against each reference column; with
    `evaluate.gt_mean` the output is first scaled to each reference's mean grey (`gt_mean`)."""
    scored = output
    for column, reference in references.items():
        if reference.shape != scored.shape:
            raise EvaluateError(f"{row[column]}: reference size {reference.shape} differs from the "
                                f"output's {scored.shape} for {row['input']}")
        output = gt_mean(scored, reference) if cfg["gt_mean"] else scored
        record[f"psnr:{column}"] = min(psnr(output, reference), cfg["psnr_cap"])
        record[f"ssim:{column}"] = ssim(output, reference)
        record[f"delta_e2000:{column}"] = delta_e2000(output, reference)
        if cfg["y_channel"]:
            record[f"psnr_y:{column}"] = min(psnr(output, reference, y_channel=True), cfg["psnr_cap"])
            record[f"ssim_y:{column}"] = ssim(output, reference, y_channel=True)


def evaluate_extra(name: str, corrector: methods.Method, params: dict) -> tuple[dict, dict, list[dict]]:
    """Score `corrector` on extra set `name` (data/extra/NAME/manifest.csv): its metrics group
    (``{psnr, ssim, delta_e2000, under, over}``; identical pairs, the reference exposure against itself,
    left out of the overall means as on the test split), its details (counts, per EV) and its per-image rows."""
    path = render_extra.manifest(name)
    rows = read_csv(path)
    if not rows:
        raise EvaluateError(f"{path}: no rows (evaluate.extra_sets.{name})")
    per_image = []
    for row in tqdm(rows, desc=f"evaluate {corrector.name} on {name}", unit="image", disable=None):
        image, output, _ = _correct(corrector, row, params)
        reference = to_uint8(read_rgb(row["reference"]))
        record = {"set": name, "scene": row["scene"], "ev": float(row["ev"]), "input": row["input"],
                  "reference": row["reference"], "identical_pair": bool(np.array_equal(to_uint8(image), reference))}
        _score(record, row, output, {"reference": reference}, params["evaluate"])
        per_image.append(record)
    scores, counts = aggregate(per_image, "reference")
    group = {**scores["overall"], **{k: scores[k] for k in ("under", "over") if k in scores}}
    details = {"manifest": path.as_posix(), "n_images": len(per_image), "n_scenes": len({r["scene"] for r in rows}),
               "n_identical_pairs": sum(r["identical_pair"] for r in per_image), "n": counts,
               "per_ev": _numbers(scores["per_ev"])}
    table = [{**{k: r[k] for k in ("set", "scene", "ev", "input", "reference")},
              "identical_pair": int(r["identical_pair"]),
              **{k.removesuffix(":reference"): v for k, v in r.items() if k.endswith(":reference")}} for r in per_image]
    return group, details, table


def evaluate_unpaired(name: str, corrector: methods.Method, params: dict, noref: NoReference,
                      results: tuple[Path, Path]) -> tuple[dict, dict, list[dict]]:
    """Run `corrector` on unpaired set `name` (data/extra/NAME/manifest.csv, no EV known) and score each
    output with `noref` and for grid artefacts (``grid``: `checkerboard.grid_excess` over its input, in
    8-bit grey levels): its metrics group (the mean of each score computed, ``n_images``), its details
    (status, counts, the examples kept) and its per-image rows. The first ``evaluate.n_examples`` outputs
    are written under unpaired/NAME/ of `results` (the temporary folder, and its final place)."""
    path = render_extra.manifest(name)
    rows = read_csv(path)
    if not rows:
        raise EvaluateError(f"{path}: no rows (evaluate.unpaired_sets.{name})")
    ctx, kept = {"ev": None, "render": params["render"]}, params["evaluate"]["n_examples"]
    table = []
    for i, row in enumerate(tqdm(rows, desc=f"evaluate {corrector.name} on {name}", unit="photo", disable=None)):
        source = read_rgb(row["input"])
        try:
            output = to_uint8(corrector(source, ctx))
        except BaselineError as exc:  # an oracle or a stack merge: needs what a lone photo does not have
            return {}, {"manifest": path.as_posix(), "n_images": 0, "status": f"{NOT_COMPUTED}: {exc}"}, []
        record = {"set": name, "photo": row["photo"], "input": row["input"], "output": "",
                  "grid": round(grid_excess(output / 255.0, source), 6),
                  **{k: v for k, v in _round6(noref.score(output)).items() if k in noref.names}}
        if i < kept:
            file = Path("unpaired") / name / f"{row['photo']}.png"
            write_rgb(results[0] / file, output)
            record["output"] = (results[1] / file).as_posix()
        table.append(record)
    details = {"manifest": path.as_posix(), "n_images": len(table), "status": "computed",
               "examples": [r for r in table if r["output"]]}
    return {**_noref_means(table, noref), "grid": _mean([r["grid"] for r in table]), "n_images": len(table)}, \
        details, table


def _example(record: dict, headline: str) -> dict:
    return {"scene": record["scene"], "ev": record["ev"], "input": record["input"], "output": record["output"],
            "reference": record["reference"], "psnr": record[f"psnr:{headline}"]}


def _round6(scores: dict) -> dict:
    # No-reference scores go through BLAS/libsvm/conv kernels, whose last bits vary run to run: 6 decimals.
    return {k: round(v, 6) if isinstance(v, float) else v for k, v in scores.items()}


def _noref_means(per_image: list[dict], noref: NoReference) -> dict:
    """Mean of each per-image no-reference score computed (a score not computed has no entry)."""
    out = {}
    for name in noref.names:
        values = [r[name] for r in per_image if isinstance(r.get(name), (int, float)) and math.isfinite(r[name])]
        if values:
            out[name] = _mean(values)
    return out


def _numbers(tree: dict) -> dict:
    """Only the finite numbers of a nested dict (a NaN mean is an empty group, a string a score not
    computed): what metrics/NAME.json may hold."""
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            value = _numbers(value)
            if value:
                out[key] = value
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            out[key] = value
    return out


def _finite(value):
    """JSON-safe: NaN/inf floats become null."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _log_to_mlflow(params: dict, method: str, corrector: methods.Method) -> None:
    """Log the numeric leaves of metrics/METHOD.json as written (`tracking.metric_leaves`: test_psnr,
    test_under_psnr, ...), and it and its details file (under details/) as artifacts. A model's run is
    a child of its training run, which keeps its end time (or, when that run is not in this store's
    experiment or logged another model file, a new run, with a warning); a baseline's is a run of its
    own in `<experiment>-baselines`; a published checkpoint's, a run of its own in the experiment, tagged
    with its source URL and format."""
    files = outputs(method)
    digests = tracking.split_digests(split.OUT)
    tags = {"kind": corrector.kind, "model": method, "stage": "evaluate",
            "dataset": tracking.dataset_tag(params, digests), "git_commit": tracking.git_commit()}
    logged = {**tracking.data_params(params), **tracking.flatten(protocol(params, method), "evaluate.")}
    parent = None
    if corrector.kind == "model":
        experiment_id = tracking.setup(params)
        model_file = methods.model_path(method)
        tags.update(model_file=model_file.as_posix(), model_sha256=tracking.file_sha256(model_file))
        logged.update(tracking.model_params(method, corrector.settings))
        parent, recorded = _training_run(method, experiment_id, tags["model_sha256"])
        if parent is None and recorded:
            tags["training_run"] = recorded
        name = f"{method}:evaluate"
    elif corrector.kind == "pretrained":  # a published checkpoint: its own run, tagged with where it came from
        experiment_id = tracking.setup(params)
        model_file = methods.model_path(method)
        source = corrector.settings.get("pretrained", {}).get(method, {})
        tags.update(model_file=model_file.as_posix(), model_sha256=tracking.file_sha256(model_file),
                    source_url=str(source.get("url")), source_format=str(source.get("format")))
        logged.update(tracking.flatten(source, f"pretrained.{method}."))
        name = f"{method}:evaluate"
    else:  # a baseline, or another program's outputs (external:NAME), beside the baselines
        experiment_id = tracking.setup(params, tracking.baselines_experiment(params))
        tags["oracle"] = str(corrector.oracle)
        name = method if corrector.kind == "external" else f"baseline:{method}"
    with tracking.active_run(experiment_id=experiment_id, run_name=name, parent_run_id=parent, tags=tags) as run:
        if corrector.kind == "model" and parent is None:
            log.warning("evaluate %s: training run %s (models/%s/mlflow_run.json) is not in experiment %r of %s or "
                        "logged another model file: logging to new run %s, tagged model_sha256=%s", method,
                        recorded or "none", method, params["tracking"]["experiment"], tracking.tracking_uri(params),
                        run.info.run_id, tags["model_sha256"])
        tracking.log_params(logged)
        tracking.log_splits(params, digests, ["test"], split.OUT)
        tracking.retry(mlflow.log_metrics, tracking.metric_leaves(json.loads(files["json"].read_text()), "test"))
        for key, folder in (("json", None), ("details", "details")):  # both files are named METHOD.json
            if files.get(key) and files[key].exists():
                tracking.retry(mlflow.log_artifact, str(files[key]), artifact_path=folder)


def _training_run(method: str, experiment_id: str, model_sha256: str) -> tuple[str | None, str | None]:
    """(the training run to nest the evaluation under, or None; the run id models/METHOD/mlflow_run.json
    records, or None): the recorded run when it is in `experiment_id` and logged this model file."""
    run_file = methods.model_path(method).with_name("mlflow_run.json")
    recorded = json.loads(run_file.read_text()).get("run_id") if run_file.exists() else None
    run = tracking.own_run(recorded, experiment_id)
    if run is None or run.data.tags.get("model_sha256", model_sha256) != model_sha256:
        return None, recorded
    return recorded, recorded
