"""The official WSRL network init (models/init.py): orthogonal(√2) kernels drawn per ensemble
member, zero biases, the last hidden layer at gain `kernel_scale_final`, the actor's mean and
log-std heads orthogonal each on its own; and the "pytorch" option leaves torch's init."""

import math

import pytest
import torch
from torch import nn

from models import CriticEnsemble, EnsembleLinear, TanhGaussianActor
from models.actor import mlp
from models.init import orthogonal_
from wsrl_wm.agents import SAC, SACConfig
from wsrl_wm.errors import WsrlError

ROOT2 = math.sqrt(2.0)


def assert_orthogonal(matrix: torch.Tensor, gain: float) -> None:
    """`matrix` [rows, cols] is `gain` times a matrix with orthonormal rows or columns (the
    shorter side)."""
    rows, cols = matrix.shape
    gram = matrix @ matrix.T if rows <= cols else matrix.T @ matrix
    torch.testing.assert_close(gram, gain ** 2 * torch.eye(min(rows, cols)), rtol=0,
                               atol=1e-5 * max(1.0, gain ** 2))


@pytest.mark.parametrize("shape", [(5, 7, 3), (5, 3, 7), (4, 6, 6), (2, 3, 4, 5)])
def test_orthogonal_draws_every_leading_matrix_independently(shape):
    torch.manual_seed(0)
    weight = orthogonal_(torch.empty(shape), 1.7)
    matrices = weight.reshape(-1, *shape[-2:])
    for matrix in matrices:
        assert_orthogonal(matrix, 1.7)
    assert not torch.allclose(matrices[0], matrices[1])  # members are drawn, not copied


def test_orthogonal_is_haar_like_torch_orthogonal():
    """Same law as torch.nn.init.orthogonal_: an entry of a Haar n×n orthogonal matrix has
    mean 0 and variance 1/n (checked over many draws)."""
    torch.manual_seed(1)
    entries = orthogonal_(torch.empty(4000, 4, 4), 1.0)
    assert abs(entries.mean().item()) < 0.01
    assert entries.var().item() == pytest.approx(0.25, rel=0.03)
    reference = torch.stack([nn.init.orthogonal_(torch.empty(4, 4)) for _ in range(4000)])
    assert reference.var().item() == pytest.approx(entries.var().item(), rel=0.05)


@pytest.mark.parametrize("layer_norm", [True, False])
def test_critic_official_init(layer_norm):
    """Hidden kernels orthogonal(√2) per member, the last hidden one orthogonal(1e-2), the head
    a √2-norm vector per member, every bias zero, LayerNorm at its identity."""
    torch.manual_seed(2)
    critic = CriticEnsemble(5, 3, num_critics=4, hidden=(16, 12, 10), layer_norm=layer_norm)
    linears = [m for m in critic.mlp.net if isinstance(m, EnsembleLinear)]
    assert [tuple(m.weight.shape) for m in linears] == [(4, 8, 16), (4, 16, 12), (4, 12, 10),
                                                        (4, 10, 1)]
    for layer, gain in zip(linears, (ROOT2, ROOT2, 1e-2, ROOT2), strict=True):
        for member in layer.weight:
            assert_orthogonal(member, gain)
        assert torch.count_nonzero(layer.bias) == 0
        assert not torch.allclose(layer.weight[0], layer.weight[1])
    torch.testing.assert_close(linears[-1].weight.norm(dim=1).squeeze(-1),
                               torch.full((4,), ROOT2))
    for norm in (m for m in critic.mlp.net if not isinstance(m, (EnsembleLinear, nn.ReLU))):
        assert torch.equal(norm.weight, torch.ones_like(norm.weight))
        assert torch.count_nonzero(norm.bias) == 0


@pytest.mark.parametrize("state_dependent_std", [True, False])
def test_actor_official_init(state_dependent_std):
    """As the critic; the mean and log-std heads (one nn.Linear [2A, H] here, two Dense layers
    officially) are each orthogonal(√2) on their own rows."""
    torch.manual_seed(3)
    actor = TanhGaussianActor(6, 3, hidden=(16, 8), layer_norm=True,
                              state_dependent_std=state_dependent_std)
    first, last_hidden, head = [m for m in actor.net if isinstance(m, nn.Linear)]
    assert_orthogonal(first.weight, ROOT2)
    assert_orthogonal(last_hidden.weight, 1e-2)
    if state_dependent_std:
        mean_head, log_std_head = head.weight.split(3)
        assert_orthogonal(mean_head, ROOT2)
        assert_orthogonal(log_std_head, ROOT2)
    else:
        assert_orthogonal(head.weight, ROOT2)
        assert torch.count_nonzero(actor.log_std) == 0
    for layer in (first, last_hidden, head):
        assert torch.count_nonzero(layer.bias) == 0


def test_without_kernel_scale_final_every_kernel_has_gain_root2():
    """Kitchen's official config sets no kernel_scale_final."""
    torch.manual_seed(4)
    critic = CriticEnsemble(5, 3, num_critics=3, hidden=(16, 12), kernel_scale_final=None)
    actor = TanhGaussianActor(5, 3, hidden=(16, 12), kernel_scale_final=None)
    for member in [m for m in critic.mlp.net if isinstance(m, EnsembleLinear)][1].weight:
        assert_orthogonal(member, ROOT2)
    assert_orthogonal([m for m in actor.net if isinstance(m, nn.Linear)][1].weight, ROOT2)


def test_pytorch_init_is_torchs_default():
    """`init="pytorch"` draws exactly what the plain torch layers draw from the same seed."""
    torch.manual_seed(5)
    actor = TanhGaussianActor(6, 3, hidden=(16, 8), layer_norm=True, init="pytorch")
    torch.manual_seed(5)
    plain = mlp(6, (16, 8), 6, True)
    for got, expected in zip(actor.net.parameters(), plain.parameters(), strict=True):
        assert torch.equal(got, expected)
    torch.manual_seed(6)
    critic = CriticEnsemble(5, 3, num_critics=2, hidden=(16,), init="pytorch")
    torch.manual_seed(6)
    first = EnsembleLinear(2, 8, 16)
    assert torch.equal(critic.mlp.net[0].weight, first.weight)
    assert torch.equal(critic.mlp.net[0].bias, first.bias)


def test_agent_init_option_reaches_its_networks():
    torch.manual_seed(7)
    official = SAC(3, 2, SACConfig(num_critics=3, critic_hidden=(8, 8), actor_hidden=(8, 8)))
    assert (official.config.init, official.config.kernel_scale_final) == ("official", 1e-2)
    for member in official.critic.mlp.net[-4].weight:  # the last hidden layer (LayerNorm on)
        assert_orthogonal(member, 1e-2)
    assert torch.count_nonzero(official.actor.net[0].bias) == 0
    pytorch = SAC(3, 2, SACConfig(num_critics=3, critic_hidden=(8, 8), actor_hidden=(8, 8),
                                  init="pytorch"))
    assert torch.count_nonzero(pytorch.actor.net[0].bias) > 0
    # The target critics start as copies of the critics, whichever init.
    for target, online in zip(official.target_critic.parameters(), official.critic.parameters(),
                              strict=True):
        assert torch.equal(target, online)


@pytest.mark.parametrize("options, words", [
    (dict(init="xavier"), "init must be one of official, pytorch"),
    (dict(kernel_scale_final=0.0), "kernel_scale_final must be positive"),
])
def test_bad_init_options_are_one_line(options, words):
    with pytest.raises(WsrlError, match=words):
        SACConfig(**options)
