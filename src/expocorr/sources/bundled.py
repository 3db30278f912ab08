"""The `bundled` source: real colour photographs shipped inside installed packages (scikit-image,
matplotlib, scikit-learn), so that the pipeline runs with nothing to download."""

from __future__ import annotations

import logging
from importlib import resources
from pathlib import Path

log = logging.getLogger(__name__)

# Real colour photographs shipped inside installed packages: (scene, package, resource path).
BUNDLED = [
    ("astronaut", "skimage", "data/astronaut.png"),
    ("chelsea", "skimage", "data/chelsea.png"),
    ("coffee", "skimage", "data/coffee.png"),
    ("rocket", "skimage", "data/rocket.jpg"),
    ("motorcycle", "skimage", "data/motorcycle_left.png"),
    ("grace_hopper", "matplotlib", "mpl-data/sample_data/grace_hopper.jpg"),
    ("china", "sklearn", "datasets/images/china.jpg"),
    ("flower", "sklearn", "datasets/images/flower.jpg"),
]


def collect(dest: Path) -> list[dict]:
    rows = []
    for scene, package, resource in BUNDLED:
        source = resources.files(package).joinpath(resource)
        if not source.is_file():
            log.info("bundled photo %s:%s not installed; skipped", package, resource)
            continue
        out = dest / f"{scene}{Path(resource).suffix}"
        out.write_bytes(source.read_bytes())
        rows.append({"scene": scene, "kind": "srgb", "path": out})
    return rows
