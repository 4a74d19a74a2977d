"""The performance benchmark (experiments/benchmark.py): wsrl-wm's hot paths against
references written the common way, measured side by side in one process."""

from wsrl_wm.benchmark.suite import Figure, run_suite

__all__ = ["Figure", "run_suite"]
