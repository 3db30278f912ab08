"""Stage `evaluate`: one method on the test split at full resolution -> metrics/NAME.json,
metrics/NAME_per_image.csv and example outputs in results/NAME/.

Reads only ``evaluate.*`` (and ``render.*`` as context for the oracle baseline), the test split and,
for a model, ``models/NAME/model.pt``. Metrics are logged to MLflow: into the model's training run
(prefixed ``test_``), or into a run of its own for a baseline.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path

import mlflow
import numpy as np
from tqdm import tqdm

from expocorr import inference, split, stacks, tracking
from expocorr.atomic import atomic_dir, write_text
from expocorr.errors import UserError
from expocorr.images import read_rgb, to_uint8, write_rgb
from expocorr.metrics import HistogramSimilarity, NoReference, delta_e2000, psnr, ssim
from expocorr.render import ev_name
from expocorr.tables import read_csv, write_csv

log = logging.getLogger(__name__)

METRICS = Path("metrics")
RESULTS = Path("results")
SCORES = ("psnr", "ssim", "delta_e2000")


class EvaluateError(UserError, RuntimeError):
    """The evaluation cannot run; the message names the method, file or key."""


def outputs(method: str) -> dict[str, Path]:
    """The declared outputs of `expocorr evaluate --method method`."""
    return {"json": METRICS / f"{method}.json", "csv": METRICS / f"{method}_per_image.csv",
            "results": RESULTS / method}


def reference_columns(rows: list[dict], headline: str) -> tuple[list[str], str]:
    """The reference columns present in the split, and the headline one (`evaluate.headline_reference`)."""
    columns = [c for c in rows[0] if c.startswith("reference") and any(r.get(c) for r in rows)]
    for candidate in (f"reference_{headline}", headline, "reference"):
        if candidate in columns:
            return columns, candidate
    raise EvaluateError(f"evaluate.headline_reference: {headline!r} matches no reference column ({columns})")


def example_rows(rows: list[dict], n: int) -> list[dict]:
    """`n` evenly spaced (scene, ev) rows of the test split, the same for every method."""
    ordered = sorted(rows, key=lambda r: (r["scene"], float(r["ev"])))
    if n <= 0:
        return []
    picks = sorted({int(round(i)) for i in np.linspace(0, len(ordered) - 1, min(n, len(ordered)))})
    return [ordered[i] for i in picks]


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else float("nan")


def aggregate(per_image: list[dict], column: str) -> dict:
    """Means of PSNR/SSIM/ΔE against reference `column`: overall, per EV, under/over/zero.

    `overall` leaves out pairs whose input already equals the headline reference (a synthetic EV 0
    render): doing nothing scores the PSNR cap on them, which would rank the identity first. They
    still count in `per_ev` and `zero`, where they measure how much a method harms a good photo.
    """
    def summary(subset: list[dict]) -> dict:
        keys = [k for k in (*SCORES, "psnr_y", "ssim_y") if f"{k}:{column}" in subset[0]]
        return {**{k: _mean([r[f"{k}:{column}"] for r in subset]) for k in keys}, "n": len(subset)}

    evs = sorted({r["ev"] for r in per_image})
    groups = {
        "under": [r for r in per_image if r["ev"] < 0],
        "over": [r for r in per_image if r["ev"] > 0],
        "zero": [r for r in per_image if r["ev"] == 0],
    }
    real = [r for r in per_image if not r["identical_pair"]] or per_image
    return {
        "overall": summary(real),
        "per_ev": {str(ev): summary([r for r in per_image if r["ev"] == ev]) for ev in evs},
        **{name: summary(subset) for name, subset in groups.items() if subset},
    }


def run(params: dict, method: str) -> None:
    """Evaluate `method` (a trained model or a baseline) on data/splits/test.csv."""
    cfg = params["evaluate"]
    rows = read_csv(split.OUT / "test.csv")
    if not rows:
        raise EvaluateError(f"{split.OUT / 'test.csv'}: the test split is empty")
    columns, headline = reference_columns(rows, cfg["headline_reference"])
    try:
        device = inference.pick_device(cfg["device"])
    except inference.MethodError as exc:
        raise EvaluateError(f"evaluate.device: {exc}") from None
    corrector = inference.load_method(method, device)
    if method in params["train"]["models"] and corrector.kind != "model":
        raise EvaluateError(f"--method {method}: listed in train.models but not loadable as a model")
    noref = NoReference(cfg["noref"], device)
    for name, why in noref.status().items():  # one line per score: computed, or the reason it is not
        log.info("evaluate %s: %s: %s", method, name, why)
    histogram = HistogramSimilarity()
    examples = {(r["scene"], r["ev"]) for r in example_rows(rows, cfg["n_examples"])}
    files = outputs(method)

    per_image, kept, seconds, megapixels = [], [], 0.0, 0.0
    with atomic_dir(files["results"]) as results_tmp:
        for row in tqdm(rows, desc=f"evaluate {method}", unit="image", disable=None):
            image = read_rgb(row["input"])
            ctx = {"ev": float(row["ev"]), "render": params["render"]}
            if row.get("tau"):  # render.tau a range: the scene's own draw
                ctx["tau"] = float(row["tau"])
            if row.get("stack") and corrector.kind == "baseline":  # exposure stacks: the scene's registered bracket
                ctx["stack"] = stacks.read_stack(row["stack"])
            t0 = time.perf_counter()
            output = to_uint8(corrector(image, ctx))
            seconds += time.perf_counter() - t0
            megapixels += image.shape[0] * image.shape[1] / 1e6
            record = {"scene": row["scene"], "ev": float(row["ev"]), "input": row["input"], "reference": row[headline]}
            references = {column: to_uint8(read_rgb(row[column])) for column in columns}
            record["identical_pair"] = bool(np.array_equal(to_uint8(image), references[headline]))
            for column, reference in references.items():
                if reference.shape != output.shape:
                    raise EvaluateError(f"{row[column]}: reference size {reference.shape} differs from the "
                                        f"output's {output.shape} for {row['input']}")
                record[f"psnr:{column}"] = min(psnr(output, reference), cfg["psnr_cap"])
                record[f"ssim:{column}"] = ssim(output, reference)
                record[f"delta_e2000:{column}"] = delta_e2000(output, reference)
                if cfg["y_channel"]:
                    record[f"psnr_y:{column}"] = min(psnr(output, reference, y_channel=True), cfg["psnr_cap"])
                    record[f"ssim_y:{column}"] = ssim(output, reference, y_channel=True)
                if column == headline:
                    histogram.add(output, reference)
            record.update(_round6(noref.score(output)))
            noref.add(output)
            record["_output"] = output
            per_image.append(record)
            if (row["scene"], row["ev"]) in examples:
                kept.append(record)
        worst = min(per_image, key=lambda r: r[f"psnr:{headline}"])
        for record in kept + [worst]:
            name = f"{record['scene']}_{ev_name(record['ev'])}.png"
            write_rgb(results_tmp / name, record["_output"])
            record["output"] = (files["results"] / name).as_posix()

    summary = {
        "method": method, "kind": corrector.kind, "oracle": corrector.oracle, "n_images": len(per_image),
        "n_parameters": corrector.n_parameters, "headline_reference": headline, "psnr_cap": cfg["psnr_cap"],
        "n_identical_pairs": sum(r["identical_pair"] for r in per_image),
        **aggregate(per_image, headline),
        "references": {c: {k: v for k, v in aggregate(per_image, c).items() if k in ("overall", "per_ev")}
                       for c in columns},
        "seconds_per_megapixel": seconds / megapixels,
        "params": {"evaluate": cfg, "method": corrector.settings},
    }
    summary["overall"].update(histogram.result())
    summary["overall"].update(_noref_means(per_image, noref))
    summary["overall"].update(_round6(noref.result()))  # set-level (Inception Score): no per-image column
    summary["noref"] = noref.status()
    summary["examples"] = [_example(r, headline) for r in kept]
    summary["worst"] = _example(worst, headline)

    table = [{"scene": r["scene"], "ev": r["ev"], "input": r["input"], "reference": r["reference"],
              **{k.replace(f":{headline}", ""): v for k, v in r.items() if k.endswith(f":{headline}")},
              **{k: r[k] for k in noref.names if k in r}} for r in per_image]
    write_csv(files["csv"], table, list(table[0].keys()))
    write_text(files["json"], json.dumps(_finite(summary), indent=2) + "\n")
    _log_to_mlflow(params, method, corrector.kind, summary)
    log.info("evaluate %s: %d images, PSNR %.2f dB, SSIM %.4f, ΔE2000 %.2f (vs %s)", method, len(per_image),
             summary["overall"]["psnr"], summary["overall"]["ssim"], summary["overall"]["delta_e2000"], headline)


def _example(record: dict, headline: str) -> dict:
    return {"scene": record["scene"], "ev": record["ev"], "input": record["input"], "output": record["output"],
            "reference": record["reference"], "psnr": record[f"psnr:{headline}"]}


def _round6(scores: dict) -> dict:
    # No-reference scores go through BLAS/libsvm/conv kernels, whose last bits vary run to run: 6 decimals.
    return {k: round(v, 6) if isinstance(v, float) else v for k, v in scores.items()}


def _noref_means(per_image: list[dict], noref: NoReference) -> dict:
    out = {}
    for name in noref.per_image_names:
        values = [r[name] for r in per_image if isinstance(r.get(name), (int, float)) and math.isfinite(r[name])]
        out[name] = _mean(values) if values else "not computed"
    return out


def _finite(value):
    """JSON-safe: NaN/inf floats become null (a NaN mean means an empty group)."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _log_to_mlflow(params: dict, method: str, kind: str, summary: dict) -> None:
    """Log test_* metrics into the model's training run, or a run of the baseline's own."""
    metrics = {f"test_{k}": v for k, v in summary["overall"].items() if isinstance(v, (int, float))}
    for group in ("under", "over", "zero"):
        if group in summary:
            metrics.update({f"test_{k}_{group}": v for k, v in summary[group].items() if k in SCORES})
    metrics.update({f"test_psnr_ev{ev}": s["psnr"] for ev, s in summary["per_ev"].items()})
    metrics["test_seconds_per_megapixel"] = summary["seconds_per_megapixel"]
    metrics = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and math.isfinite(v)}
    experiment_id = tracking.setup(params)
    if kind == "model":
        run_file = Path("models") / method / "mlflow_run.json"
        run_id = json.loads(run_file.read_text())["run_id"]
        tracking.retry(mlflow.start_run, run_id=run_id)
    else:
        tracking.retry(mlflow.start_run, experiment_id=experiment_id, run_name=f"baseline:{method}",
                       tags={"model": method, "kind": "baseline", "oracle": str(summary["oracle"]),
                             "git_commit": tracking.git_commit()})
        tracking.retry(mlflow.log_params, {k: str(v) for k, v in tracking.flatten(params["evaluate"], "evaluate.").items()})
    tracking.retry(mlflow.log_metrics, metrics)
    tracking.retry(mlflow.log_artifact, str(outputs(method)["json"]))
    tracking.retry(mlflow.end_run)
