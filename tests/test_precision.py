"""Lightning's `precision: bf16-mixed`: the networks' matmuls run in bfloat16 under autocast
while parameters, optimisers, losses and log-densities stay in float32 (docs/performance.md)."""

import pytest
import torch
from conftest import OBS_DIM, TINY_AGENT, TINY_WORLD_MODEL, fit_module
from lightning.pytorch import Callback

from models.actor import TanhGaussianActor
from models.critic import CriticEnsemble
from models.dynamics import ProbabilisticEnsemble
from models.ensemble import EnsembleLinear
from wsrl_wm.agents import CQLConfig
from wsrl_wm.lightning import FinetuneModule, PretrainModule
from wsrl_wm.world_model import RolloutConfig, WorldModelConfig

BF16 = torch.autocast("cpu", dtype=torch.bfloat16)


def networks() -> dict:
    torch.manual_seed(0)
    return {"actor": TanhGaussianActor(OBS_DIM, 3, (32, 32)),
            "critic": CriticEnsemble(OBS_DIM, 3, 4, (32, 32)),
            "world model": ProbabilisticEnsemble(OBS_DIM + 3, OBS_DIM + 1, 3, (32, 32))}


def outputs(name: str, net, obs: torch.Tensor, act: torch.Tensor) -> list[torch.Tensor]:
    if name == "actor":
        return list(net.distribution_params(obs))
    if name == "critic":
        return [net(obs, act)]
    return list(net(torch.cat([obs, act], dim=-1)))


@pytest.mark.parametrize("name", ["actor", "critic", "world model"])
def test_networks_answer_in_float32_under_bf16_autocast_close_to_float32(name):
    net = networks()[name]
    g = torch.Generator().manual_seed(1)
    obs, act = torch.randn(64, OBS_DIM, generator=g), torch.rand(64, 3, generator=g) * 2 - 1
    hidden = []
    layers = [m for m in net.modules() if isinstance(m, (EnsembleLinear, torch.nn.Linear))]
    layers[1].register_forward_hook(lambda module, args, out: hidden.append(out.dtype))
    full = outputs(name, net, obs, act)
    with BF16:
        mixed = outputs(name, net, obs, act)
    assert hidden == [torch.float32, torch.bfloat16]  # the matmuls did change precision
    for exact, low in zip(full, mixed, strict=True):
        assert low.dtype == torch.float32
        assert not torch.equal(exact, low)
        torch.testing.assert_close(low, exact, rtol=0.05, atol=0.05)


class MatmulDtypes(Callback):
    """The dtypes a hidden critic layer produced during the fine-tune's training batches."""

    def __init__(self):
        self.seen: set[torch.dtype] = set()

    def on_train_start(self, trainer, module):
        layer = [m for m in module.agent.critic.modules() if isinstance(m, EnsembleLinear)][1]
        layer.register_forward_hook(lambda mod, args, out: self.seen.add(out.dtype))


def test_bf16_mixed_pretrains_and_fine_tunes_with_bfloat16_matmuls(tmp_path, hopper_dataset):
    pretrain = PretrainModule("Hopper-v5", hopper_dataset, CQLConfig(**TINY_AGENT), steps=10,
                              batch_size=32, eval_interval=10, eval_episodes=1, log_interval=5,
                              world_model=WorldModelConfig(**TINY_WORLD_MODEL))
    fit_module(pretrain, tmp_path / "pretrain", precision="bf16-mixed")
    checkpoint = str(tmp_path / "pretrain" / "checkpoints" / "last.ckpt")
    module = FinetuneModule(checkpoint, warmup_steps=40, online_steps=6, utd=2, batch_size=32,
                            eval_interval=3, eval_episodes=1, log_interval=2,
                            rollout=RolloutConfig(ratio=0.5, interval=3, starts=32))
    before = {k: v.clone() for k, v in module.agent.state_dict().items()}
    dtypes = MatmulDtypes()
    fit_module(module, tmp_path / "finetune", [dtypes], precision="bf16-mixed")
    assert torch.bfloat16 in dtypes.seen
    after = module.agent.state_dict()
    assert all(value.dtype == torch.float32 for value in after.values())
    assert any(not torch.equal(before[k], after[k]) for k in before)
    scores = [row["eval/normalized_score"] for row in module.evaluations]
    assert scores and all(torch.isfinite(torch.tensor(scores)))
