"""``python -m expocorr.metrics fit-niqe-bundled OUT.npz``: regenerate the bundled NIQE model (`niqe.main`)."""

import sys

from expocorr.metrics import niqe
from expocorr.sources.bundled import BUNDLED  # an entry point: over all layers, like the CLI

sys.exit(niqe.main(sys.argv[1:], BUNDLED))
