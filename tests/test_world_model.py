"""World model: member-subset ensemble passes, the Gaussian NLL and log-variance bounds by hand,
per-member early stopping, elite-only sampling, the normaliser in the state_dict, and a real
Hopper fit that must clearly beat a constant predictor."""

import math

import pytest
import torch

from models import EnsembleLinear, EnsembleMLP, ProbabilisticEnsemble, gaussian_nll
from wsrl_wm.collect import collect
from wsrl_wm.data import load_dataset
from wsrl_wm.world_model import (
    BestMemberTracker,
    WorldModel,
    WorldModelConfig,
    member_mse,
    train_world_model,
)

E, B, IN, OUT = 4, 5, 3, 6


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


# --------------------------------------------------------------------------- member subsets


@pytest.mark.parametrize("members", [[2, 0], [1, 1, 3], [3]])
def test_ensemble_linear_members_equal_full_computation(members):
    torch.manual_seed(0)
    layer = EnsembleLinear(E, IN, OUT)
    idx = torch.tensor(members)
    x = torch.randn(B, IN)
    torch.testing.assert_close(layer(x, idx), layer(x)[idx])
    per_member = torch.randn(E, B, IN)  # one batch per member: pass the chosen members' batches
    torch.testing.assert_close(layer(per_member[idx], idx), layer(per_member)[idx])


@pytest.mark.parametrize("layer_norm", [False, True])
def test_ensemble_mlp_members_equal_full_computation(layer_norm):
    torch.manual_seed(1)
    mlp = EnsembleMLP(E, IN, (8, 7), OUT, layer_norm=layer_norm)
    with torch.no_grad():  # members' LayerNorm affines differ, so a wrong index would show
        for param in mlp.parameters():
            param.add_(torch.randn_like(param) * 0.1)
    idx = torch.tensor([3, 1])
    x = torch.randn(B, IN)
    full = mlp(x)
    torch.testing.assert_close(mlp(x, idx), full[idx])
    assert not torch.allclose(full[3], full[1])


# ------------------------------------------------------------------ NLL and log-variance bounds


def test_gaussian_nll_by_hand():
    """MBPO's and mbrl-lib's convention: (y − μ)²·e^{−logvar} + logvar, no ½."""
    mean = torch.tensor([[[0.0, 1.0]], [[2.0, -1.0]]])  # [E=2, B=1, out=2]
    logvar = torch.tensor([[[0.0, math.log(4.0)]], [[0.0, math.log(4.0)]]])
    target = torch.tensor([[1.0, 3.0]])  # shared by both members
    # (y − μ)²·e^{−logvar} + logvar, averaged over the two outputs, per member:
    member0 = ((1**2 * 1 + 0) + (2**2 / 4 + math.log(4))) / 2
    member1 = ((1**2 * 1 + 0) + (4**2 / 4 + math.log(4))) / 2
    torch.testing.assert_close(gaussian_nll(mean, logvar, target),
                               torch.tensor([member0, member1]))
    # Per-member targets: member 1 gets its own target equal to its mean → only logvar / 2.
    per_member = torch.stack([target, torch.tensor([[2.0, -1.0]])])
    torch.testing.assert_close(gaussian_nll(mean, logvar, per_member)[1],
                               torch.tensor(math.log(4) / 2))


def constant_ensemble(mean: float, raw_logvar: float, num_members: int = 2
                      ) -> ProbabilisticEnsemble:
    """A 1-output ensemble whose every member outputs (mean, raw log-variance) for any input."""
    ensemble = ProbabilisticEnsemble(3, 1, num_members, hidden=(4,))
    with torch.no_grad():
        for param in ensemble.mlp.parameters():
            param.zero_()
        ensemble.mlp.net[-1].bias.copy_(torch.tensor([mean, raw_logvar]))
    return ensemble


def test_logvar_bounds_and_loss_by_hand():
    ensemble = constant_ensemble(mean=1.0, raw_logvar=0.0)
    # logvar = max − softplus(max − raw), then min + softplus(logvar − min); max 0.5, min −10.
    upper = 0.5 - softplus(0.5 - 0.0)
    logvar = -10 + softplus(upper + 10)
    mean_out, logvar_out = ensemble(torch.randn(B, 3))
    torch.testing.assert_close(mean_out, torch.ones(2, B, 1))
    torch.testing.assert_close(logvar_out, torch.full((2, B, 1), logvar))
    target = torch.full((B, 1), 3.0)
    nll = (3.0 - 1.0) ** 2 * math.exp(-logvar) + logvar
    expected = 2 * nll + 0.01 * (0.5 - (-10.0))  # summed over 2 members + bound penalty
    torch.testing.assert_close(ensemble.loss(torch.randn(B, 3), target), torch.tensor(expected))


def test_logvar_bounds_hold_for_extreme_raw_outputs():
    ensemble = ProbabilisticEnsemble(3, 2, 2, hidden=(4,))
    low, high = torch.tensor([-10.0, -3.0]), torch.tensor([0.5, 2.0])
    with torch.no_grad():
        ensemble.max_logvar.copy_(high)
        ensemble.min_logvar.copy_(low)
    raw = torch.tensor([-1e4, -50.0, -5.0, 0.0, 50.0, 1e4]).repeat(2, 1).T.contiguous()
    raw.requires_grad_(True)
    logvar = ensemble.bound_logvar(raw)
    # The lower squash is applied last, so the top is max + softplus(min − max): above max by
    # 6.7e-3 for the [−3, 2] range and by 2.8e-5 for the default [−10, 0.5].
    top = high + torch.log1p(torch.exp(low - high))
    assert torch.all(logvar >= low) and torch.all(logvar <= top + 1e-6)
    assert torch.all(logvar[2:4] > low) and torch.all(logvar[2:4] < high)  # raw −5 and 0
    torch.testing.assert_close(logvar[0], low)
    torch.testing.assert_close(logvar[-1], top)
    logvar.sum().backward()
    assert torch.isfinite(raw.grad).all() and torch.isfinite(ensemble.max_logvar.grad).all()


# ---------------------------------------------------------------------- per-member best weights


def test_tracker_restores_each_members_best_epoch_and_stops_on_patience():
    weights = torch.zeros(3, 2)  # stacked per-member parameter, member e = row e
    shared = torch.zeros(1)
    tracker = BestMemberTracker([weights], [shared], patience=3, improvement_threshold=0.01)
    epoch_losses = [
        [5.0, 5.0, 5.0],  # 0: all improve on ∞
        [4.0, 6.0, 4.98],  # 1: member 0 improves; member 2 only by 0.4 % (< 1 %): no
        [4.5, 3.0, 4.9],  # 2: members 1 and 2 improve (2 % for member 2)
        [3.99, 3.5, 5.0],  # 3: member 0 only 0.25 % better: no improvement anywhere
        [9.0, 9.0, 9.0],  # 4
        [9.0, 9.0, 9.0],  # 5: third epoch in a row without improvement → stop
    ]
    stops = []
    for epoch, losses in enumerate(epoch_losses):
        weights.copy_(10 * epoch + torch.arange(3.0)[:, None])  # "training" changed the weights
        shared.fill_(epoch)
        stops.append(tracker.update(torch.tensor(losses)))
    assert stops == [False] * 5 + [True]
    tracker.restore()
    assert tracker.best_epoch.tolist() == [1, 2, 2]
    torch.testing.assert_close(tracker.best_loss, torch.tensor([4.0, 3.0, 4.9]))
    torch.testing.assert_close(weights, torch.tensor([[10.0, 10.0], [21.0, 21.0], [22.0, 22.0]]))
    assert shared.item() == 2  # the last epoch in which any member improved


# ---------------------------------------------------------------------------- sampling


def elite_test_model() -> WorldModel:
    """4 members, elites 1 and 3 predict Δ = reward = +1 and −1 with tiny variance; the other
    members are NaN everywhere, so any use of them would poison the outputs."""
    config = WorldModelConfig(num_members=4, num_elites=2, hidden=(8,))
    model = WorldModel(3, 2, config)
    with torch.no_grad():
        model.elites.copy_(torch.tensor([1, 3]))
        for param in model.ensemble.mlp.parameters():
            param.zero_()
            param[[0, 2]] = math.nan
        head_bias = model.ensemble.mlp.net[-1].bias  # [E, 1, 2·4]: means then raw logvars
        head_bias[1, 0, :4], head_bias[3, 0, :4] = 1.0, -1.0
        head_bias[[1, 3], 0, 4:] = -20.0  # bounded to logvar ≈ −10: std ≈ 0.007
    return model


def test_sample_computes_each_rows_own_elite_only():
    model = elite_test_model()
    calls = []
    model.ensemble.mlp.net[0].register_forward_hook(lambda m, i, out: calls.append(out.shape))
    obs, act = torch.randn(200, 3), torch.randn(200, 2)
    next_obs, reward = model.sample(obs, act, torch.Generator().manual_seed(0))
    assert calls == [(2, 100, 8)]  # one pass: each of the two elites on half of the rows
    assert next_obs.shape == (200, 3) and reward.shape == (200,)
    assert torch.isfinite(next_obs).all() and torch.isfinite(reward).all()
    sign = torch.sign(reward)
    assert (sign > 0).sum() == 100 and (sign < 0).sum() == 100  # dealt evenly
    # Each row's Δobs and reward come from the same elite.
    torch.testing.assert_close(next_obs - obs, sign[:, None].expand(200, 3), atol=0.05, rtol=0)


def test_sample_equals_the_dealt_elites_computed_on_every_row():
    """The fast path (each elite on its own rows) against the plain path (every elite on every
    row, then pick): same draws, same outputs — including the padding when K ∤ B."""
    torch.manual_seed(3)
    model = WorldModel(3, 2, WorldModelConfig(num_members=5, num_elites=3, hidden=(8,)))
    model.elites.copy_(torch.tensor([4, 0, 2]))
    obs, act = torch.randn(50, 3), torch.randn(50, 2)
    next_obs, reward = model.sample(obs, act, torch.Generator().manual_seed(7))
    replay = torch.Generator().manual_seed(7)  # the same draws, in the same order
    order = torch.randperm(50, generator=replay)
    dealer = torch.randperm(3, generator=replay)
    noise = torch.randn(3, 17, 4, generator=replay)  # [K, ceil(50 / 3), Δobs + reward]
    mean, logvar = model.predict(obs, act, model.elites)
    expected = torch.empty(50, 4)
    for position, row in enumerate(order.tolist()):
        elite, slot = dealer[position % 3], position // 3
        expected[row] = (mean[elite, row]
                         + torch.exp(0.5 * logvar[elite, row]) * noise[position % 3, slot])
    torch.testing.assert_close(next_obs, obs + expected[:, :3])
    torch.testing.assert_close(reward, expected[:, 3])


def test_each_rows_elite_is_uniform():
    model = WorldModel(3, 2, WorldModelConfig(num_members=4, num_elites=3, hidden=(8,)))
    with torch.no_grad():  # member k predicts reward k, with ~zero noise
        for param in model.ensemble.mlp.parameters():
            param.zero_()
        head_bias = model.ensemble.mlp.net[-1].bias
        head_bias[:, 0, 3] = torch.arange(4.0)
        head_bias[:, 0, 4:] = -20.0
    generator = torch.Generator().manual_seed(0)
    draws = torch.stack([model.sample(torch.zeros(7, 3), torch.zeros(7, 2), generator)[1]
                         for _ in range(3000)]).round().long()
    assert set(draws.unique().tolist()) == {0, 1, 2}  # the elites, never member 3
    for row in range(7):
        freq = torch.bincount(draws[:, row], minlength=3).double() / 3000
        assert (freq - 1 / 3).abs().max() < 0.04, (row, freq)


def test_disagreement_is_the_elites_population_std():
    model = elite_test_model()
    # The elites' means (+1, −1): population std 1 in every obs dim.
    torch.testing.assert_close(model.disagreement(torch.randn(20, 3), torch.randn(20, 2)),
                               torch.ones(20))
    single = WorldModel(3, 2, WorldModelConfig(num_members=3, num_elites=1, hidden=(8,)))
    torch.testing.assert_close(single.disagreement(torch.randn(10, 3), torch.randn(10, 2)),
                               torch.zeros(10))


# -------------------------------------------------------------------------- normaliser


def test_normaliser_is_saved_and_round_trips():
    torch.manual_seed(2)
    config = WorldModelConfig(num_members=3, num_elites=2, hidden=(8,))
    model = WorldModel(3, 2, config)
    obs = torch.randn(100, 3) * torch.tensor([1.0, 10.0, 0.1]) + 5
    act = torch.randn(100, 2)
    act[:, 1] = 0.25  # a constant feature: centred, not divided by ~0
    model.set_normalizer(obs, act)
    x = model.normalize(obs, act)
    torch.testing.assert_close(x.mean(0), torch.zeros(5), atol=1e-5, rtol=0)
    torch.testing.assert_close(x.std(0)[:4], torch.ones(4))
    assert model.input_std[4] == 1 and torch.all(x[:, 4] == 0)
    model.elites.copy_(torch.tensor([2, 0]))

    state = model.state_dict()
    assert {"input_mean", "input_std", "elites"} <= set(state)
    restored = WorldModel(3, 2, config)
    restored.load_state_dict(state)
    for name in ("input_mean", "input_std", "elites"):
        assert torch.equal(getattr(restored, name), getattr(model, name))
    torch.testing.assert_close(restored.predict(obs, act), model.predict(obs, act))


# -------------------------------------------------------------------------- real data


@pytest.fixture(scope="module")
def hopper_random(tmp_path_factory) -> dict[str, torch.Tensor]:
    path = tmp_path_factory.mktemp("hopper") / "hopper-random.hdf5"
    collect("Hopper-v5", "random", 3000, 0, str(path))
    data = load_dataset(str(path))
    return {key: torch.as_tensor(data[key], dtype=torch.float32) for key in (
        "observations", "actions", "next_observations", "rewards")}


def test_world_model_learns_hopper_dynamics(hopper_random):
    torch.manual_seed(0)
    config = WorldModelConfig(num_members=3, num_elites=2, hidden=(64, 64), max_epochs=15)
    model = WorldModel(11, 3, config)
    metrics = train_world_model(model, hopper_random, generator=torch.Generator().manual_seed(0),
                                progress=False)
    print(f"\nHopper random, 3000 steps: elite holdout MSE {metrics['elite_holdout_mse']:.4f} "
          f"vs constant (mean-target) predictor {metrics['baseline_holdout_mse']:.4f} "
          f"after {metrics['epochs']} epochs; per member {metrics['holdout_mse']}")
    assert metrics["elite_holdout_mse"] < 0.5 * metrics["baseline_holdout_mse"]
    assert 1 <= metrics["epochs"] <= 15 and math.isfinite(metrics["train_loss"])
    best = torch.tensor(metrics["holdout_mse"])
    assert sorted(model.elites.tolist()) == sorted(best.argsort()[:2].tolist())
    torch.testing.assert_close(torch.tensor(metrics["elite_holdout_mse"]),
                               best[model.elites].mean())
    # The weights in the model are each member's best: recompute the holdout MSE (the holdout
    # is the first 600 rows of the seeded permutation, the trainer's first draw).
    holdout = torch.randperm(3000, generator=torch.Generator().manual_seed(0))[:600]
    obs = hopper_random["observations"][holdout]
    inputs = model.normalize(obs, hopper_random["actions"][holdout])
    targets = model.targets(obs, hopper_random["next_observations"][holdout],
                            hopper_random["rewards"][holdout])
    torch.testing.assert_close(member_mse(model, inputs, targets), best, rtol=1e-4, atol=1e-6)


def test_too_little_data_for_a_holdout_is_refused():
    model = WorldModel(3, 2, WorldModelConfig(num_members=2, num_elites=1, hidden=(8,)))
    data = {key: torch.zeros(3, 3) for key in ("observations", "next_observations")}
    data |= {"actions": torch.zeros(3, 2), "rewards": torch.zeros(3)}
    with pytest.raises(ValueError, match="no holdout"):
        train_world_model(model, data, progress=False)
