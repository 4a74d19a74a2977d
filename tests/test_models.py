"""Plain-network tests: batched ensembles against per-member torch layers, critic shapes, the
tanh-Gaussian actor against torch.distributions, and the log-parameterised scalar."""

import math

import pytest
import torch
from torch import nn
from torch.distributions import Normal, TanhTransform, TransformedDistribution

from models import (
    CriticEnsemble,
    EnsembleLayerNorm,
    EnsembleLinear,
    EnsembleMLP,
    LogScalar,
    TanhGaussianActor,
)

E, B, IN, OUT = 3, 5, 4, 6


def member_linear(layer: EnsembleLinear, e: int) -> nn.Linear:
    """nn.Linear holding member e's weights (nn.Linear stores [out, in], we store [in, out])."""
    lin = nn.Linear(layer.weight.shape[1], layer.weight.shape[2])
    with torch.no_grad():
        lin.weight.copy_(layer.weight[e].T)
        lin.bias.copy_(layer.bias[e, 0])
    return lin


def member_layer_norm(layer: EnsembleLayerNorm, e: int) -> nn.LayerNorm:
    norm = nn.LayerNorm(layer.weight.shape[-1], eps=layer.eps)
    with torch.no_grad():
        norm.weight.copy_(layer.weight[e, 0])
        norm.bias.copy_(layer.bias[e, 0])
    return norm


def member_sequential(mlp: EnsembleMLP, e: int) -> nn.Sequential:
    """Member e of an EnsembleMLP as plain torch layers (nn.Linear, nn.LayerNorm, nn.ReLU)."""
    layers = []
    for m in mlp.net:
        if isinstance(m, EnsembleLinear):
            layers.append(member_linear(m, e))
        elif isinstance(m, EnsembleLayerNorm):
            layers.append(member_layer_norm(m, e))
        else:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


# ---------------------------------------------------------------------------- EnsembleLinear


def test_ensemble_linear_shared_input_equals_separate_linears():
    torch.manual_seed(0)
    layer = EnsembleLinear(E, IN, OUT)
    x = torch.randn(B, IN)
    out = layer(x)
    assert out.shape == (E, B, OUT)
    for e in range(E):
        torch.testing.assert_close(out[e], member_linear(layer, e)(x), rtol=1e-5, atol=1e-6)
    # The members really differ (otherwise the comparison above would be vacuous).
    assert not torch.allclose(out[0], out[1])


def test_ensemble_linear_per_member_input_equals_separate_linears():
    torch.manual_seed(1)
    layer = EnsembleLinear(E, IN, OUT)
    x = torch.randn(E, B, IN)
    out = layer(x)
    assert out.shape == (E, B, OUT)
    for e in range(E):
        torch.testing.assert_close(out[e], member_linear(layer, e)(x[e]), rtol=1e-5, atol=1e-6)


def test_ensemble_linear_shared_and_per_member_inputs_agree():
    torch.manual_seed(2)
    layer = EnsembleLinear(E, IN, OUT)
    x = torch.randn(B, IN)
    torch.testing.assert_close(layer(x), layer(x.expand(E, B, IN).contiguous()))


def test_ensemble_linear_init_bounds_like_nn_linear():
    torch.manual_seed(3)
    layer = EnsembleLinear(E, 16, 8)
    bound = 1.0 / math.sqrt(16)
    assert layer.weight.shape == (E, 16, 8) and layer.bias.shape == (E, 1, 8)
    assert layer.weight.abs().max() <= bound and layer.bias.abs().max() <= bound
    assert layer.weight.abs().max() > 0.5 * bound  # not a degenerate (e.g. zero) init


# ------------------------------------------------------------------------- EnsembleLayerNorm


def test_ensemble_layer_norm_equals_per_member_layer_norm():
    torch.manual_seed(4)
    norm = EnsembleLayerNorm(E, OUT)
    with torch.no_grad():  # non-trivial affine parameters, different per member
        norm.weight.copy_(torch.randn(E, 1, OUT))
        norm.bias.copy_(torch.randn(E, 1, OUT))
    x = torch.randn(E, B, OUT) * 3 + 1
    out = norm(x)
    assert out.shape == (E, B, OUT)
    for e in range(E):
        torch.testing.assert_close(out[e], member_layer_norm(norm, e)(x[e]),
                                   rtol=1e-5, atol=1e-5)


def test_ensemble_layer_norm_default_is_plain_normalisation():
    torch.manual_seed(5)
    out = EnsembleLayerNorm(E, OUT)(torch.randn(E, B, OUT) * 4 + 2)
    torch.testing.assert_close(out.mean(-1), torch.zeros(E, B), atol=1e-5, rtol=0)
    torch.testing.assert_close(out.var(-1, unbiased=False), torch.ones(E, B), atol=1e-3, rtol=0)


# ------------------------------------------------------------------------------ EnsembleMLP


def test_ensemble_mlp_layer_order_with_layer_norm():
    mlp = EnsembleMLP(E, IN, (8, 7), 2, layer_norm=True)
    kinds = [type(m) for m in mlp.net]
    assert kinds == [EnsembleLinear, EnsembleLayerNorm, nn.ReLU,
                     EnsembleLinear, EnsembleLayerNorm, nn.ReLU,
                     EnsembleLinear]
    widths = [(m.weight.shape[1], m.weight.shape[2]) for m in mlp.net
              if isinstance(m, EnsembleLinear)]
    assert widths == [(IN, 8), (8, 7), (7, 2)]
    norm_widths = [m.weight.shape[-1] for m in mlp.net if isinstance(m, EnsembleLayerNorm)]
    assert norm_widths == [8, 7]


def test_ensemble_mlp_layer_order_without_layer_norm():
    mlp = EnsembleMLP(E, IN, (8, 7), 2, layer_norm=False)
    assert [type(m) for m in mlp.net] == [EnsembleLinear, nn.ReLU, EnsembleLinear, nn.ReLU,
                                          EnsembleLinear]


def test_ensemble_mlp_equals_per_member_sequential():
    torch.manual_seed(6)
    mlp = EnsembleMLP(E, IN, (8, 7), 2, layer_norm=True)
    with torch.no_grad():
        for m in mlp.net:
            if isinstance(m, EnsembleLayerNorm):
                m.weight.copy_(torch.rand_like(m.weight) + 0.5)
                m.bias.copy_(torch.randn_like(m.bias) * 0.1)
    x = torch.randn(B, IN)
    out = mlp(x)
    assert out.shape == (E, B, 2)
    for e in range(E):
        torch.testing.assert_close(out[e], member_sequential(mlp, e)(x), rtol=1e-5, atol=1e-5)


def test_ensemble_mlp_members_are_independent_forward():
    torch.manual_seed(7)
    mlp = EnsembleMLP(E, IN, (8, 8), 1, layer_norm=True)
    x = torch.randn(B, IN)
    before = mlp(x).detach()
    with torch.no_grad():
        for param in mlp.parameters():
            param[0].add_(torch.randn_like(param[0]))
    after = mlp(x).detach()
    assert not torch.allclose(before[0], after[0])
    torch.testing.assert_close(after[1:], before[1:], rtol=0, atol=0)


def test_ensemble_mlp_members_are_independent_backward():
    torch.manual_seed(8)
    mlp = EnsembleMLP(E, IN, (8, 8), 1, layer_norm=True)
    out = mlp(torch.randn(B, IN))
    out[1].pow(2).sum().backward()
    for name, param in mlp.named_parameters():
        assert param.grad is not None, name
        assert torch.count_nonzero(param.grad[0]) == 0, name
        assert torch.count_nonzero(param.grad[2]) == 0, name
    grads_member1 = [p.grad[1].abs().sum() for p in mlp.parameters()]
    assert all(g > 0 for g in grads_member1)


# -------------------------------------------------------------------------- CriticEnsemble


def randomize_layer_norms(module: nn.Module) -> None:
    """Non-trivial LayerNorm affine parameters (they start at 1 and 0)."""
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, EnsembleLayerNorm):
                m.weight.copy_(torch.rand_like(m.weight) + 0.5)
                m.bias.copy_(torch.randn_like(m.bias) * 0.1)


@pytest.mark.parametrize("num_critics", [1, 4])
@pytest.mark.parametrize("layer_norm", [False, True])
def test_critic_ensemble_equals_per_member_sequential_on_obs_then_action(num_critics,
                                                                         layer_norm):
    torch.manual_seed(9)
    critic = CriticEnsemble(5, 3, num_critics, (16, 16), layer_norm)
    randomize_layer_norms(critic)
    obs, act = torch.randn(7, 5), torch.rand(7, 3) * 2 - 1
    q = critic(obs, act)
    assert q.shape == (num_critics, 7)
    for e in range(num_critics):
        reference = member_sequential(critic.mlp, e)  # input [s, a]: obs first, then action
        torch.testing.assert_close(q[e], reference(torch.cat([obs, act], -1))[:, 0],
                                   rtol=1e-5, atol=1e-5)


def test_critic_ensemble_members_subset_equals_those_members_references():
    """A REDQ target evaluates only its drawn members, repeats included, in the drawn order."""
    torch.manual_seed(10)
    critic = CriticEnsemble(5, 3, 4, (16, 16))
    randomize_layer_norms(critic)
    obs, act = torch.randn(7, 5), torch.rand(7, 3) * 2 - 1
    members = torch.tensor([2, 0, 2])
    q = critic(obs, act, members)
    assert q.shape == (3, 7)
    for row, e in enumerate(members.tolist()):
        reference = member_sequential(critic.mlp, e)
        torch.testing.assert_close(q[row], reference(torch.cat([obs, act], -1))[:, 0],
                                   rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------- TanhGaussianActor


def reference_log_prob(mean, log_std, pre_tanh):
    transform = TanhTransform(cache_size=1)
    action = transform(pre_tanh)  # caches pre_tanh so log_prob inverts exactly
    dist = TransformedDistribution(Normal(mean, log_std.exp()), [transform])
    return dist.log_prob(action).sum(-1), action


@pytest.mark.parametrize("state_dependent_std", [True, False])
def test_actor_log_prob_matches_torch_distributions(state_dependent_std):
    torch.manual_seed(11)
    actor = TanhGaussianActor(6, 3, (32, 32), state_dependent_std=state_dependent_std)
    if not state_dependent_std:
        with torch.no_grad():
            actor.log_std.copy_(torch.tensor([-0.5, 0.0, 0.3]))
    obs = torch.randn(64, 6)
    torch.manual_seed(123)
    action, log_prob = actor(obs)
    assert action.shape == (64, 3) and log_prob.shape == (64,)

    mean, log_std = actor.distribution_params(obs)
    torch.manual_seed(123)
    noise = torch.randn_like(mean)
    pre_tanh = mean + log_std.exp() * noise
    assert pre_tanh.abs().max() < 4  # moderate values: no tanh saturation in the reference
    expected, expected_action = reference_log_prob(mean, log_std, pre_tanh)
    torch.testing.assert_close(action, expected_action, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(log_prob, expected, rtol=0, atol=1e-4)
    assert expected.std() > 0.1  # rows differ, so the comparison is not a constant


def test_actor_log_prob_matches_torch_distributions_float64():
    torch.manual_seed(12)
    actor = TanhGaussianActor(4, 2, (16,)).double()
    obs = torch.randn(256, 4, dtype=torch.float64) * 2
    torch.manual_seed(5)
    _, log_prob = actor(obs)
    mean, log_std = actor.distribution_params(obs)
    torch.manual_seed(5)
    expected, _ = reference_log_prob(mean, log_std, mean + log_std.exp() * torch.randn_like(mean))
    torch.testing.assert_close(log_prob, expected, rtol=0, atol=1e-8)


def test_actor_actions_in_unit_box():
    torch.manual_seed(13)
    actor = TanhGaussianActor(6, 4, (32,))
    with torch.no_grad():  # large means and stds: many samples near the bounds
        actor.net[-1].weight.mul_(20)
    action, log_prob = actor(torch.randn(2000, 6) * 3)
    assert action.abs().max() <= 1.0
    assert action.abs().max() > 0.99
    assert torch.isfinite(log_prob).all()


def test_actor_deterministic_is_tanh_of_mean():
    torch.manual_seed(14)
    actor = TanhGaussianActor(6, 3, (32,))
    obs = torch.randn(10, 6)
    action, log_prob = actor(obs, deterministic=True)
    mean, log_std = actor.distribution_params(obs)
    torch.testing.assert_close(action, torch.tanh(mean))
    torch.testing.assert_close(actor(obs, deterministic=True)[0], action, rtol=0, atol=0)
    # log π at the mode: Gaussian density at ε = 0 minus the tanh Jacobian.
    expected, _ = reference_log_prob(mean, log_std, mean)
    torch.testing.assert_close(log_prob, expected, rtol=0, atol=1e-4)


def test_actor_state_independent_std_uses_learned_vector():
    torch.manual_seed(15)
    actor = TanhGaussianActor(6, 3, (32,), state_dependent_std=False)
    assert isinstance(actor.log_std, nn.Parameter) and actor.log_std.shape == (3,)
    assert actor.net[-1].out_features == 3  # the network outputs only the mean
    assert any(p is actor.log_std for p in actor.parameters())
    with torch.no_grad():
        actor.log_std.copy_(torch.tensor([-1.0, 0.5, 5.0]))  # std e^5 is above std_max = 10
    obs = torch.randn(8, 6)
    mean, log_std = actor.distribution_params(obs)
    torch.testing.assert_close(mean, actor.net(obs))
    torch.testing.assert_close(log_std, torch.tensor([-1.0, 0.5, math.log(10.0)]).expand(8, 3))
    torch.manual_seed(0)
    action, _ = actor(obs)
    torch.manual_seed(0)
    torch.testing.assert_close(action, torch.tanh(mean + log_std.exp() * torch.randn(8, 3)))
    # The std vector is learned: gradients reach it.
    actor(obs)[1].sum().backward()
    assert actor.log_std.grad is not None and actor.log_std.grad[:2].abs().min() > 0


def test_actor_state_dependent_std_clamped():
    torch.manual_seed(16)
    actor = TanhGaussianActor(3, 2, (8,), log_std_min=-1.0, log_std_max=0.5)
    with torch.no_grad():
        actor.net[-1].weight.mul_(100)
    _, log_std = actor.distribution_params(torch.randn(50, 3))
    assert log_std.min() >= -1.0 and log_std.max() <= 0.5
    assert log_std.min() == -1.0 and log_std.max() == 0.5


def test_actor_std_defaults_to_the_official_range():
    """std in [1e-5, 10], the official actor's std_min / std_max."""
    torch.manual_seed(17)
    actor = TanhGaussianActor(3, 2, (8,))
    with torch.no_grad():
        actor.net[-1].weight.mul_(1e4)
    std = actor.distribution_params(torch.randn(200, 3))[1].exp()
    torch.testing.assert_close(std.min(), torch.tensor(1e-5))
    torch.testing.assert_close(std.max(), torch.tensor(10.0))


# ------------------------------------------------------------------------------- LogScalar


@pytest.mark.parametrize("initial", [1.0, 0.1, 5.0])
def test_log_scalar(initial):
    scalar = LogScalar(initial)
    assert scalar().item() == pytest.approx(initial, rel=1e-6)
    assert scalar.log_value.item() == pytest.approx(math.log(initial), rel=1e-6, abs=1e-7)
    with torch.no_grad():
        scalar.log_value.fill_(-2.0)
    assert scalar().item() == pytest.approx(math.exp(-2.0), rel=1e-6)
    assert [p is scalar.log_value for p in scalar.parameters()] == [True]
    scalar().backward()
    assert scalar.log_value.grad.item() == pytest.approx(math.exp(-2.0), rel=1e-6)
