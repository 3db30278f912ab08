"""Pipeline stages: one module per stage of the DAG, each with its `run` entry point (`expocorr STAGE`).

`render_stacks` is the render stages' helper for exposure stacks; `correct` is `expocorr correct` (no DAG
stage). Stages may import each other in the DAG's order; nothing below them imports a stage.
"""
