"""Jump-start RL (Uchendu et al. 2022) as a fine-tuning option: a guide policy (the frozen
pretrained actor) acts for the first h steps of each training episode, the learner after them;
a curriculum shrinks h so that the learner starts ever closer to the episode's start
(docs/beyond_wsrl.md)."""

from dataclasses import dataclass

import numpy as np

from wsrl_wm.errors import WsrlError

CURRICULA = ("stages", "random")
LEARNERS = ("scratch", "pretrained")


@dataclass
class JSRLConfig:
    """`guide_steps`: the roll-in at the start (0 = JSRL off). `curriculum` "stages": the
    online budget is cut into `stages` equal parts and the roll-in falls linearly from
    `guide_steps` in the first to 0 in the last; "random": each episode draws its roll-in
    uniformly from 0..`guide_steps` (the paper's JSRL-Random). An episode keeps the roll-in it
    started with. `learner`: the policy trained online starts from freshly initialised
    networks ("scratch", the paper's setting: the guide is the only thing pretraining gives)
    or from the pretrained agent ("pretrained": WSRL with a guide roll-in)."""

    guide_steps: int = 0
    curriculum: str = "stages"
    stages: int = 5
    learner: str = "scratch"

    def __post_init__(self) -> None:
        if self.guide_steps < 0:
            raise WsrlError(f"jsrl.guide_steps must be >= 0, got {self.guide_steps}")
        if self.curriculum not in CURRICULA:
            raise WsrlError(f"jsrl.curriculum must be one of {', '.join(CURRICULA)}, got "
                            f"{self.curriculum!r}")
        if self.curriculum == "stages" and self.stages < 2:
            raise WsrlError(f"jsrl.stages must be >= 2 (the last stage has no roll-in), got "
                            f"{self.stages}")
        if self.learner not in LEARNERS:
            raise WsrlError(f"jsrl.learner must be one of {', '.join(LEARNERS)}, got "
                            f"{self.learner!r}")

    @property
    def enabled(self) -> bool:
        return self.guide_steps > 0

    def roll_in(self, online_step: int, online_steps: int, rng: np.random.Generator) -> int:
        """The roll-in of an episode that starts at `online_step` (< 0: the warmup, whose
        episodes the guide acts in throughout, as WSRL's frozen-policy warmup)."""
        if online_step < 0:
            return np.iinfo(np.int64).max
        if self.curriculum == "random":
            return int(rng.integers(0, self.guide_steps + 1))
        stage = min(online_step * self.stages // online_steps, self.stages - 1)
        return round(self.guide_steps * (self.stages - 1 - stage) / (self.stages - 1))
