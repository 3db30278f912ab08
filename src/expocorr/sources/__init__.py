"""Data sources: one module per `data.source` family, the safe archive extraction, and the shared
file-walking helpers (`files`). The download stage (`expocorr.stages.download`) dispatches on `data.source`.

Sources build on `expocorr.imaging` and the infrastructure at the package root; they never import a stage.
"""
