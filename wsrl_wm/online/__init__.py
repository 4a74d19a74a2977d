"""The parts of online fine-tuning, each usable and testable without Lightning: the training
env's episode (`EnvRunner`), the batches of the updates (`BatchSource`), the world model online
(`Imagination`) and the evaluations with their diagnostics (`Evaluator`).
`wsrl_wm.lightning.finetune.FinetuneModule` wires them into the Lightning loop."""

from wsrl_wm.online.batch_source import BatchSource
from wsrl_wm.online.env_runner import EnvRunner
from wsrl_wm.online.evaluator import Evaluator
from wsrl_wm.online.imagination import Imagination
from wsrl_wm.online.jsrl import JSRLConfig
from wsrl_wm.online.resets import ResetConfig

__all__ = ["BatchSource", "EnvRunner", "Evaluator", "Imagination", "JSRLConfig", "ResetConfig"]
