"""``python -m expocorr.metrics fit-niqe-bundled OUT.npz``: regenerate the bundled NIQE model (`niqe.main`)."""

import sys

from expocorr.metrics import niqe

sys.exit(niqe.main(sys.argv[1:]))
