"""Plain torch networks with no RL logic (never imports wsrl_wm)."""

from models.actor import TanhGaussianActor
from models.critic import CriticEnsemble
from models.dynamics import ProbabilisticEnsemble, gaussian_nll
from models.ensemble import EnsembleLayerNorm, EnsembleLinear, EnsembleMLP
from models.scalar import LogScalar

__all__ = [
    "CriticEnsemble", "EnsembleLayerNorm", "EnsembleLinear", "EnsembleMLP", "LogScalar",
    "ProbabilisticEnsemble", "TanhGaussianActor", "gaussian_nll",
]
