"""Growth runs: the run config, the run and its loop (`trainer.run_training`), run checkpoints,
evaluation, the governor, counterfactual measurement, and the frontier and compare studies.

Submodules are imported where they are used; this package imports nothing itself.
"""
