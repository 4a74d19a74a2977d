"""Agent tests on real tensors with small networks: REDQ subset targets, UTD, frozen critics in
the actor step, the entropy backup switch, CQL / Cal-QL gaps against hand computations, the
Lagrange α and CQL's max-target backup."""

import math

import pytest
import torch
from conftest import make_batch

from wsrl_wm.agents import CQL, SAC, CQLConfig, SACConfig
from wsrl_wm.agents.sac import frozen
from wsrl_wm.agents.update import EagerSteps
from wsrl_wm.benchmark.measure import flops

OBS, ACT = 3, 2
SMALL = dict(critic_hidden=(8,), actor_hidden=(8,), layer_norm=False)


def constant_target_critics(agent: SAC) -> None:
    """Target critic member i outputs the constant i, whatever the input."""
    with torch.no_grad():
        for param in agent.target_critic.parameters():
            param.zero_()
        last = agent.target_critic.mlp.net[-1]
        last.bias.copy_(torch.arange(agent.critic.num_critics, dtype=torch.float32)
                        .view(-1, 1, 1))


def zero_reward_batch(batch_size: int, seed: int = 0) -> dict:
    batch = make_batch(batch_size, seed)
    batch["rewards"] = torch.zeros(batch_size)
    return batch


# --------------------------------------------------------------------- REDQ target subset


def min_law(subset: int, replacement: bool) -> torch.Tensor:
    """P(min = k), k = 0..9, of `subset` members drawn out of values 0..9: with replacement
    P(min ≥ k) = ((10 − k)/10)^s; without, P(min = k) = C(9 − k, s − 1) / C(10, s)."""
    if replacement:
        law = [((10 - k) ** subset - (9 - k) ** subset) / 10 ** subset for k in range(10)]
    else:
        law = [math.comb(9 - k, subset - 1) / math.comb(10, subset) for k in range(10)]
    return torch.tensor(law, dtype=torch.float64)


@pytest.mark.parametrize("replacement", [True, False])
@pytest.mark.parametrize("subset", [1, 2, 3])
def test_target_is_min_over_random_subset(subset, replacement):
    """min over `subset` members drawn with (official) or without replacement out of 0..9."""
    torch.manual_seed(0)
    agent = SAC(OBS, ACT, SACConfig(num_critics=10, target_subset=subset, discount=1.0,
                                    subset_with_replacement=replacement, **SMALL))
    constant_target_critics(agent)
    batch = zero_reward_batch(1)
    calls = 3000
    values = torch.stack([agent.td_target(batch) for _ in range(calls)]).view(-1)
    assert torch.equal(values, values.round()) and values.min() >= 0 and values.max() <= 9
    counts = torch.bincount(values.long(), minlength=10).double() / calls
    law = min_law(subset, replacement)
    assert (counts - law).abs().max() < 0.03, (counts, law)
    if subset == 2 and not replacement:
        torch.testing.assert_close(law[:9], torch.tensor([(9 - k) / 45 for k in range(9)],
                                                         dtype=torch.float64))
        assert counts[9] == 0  # the maximum member can never be the min of two distinct ones
        assert counts[8] > 0  # ... but {8, 9} can be drawn
    if subset == 2 and replacement:
        assert counts[9] > 0  # {9, 9}: the maximum member drawn twice (law 1/100)


@pytest.mark.parametrize("critics", [1, 2])
def test_a_subset_holding_every_critic_is_all_of_them(critics):
    """No draw then (inductor failed to compile a `randperm` slice that keeps every row):
    the target is the min over every critic, and no random number is consumed."""
    torch.manual_seed(0)
    agent = SAC(OBS, ACT, SACConfig(num_critics=critics, target_subset=2, discount=1.0,
                                    **SMALL))
    constant_target_critics(agent)
    assert agent.target_members(torch.device("cpu")) is None
    state = torch.get_rng_state()
    agent.actor.forward = lambda obs, deterministic=False: (torch.zeros(len(obs), ACT),
                                                            torch.zeros(len(obs)))
    assert agent.td_target(zero_reward_batch(3)).tolist() == [0.0] * 3  # member 0 holds 0
    assert torch.equal(torch.get_rng_state(), state)


def test_default_target_subset_law_is_two_of_ten_with_replacement():
    """With the default config (10 critics, subset 2 drawn with replacement, as the official
    `jax.random.randint`) the law is (19 − 2k)/100 — not 1 or 3 critics, not distinct ones."""
    torch.manual_seed(1)
    config = SACConfig(discount=1.0, **SMALL)
    assert (config.num_critics, config.target_subset) == (10, 2)
    assert config.subset_with_replacement
    agent = SAC(OBS, ACT, config)
    constant_target_critics(agent)
    batch = zero_reward_batch(1)
    calls = 3000
    values = torch.stack([agent.td_target(batch) for _ in range(calls)]).view(-1).long()
    freq = torch.bincount(values, minlength=10).double() / calls
    expected = torch.tensor([(19 - 2 * k) / 100 for k in range(10)], dtype=torch.float64)
    assert (freq - expected).abs().max() < 0.03, freq
    assert freq[9] > 0  # only a repeated draw {9, 9} has min 9: distinct draws never do
    # subset 1 would give 0.1 each and subset 3 would give 0.271 for k = 0 (law 0.19).
    assert abs(freq[0] - 0.19) < 0.03


@pytest.mark.parametrize("replacement", [True, False])
def test_subset_draw_matches_a_seeded_draw_and_repeats(replacement):
    """The members are exactly `randint(N, (k,))` (official) or `randperm(N)[:k]` under the same
    seed; with replacement 1 draw in 10 repeats a critic (2 of 10), without never."""
    agent = SAC(OBS, ACT, SACConfig(num_critics=10, target_subset=2,
                                    subset_with_replacement=replacement, **SMALL))
    cpu = torch.device("cpu")
    torch.manual_seed(7)
    drawn = torch.stack([agent.target_members(cpu) for _ in range(2000)])
    torch.manual_seed(7)
    seeded = torch.stack([torch.randint(10, (2,)) if replacement else torch.randperm(10)[:2]
                          for _ in range(2000)])
    assert torch.equal(drawn, seeded)
    repeats = (drawn[:, 0] == drawn[:, 1]).double().mean().item()
    if replacement:
        assert abs(repeats - 0.1) < 0.025, repeats
    else:
        assert repeats == 0


def test_one_subset_per_update():
    torch.manual_seed(2)
    agent = SAC(OBS, ACT, SACConfig(num_critics=10, target_subset=2, discount=1.0, **SMALL))
    constant_target_critics(agent)
    batch = zero_reward_batch(256, seed=3)
    seen = set()
    for _ in range(40):
        target = agent.td_target(batch)
        assert target.shape == (256,)
        assert torch.all(target == target[0])  # every row uses the same subset
        seen.add(int(target[0]))
    assert len(seen) >= 4  # ... while the subset changes between calls


def test_subset_target_equals_all_critics_then_select():
    """The fast path computes only the drawn target critics; the plain path computes all N and
    indexes them. Same draw (same seed), same target."""
    agent = SAC(OBS, ACT, SACConfig(num_critics=10, target_subset=2, discount=0.9, **SMALL))
    with torch.no_grad():
        for param in agent.target_critic.parameters():
            param.add_(0.3 * torch.randn_like(param))
    batch = make_batch(64, seed=9)
    torch.manual_seed(5)
    fast = agent.td_target(batch)
    torch.manual_seed(5)
    next_action, _ = agent.actor(batch["next_observations"])
    chosen = torch.randint(10, (2,))  # the official draw, with replacement
    with torch.no_grad():
        every = agent.target_critic(batch["next_observations"], next_action)
    plain = batch["rewards"] + 0.9 * (1 - batch["terminals"]) * every[chosen].min(0).values
    torch.testing.assert_close(fast, plain, rtol=1e-6, atol=1e-6)


def test_td_target_reward_discount_terminal():
    torch.manual_seed(3)
    agent = SAC(OBS, ACT, SACConfig(num_critics=4, target_subset=4, discount=0.9, **SMALL))
    constant_target_critics(agent)  # subset = all 4 members → min = 0 ... shift it to 5
    with torch.no_grad():
        agent.target_critic.mlp.net[-1].bias.add_(5.0)
    batch = make_batch(4, seed=4)
    batch["terminals"] = torch.tensor([0.0, 1.0, 0.0, 1.0])
    expected = batch["rewards"] + 0.9 * torch.tensor([1.0, 0.0, 1.0, 0.0]) * 5.0
    torch.testing.assert_close(agent.td_target(batch), expected)


# ------------------------------------------------------------------ actor step and critics


def test_actor_loss_gives_no_gradient_to_critics():
    torch.manual_seed(4)
    agent = SAC(OBS, ACT, SACConfig(num_critics=4, **SMALL))
    with torch.no_grad():  # temperature ≈ 0: the actor gradient comes only through Q(s, π(s))
        agent.temperature.log_value.fill_(-30.0)
    flags_before = [p.requires_grad for p in agent.critic.parameters()]
    assert all(flags_before)
    loss, log_prob, info = agent.actor_loss(make_batch(16))
    loss.backward()
    for name, param in agent.critic.named_parameters():
        assert param.grad is None, name
    assert all(p.grad is None for p in agent.target_critic.parameters())
    assert [p.requires_grad for p in agent.critic.parameters()] == flags_before
    # ... while the actor does receive the gradient through the critics.
    actor_grads = [p.grad for p in agent.actor.parameters()]
    assert all(g is not None for g in actor_grads)
    assert sum(g.abs().sum() for g in actor_grads) > 0
    assert agent.temperature.log_value.grad is None  # temperature detached in the actor loss
    assert not log_prob.requires_grad and log_prob.shape == (16,)
    # The critics still train normally afterwards.
    agent.critic_loss(make_batch(16, seed=1))[0].backward()
    assert all(p.grad is not None for p in agent.critic.parameters())


@pytest.mark.parametrize("static", [False, True])
@pytest.mark.parametrize("assignment", ["spread", "one critic", "some empty", "last empty"])
def test_per_row_equals_every_critic_then_pick(assignment, static):
    """Each row through its own critic only, against every critic on every row then indexing —
    with skewed groups and critics that own no row; with the data-dependent number of chunks
    and with the static bound (whose spare chunks must not leak into the result)."""
    torch.manual_seed(6)
    critic = SAC(OBS, ACT, SACConfig(num_critics=5, **SMALL)).critic
    obs, act = torch.randn(37, OBS), torch.randn(37, ACT)
    member = {"spread": torch.randint(5, (37,)), "one critic": torch.full((37,), 3),
              "some empty": torch.tensor([0, 4] * 18 + [4]),
              "last empty": torch.tensor([0, 1] * 18 + [2])}[assignment]
    expected = critic(obs, act)[member, torch.arange(37)]
    torch.testing.assert_close(critic.per_row(obs, act, member, static), expected)


@pytest.mark.parametrize("static", [False, True])
@pytest.mark.parametrize("assignment", ["spread", "one critic"])
def test_per_row_computes_fewer_than_two_rows_per_row(assignment, static):
    """Groups are cut into chunks of ⌈B/N⌉ rows, so however skewed the minimisers, per_row costs
    under two passes of one critic over the batch (padding every group to the largest would
    cost N passes when one critic owns every row); the static bound of 2N − 1 chunks too."""
    critic = SAC(OBS, ACT, SACConfig(num_critics=5, **SMALL)).critic
    obs, act = torch.randn(37, OBS), torch.randn(37, ACT)
    member = torch.randint(5, (37,)) if assignment == "spread" else torch.full((37,), 3)
    one_pass = flops(lambda: critic(obs, act, torch.tensor([0])))
    assert flops(lambda: critic.per_row(obs, act, member, static)) < 2 * one_pass


def test_actor_step_through_the_minimising_critic_equals_min_over_all():
    """The fast actor loss (gradient through each row's minimising critic only) gives the
    plain path's loss and actor gradients: min over all critics, back-propagated through all."""
    torch.manual_seed(8)
    agent = SAC(OBS, ACT, SACConfig(num_critics=6, critic_hidden=(16, 16), actor_hidden=(16,),
                                    layer_norm=True))
    batch = make_batch(64, seed=3)
    torch.manual_seed(9)
    loss, log_prob, _ = agent.actor_loss(batch)
    loss.backward()
    fast = [p.grad.clone() for p in agent.actor.parameters()]
    agent.actor.zero_grad()
    torch.manual_seed(9)  # the same sampled actions
    action, plain_log_prob = agent.actor(batch["observations"])
    with frozen(agent.critic):
        q = agent.critic(batch["observations"], action).min(dim=0).values
    plain = (agent.temperature().detach() * plain_log_prob - q).mean()
    plain.backward()
    torch.testing.assert_close(loss, plain)
    torch.testing.assert_close(log_prob, plain_log_prob.detach())
    for got, want in zip(fast, (p.grad for p in agent.actor.parameters()), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    assert all(p.grad is None for p in agent.critic.parameters())


def test_frozen_restores_flags_after_exception():
    agent = SAC(OBS, ACT, SACConfig(num_critics=2, **SMALL))
    agent.critic.mlp.net[0].bias.requires_grad_(False)
    flags = [p.requires_grad for p in agent.critic.parameters()]
    with pytest.raises(RuntimeError), frozen(agent.critic):
        assert not any(p.requires_grad for p in agent.critic.parameters())
        raise RuntimeError
    assert [p.requires_grad for p in agent.critic.parameters()] == flags


def test_actor_step_does_not_move_critics():
    torch.manual_seed(5)
    agent = SAC(OBS, ACT, SACConfig(num_critics=4, **SMALL))
    optimizers = agent.make_optimizers()
    critic_before = [p.detach().clone() for p in agent.critic.parameters()]
    actor_before = [p.detach().clone() for p in agent.actor.parameters()]
    EagerSteps(agent.updater, optimizers).actor_and_temperature(make_batch(16))
    for before, after in zip(critic_before, agent.critic.parameters(), strict=True):
        assert torch.equal(before, after)
    assert any(not torch.equal(b, a) for b, a in zip(actor_before, agent.actor.parameters(),
                                                     strict=True))


# --------------------------------------------------------------------------------------- UTD


def adam_steps(optimizer: torch.optim.Optimizer) -> set[int]:
    return {int(optimizer.state[p]["step"]) for group in optimizer.param_groups
            for p in group["params"]}


@pytest.mark.parametrize("rule", ["official", "trained_only"])
@pytest.mark.parametrize("utd", [1, 3])
def test_update_utd_steps_and_slices(utd, rule, monkeypatch):
    torch.manual_seed(6)
    agent = SAC(OBS, ACT, SACConfig(num_critics=4, utd=utd, tau=0.1, update_rule=rule, **SMALL))
    optimizers = agent.make_optimizers()
    batch = make_batch(4 * utd, seed=7)

    events, seen = [], []
    original_loss, original_target = agent.critic_loss, agent.update_target

    def recording_loss(part):
        events.append("critic_loss")
        seen.append({key: value.clone() for key, value in part.items()})
        return original_loss(part)

    expected_targets = []

    def recording_target():
        events.append("update_target")
        online = [p.detach().clone() for p in agent.critic.parameters()]
        target = [p.detach().clone() for p in agent.target_critic.parameters()]
        original_target()
        expected_targets.append([t + 0.1 * (o - t) for o, t in zip(online, target, strict=True)])
        for expected, got in zip(expected_targets[-1], agent.target_critic.parameters(),
                                 strict=True):
            torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-7)

    monkeypatch.setattr(agent, "critic_loss", recording_loss)
    monkeypatch.setattr(agent, "update_target", recording_target)
    agent.update(batch, optimizers)

    assert events == ["critic_loss", "update_target"] * utd
    idle = rule == "official" and utd > 1  # every Adam steps in every sub-step
    assert adam_steps(optimizers["critic"]) == {utd + idle}
    assert adam_steps(optimizers["actor"]) == {1 + idle * utd}
    assert adam_steps(optimizers["temperature"]) == {1 + idle * utd}
    assert len(seen) == utd
    for i, part in enumerate(seen):
        for key, value in batch.items():
            assert torch.equal(part[key], value[4 * i: 4 * (i + 1)]), (i, key)
    assert len(expected_targets) == utd
    # The actor step after the critic steps leaves the target where the last Polyak step put it
    # (its idle critic step, the first of a fresh Adam, moves nothing).
    for expected, got in zip(expected_targets[-1], agent.target_critic.parameters(), strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-7)


def test_polyak_update_hand_computation_k1():
    torch.manual_seed(8)
    tau = 0.2
    agent = SAC(OBS, ACT, SACConfig(num_critics=3, utd=1, tau=tau, **SMALL))
    optimizers = agent.make_optimizers()
    # Make target ≠ online so the lerp is visible.
    with torch.no_grad():
        for param in agent.target_critic.parameters():
            param.add_(torch.randn_like(param))
    target_old = [p.detach().clone() for p in agent.target_critic.parameters()]
    online_old = [p.detach().clone() for p in agent.critic.parameters()]
    agent.update(make_batch(8, seed=9), optimizers)
    online_new = list(agent.critic.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(online_old, online_new, strict=True))
    for old, online, new in zip(target_old, online_new, agent.target_critic.parameters(),
                                strict=True):
        torch.testing.assert_close(new, old + tau * (online.detach() - old),
                                   rtol=1e-6, atol=1e-7)
        assert not new.requires_grad
    # The target was not simply copied from the old online weights either.
    w_old, w_new = target_old[0], agent.target_critic.mlp.net[0].weight
    assert not torch.allclose(w_new, online_old[0]) and not torch.allclose(w_new, w_old)


# ----------------------------------------------------------------------- entropy in backup


def test_backup_entropy_switch():
    torch.manual_seed(10)
    batch = make_batch(8, seed=11)
    batch["terminals"] = torch.tensor([0.0, 1.0] * 4)
    agent = SAC(OBS, ACT, SACConfig(num_critics=4, discount=0.9, **SMALL))
    assert agent.config.backup_entropy is False  # WSRL default

    def target_with(temperature: float) -> torch.Tensor:
        with torch.no_grad():
            agent.temperature.log_value.fill_(math.log(temperature))
        torch.manual_seed(99)
        return agent.td_target(batch)

    plain = target_with(0.5)
    torch.testing.assert_close(target_with(3.0), plain, rtol=0, atol=0)

    agent.config.backup_entropy = True
    low, high = target_with(0.5), target_with(3.0)
    assert not torch.allclose(low, high)
    torch.manual_seed(99)
    _, next_log_prob = agent.actor(batch["next_observations"])
    not_done = 1.0 - batch["terminals"]
    for temperature, got in ((0.5, low), (3.0, high)):
        torch.testing.assert_close(got, plain - 0.9 * not_done * temperature * next_log_prob,
                                   rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(low[1::2], plain[1::2])  # terminal rows: reward only


# ---------------------------------------------------------------------------- CQL / Cal-QL

N_ACTIONS = 3


def stub_policy(obs: torch.Tensor, deterministic: bool = False):
    """A known deterministic 'policy' that consumes no RNG; it differs per row position so
    the sample index within each repeated row matters."""
    position = torch.arange(obs.shape[0], dtype=obs.dtype)
    offset = (position % N_ACTIONS) - 1.0  # -1, 0, 1 for the 3 samples of a row
    action = torch.tanh(0.7 * obs[:, :ACT] + 0.4 * offset[:, None]
                        + torch.tensor([0.1, -0.2]))
    log_prob = -0.5 + 0.3 * obs[:, 0] - 0.25 * offset + 0.05 * position
    return action, log_prob


def hand_q(agent: SAC, i: int, obs_row, act_row, target: bool = False) -> float:
    """Critic member i, one-hidden-layer ReLU net without LayerNorm, in plain Python."""
    net = (agent.target_critic if target else agent.critic).mlp.net
    w1, b1 = net[0].weight.detach()[i], net[0].bias.detach()[i, 0]
    w2, b2 = net[2].weight.detach()[i], net[2].bias.detach()[i, 0]
    x = [float(v) for v in obs_row] + [float(v) for v in act_row]
    q = float(b2[0])
    for h in range(w1.shape[1]):
        pre = float(b1[h]) + sum(x[k] * float(w1[k, h]) for k in range(len(x)))
        q += max(pre, 0.0) * float(w2[h, 0])
    return q


def logsumexp(values: list[float]) -> float:
    top = max(values)
    return top + math.log(sum(math.exp(v - top) for v in values))


def hand_cql_gap(agent: CQL, batch: dict, random_actions: torch.Tensor, clamp: bool,
                 clamp_random: bool = False, importance: bool = True) -> list[float]:
    n, (batch_size, act_dim) = N_ACTIONS, batch["actions"].shape
    # π is sampled for s and s' in one pass (rows of s, then of s'), as the agent does; the
    # stub's log-density depends on the row's position, so a second pass would differ.
    states = torch.cat([batch["observations"], batch["next_observations"]])
    both_a, both_lp = stub_policy(states.repeat_interleave(n, 0))
    (cur_a, nxt_a), (cur_lp, nxt_lp) = both_a.chunk(2), both_lp.chunk(2)
    gaps = []
    for i in range(agent.critic.num_critics):
        total = 0.0
        for b in range(batch_size):
            s, mc = batch["observations"][b], float(batch["mc_returns"][b])
            q_data = hand_q(agent, i, s, batch["actions"][b])
            terms = []
            for j in range(n):
                m = b * n + j
                q_rand = hand_q(agent, i, s, random_actions[m])
                q_next = hand_q(agent, i, s, nxt_a[m])
                q_cur = hand_q(agent, i, s, cur_a[m])
                if clamp:
                    q_next, q_cur = max(q_next, mc), max(q_cur, mc)
                if clamp_random:
                    q_rand = max(q_rand, mc)
                if importance:
                    terms += [q_rand - act_dim * math.log(0.5), q_next - float(nxt_lp[m]),
                              q_cur - float(cur_lp[m])]
                else:
                    terms += [q_rand, q_next, q_cur]
            if not importance:  # the data action joins, and all 3n + 1 are weighted equally
                terms = [term - math.log(len(terms) + 1) for term in [*terms, q_data]]
            total += logsumexp(terms) - q_data
        gaps.append(total / batch_size)
    return gaps


def make_calql(seed: int = 12, **overrides) -> CQL:
    torch.manual_seed(seed)
    config = CQLConfig(calql=True, num_critics=2, cql_n_actions=N_ACTIONS, **SMALL)
    for key, value in overrides.items():
        setattr(config, key, value)
    agent = CQL(OBS, ACT, config)
    with torch.no_grad():  # spread the Q-values so the terms are far from each other
        agent.critic.mlp.net[-1].weight.mul_(4.0)
    agent.actor.forward = stub_policy  # instance attribute: nn.Module.__call__ uses it
    return agent


def library_gap(agent: CQL, batch: dict, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    q_data = agent.critic(batch["observations"], batch["actions"])
    torch.manual_seed(seed)
    gap = agent.cql_gap(batch, q_data)
    torch.manual_seed(seed)
    batch_size, act_dim = batch["actions"].shape
    random_actions = torch.rand(batch_size * N_ACTIONS, act_dim) * 2 - 1
    return gap, random_actions


def calql_batch(agent: CQL) -> dict:
    """Rows whose MC returns are above all policy Q (row 0), below all (row 1), in between
    (row 2) and far below (row 3), for every critic."""
    batch = make_batch(4, seed=13)
    obs_n = batch["observations"].repeat_interleave(N_ACTIONS, 0)
    with torch.no_grad():
        q_cur = agent.critic(obs_n, stub_policy(obs_n)[0]).view(2, 4, N_ACTIONS)
        q_next = agent.critic(obs_n, stub_policy(batch["next_observations"]
                                                 .repeat_interleave(N_ACTIONS, 0))[0])
        q_policy = torch.cat([q_cur, q_next.view(2, 4, N_ACTIONS)], -1)
    top, bottom = q_policy.amax(dim=(0, 2)), q_policy.amin(dim=(0, 2))
    batch["mc_returns"] = torch.stack([top[0] + 1.5, bottom[1] - 0.5,
                                       q_policy[:, 2].median(), bottom[3] - 50.0])
    return batch


def test_calql_gap_matches_hand_computation():
    agent = make_calql()
    batch = calql_batch(agent)
    gap, random_actions = library_gap(agent, batch, seed=21)
    assert gap.shape == (2,)

    expected = hand_cql_gap(agent, batch, random_actions, clamp=True)
    unclamped = hand_cql_gap(agent, batch, random_actions, clamp=False)
    random_clamped = hand_cql_gap(agent, batch, random_actions, clamp=True, clamp_random=True)
    # The scenario is meaningful: the clamp changes the answer, and clamping the random-action
    # Q-values too would change it further.
    for e, u, r in zip(expected, unclamped, random_clamped, strict=True):
        assert abs(e - u) > 1e-2 and abs(e - r) > 1e-2
    torch.testing.assert_close(gap, torch.tensor(expected), rtol=0, atol=1e-4)


def test_calql_clamp_only_rows_with_high_mc_return():
    """Rows whose MC return is below every policy Q-value are unaffected by the clamp."""
    agent = make_calql()
    batch = calql_batch(agent)
    low = {key: value[[1, 3]] for key, value in batch.items()}
    gap, random_actions = library_gap(agent, low, seed=22)
    expected = hand_cql_gap(agent, low, random_actions, clamp=False)
    torch.testing.assert_close(gap, torch.tensor(expected), rtol=0, atol=1e-4)
    high = {key: value[[0]] for key, value in batch.items()}
    gap, random_actions = library_gap(agent, high, seed=23)
    expected = hand_cql_gap(agent, high, random_actions, clamp=True)
    unclamped = hand_cql_gap(agent, high, random_actions, clamp=False)
    assert all(abs(e - u) > 1e-2 for e, u in zip(expected, unclamped, strict=True))
    torch.testing.assert_close(gap, torch.tensor(expected), rtol=0, atol=1e-4)


def test_calql_random_actions_not_clamped():
    """A row whose MC return lies above the policy Q-values but the clamp must leave the
    random-action Q-values alone: with a huge MC return the gap is exactly
    logsumexp(random terms ∪ policy terms with Q := mc) − Q_data."""
    agent = make_calql()
    batch = {key: value[:1] for key, value in make_batch(1, seed=14).items()}
    batch["mc_returns"] = torch.tensor([3.0])
    gap, random_actions = library_gap(agent, batch, seed=24)
    expected = hand_cql_gap(agent, batch, random_actions, clamp=True)
    wrong = hand_cql_gap(agent, batch, random_actions, clamp=True, clamp_random=True)
    assert all(abs(e - w) > 1e-2 for e, w in zip(expected, wrong, strict=True))
    torch.testing.assert_close(gap, torch.tensor(expected), rtol=0, atol=1e-4)


def test_cql_without_calql_is_unclamped():
    agent = make_calql()
    batch = calql_batch(agent)
    agent.config.calql = False
    gap, random_actions = library_gap(agent, batch, seed=25)
    expected = hand_cql_gap(agent, batch, random_actions, clamp=False)
    clamped = hand_cql_gap(agent, batch, random_actions, clamp=True)
    assert all(abs(e - c) > 1e-2 for e, c in zip(expected, clamped, strict=True))
    torch.testing.assert_close(gap, torch.tensor(expected), rtol=0, atol=1e-4)


def test_cql_gap_without_importance_sampling():
    agent = make_calql(cql_importance_sample=False)
    agent.config.calql = False
    batch = make_batch(3, seed=15)
    gap, random_actions = library_gap(agent, batch, seed=26)
    expected = hand_cql_gap(agent, batch, random_actions, clamp=False, importance=False)
    torch.testing.assert_close(gap, torch.tensor(expected), rtol=0, atol=1e-4)


def random_actions_after(batch: dict) -> torch.Tensor:
    """The uniform actions the CQL term draws next from the global stream, as the hand
    computation needs them (n per row, rows in order)."""
    batch_size, act_dim = batch["actions"].shape
    return torch.rand(batch_size * N_ACTIONS, act_dim) * 2 - 1


def test_cql_critic_loss_combines_td_and_gap():
    agent = make_calql(cql_alpha=2.5, cql_critic_subset=False)
    batch = calql_batch(agent)
    torch.manual_seed(31)
    loss, info = agent.critic_loss(batch)
    q_data = agent.critic(batch["observations"], batch["actions"])
    torch.manual_seed(31)
    td_loss, _ = agent.td_loss(q_data, batch)  # its draws come first, as in critic_loss
    gap = sum(hand_cql_gap(agent, batch, random_actions_after(batch), clamp=True)) / 2
    torch.testing.assert_close(loss, td_loss + 2.5 * torch.tensor(gap), rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(info["cql_gap"], torch.tensor(gap), rtol=0, atol=1e-4)


def test_cql_term_trains_a_fresh_subset_of_critics():
    """As the official code: the CQL term covers a random `target_subset` of the critics,
    drawn after the target's; its gap is the all-critics gap restricted to them, and it sends
    no gradient to the others."""
    torch.manual_seed(32)
    agent = CQL(OBS, ACT, CQLConfig(num_critics=5, target_subset=2, cql_n_actions=N_ACTIONS,
                                    calql=True, **SMALL))
    agent.actor.forward = stub_policy
    batch = calql_batch_for(agent, make_batch(6, seed=33))
    torch.manual_seed(34)
    loss, info = agent.critic_loss(batch)
    torch.manual_seed(34)
    q_data = agent.critic(batch["observations"], batch["actions"])
    td_loss, _ = agent.td_loss(q_data, batch)  # draws the target's subset
    members = torch.randint(5, (2,))  # the official draw, with replacement
    state = torch.get_rng_state()
    every = hand_cql_gap(agent, batch, random_actions_after(batch), clamp=True)
    expected = torch.tensor([every[i] for i in members.tolist()])
    torch.testing.assert_close(loss, td_loss + agent.config.cql_alpha * expected.mean(),
                               rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(info["cql_gap"], expected.mean(), rtol=0, atol=1e-4)
    torch.set_rng_state(state)  # the same uniform actions for the gradient check
    gap = agent.cql_gap(batch, q_data[members], members)
    gap.sum().backward()
    gradient = agent.critic.mlp.net[0].weight.grad.abs().sum(dim=(1, 2))
    others = [i for i in range(5) if i not in members.tolist()]
    assert (gradient[members] > 0).all() and (gradient[others] == 0).all()


def test_cql_term_on_every_critic_when_asked():
    torch.manual_seed(35)
    agent = CQL(OBS, ACT, CQLConfig(num_critics=5, target_subset=2, cql_n_actions=N_ACTIONS,
                                    cql_critic_subset=False, **SMALL))
    agent.actor.forward = stub_policy
    batch = make_batch(6, seed=36)
    torch.manual_seed(37)
    _, info = agent.critic_loss(batch)
    torch.manual_seed(37)
    q_data = agent.critic(batch["observations"], batch["actions"])
    agent.td_loss(q_data, batch)
    every = hand_cql_gap(agent, batch, random_actions_after(batch), clamp=False)
    torch.testing.assert_close(info["cql_gap"], torch.tensor(sum(every) / 5), rtol=0,
                               atol=1e-4)


def calql_batch_for(agent: CQL, batch: dict) -> dict:
    """`batch` with MC returns inside the policy actions' Q range, so the bound bites."""
    with torch.no_grad():
        obs_n = batch["observations"].repeat_interleave(N_ACTIONS, 0)
        q = agent.critic(obs_n, stub_policy(obs_n)[0])
    batch["mc_returns"] = q.view(agent.critic.num_critics, len(batch["rewards"]), -1).median(
        dim=0).values.median(dim=-1).values
    return batch


# --------------------------------------------------------------------------- Lagrange α


@pytest.mark.parametrize("target_gap, direction", [(-100.0, 1), (100.0, -1)])
def test_lagrange_alpha_moves_towards_target_gap(target_gap, direction):
    torch.manual_seed(16)
    agent = CQL(OBS, ACT, CQLConfig(num_critics=2, cql_n_actions=N_ACTIONS, cql_lagrange=True,
                                    cql_target_action_gap=target_gap, **SMALL))
    optimizers = agent.make_optimizers()
    assert "cql_alpha" in optimizers
    before = agent.cql_log_alpha().item()
    assert before == pytest.approx(1.0)
    info = agent.update(make_batch(8, seed=17), optimizers)
    after = agent.cql_log_alpha().item()
    assert (info["cql_gap"].item() - target_gap) * direction > 0
    assert (after - before) * direction > 0
    # One Adam step of lr on log α: |Δ log α| ≈ critic_lr.
    assert abs(math.log(after) - math.log(before)) == pytest.approx(agent.config.critic_lr,
                                                                    rel=1e-3)
    assert adam_steps(optimizers["cql_alpha"]) == {1}


@pytest.mark.parametrize("target_gap", [-3.0, 4.0])
def test_lagrange_alpha_loss_value_and_step_size(target_gap):
    """The dual loss is −α·(gap − target) on the last critic step's gap, so its gradient on
    log α is −α·(gap − target): Adam's first moment after one step holds (1 − β1) times that,
    and its first step moves log α by exactly lr against the gradient's sign."""
    torch.manual_seed(20)
    agent = CQL(OBS, ACT, CQLConfig(num_critics=2, cql_n_actions=N_ACTIONS, cql_lagrange=True,
                                    cql_target_action_gap=target_gap, **SMALL))
    optimizers = agent.make_optimizers()
    with torch.no_grad():
        agent.cql_log_alpha.log_value.fill_(math.log(2.5))
    info = agent.update(make_batch(8, seed=21), optimizers)
    excess = info["cql_gap"].item() - target_gap
    state = optimizers["cql_alpha"].state[agent.cql_log_alpha.log_value]
    beta1 = optimizers["cql_alpha"].param_groups[0]["betas"][0]
    assert state["exp_avg"].item() == pytest.approx((1 - beta1) * -2.5 * excess, rel=1e-5)
    step = agent.cql_log_alpha.log_value.item() - math.log(2.5)  # float32 log α: abs 1e-7
    assert step == pytest.approx(math.copysign(agent.config.critic_lr, excess), abs=1e-7)


def test_lagrange_alpha_not_touched_by_critic_optimizer():
    torch.manual_seed(18)
    agent = CQL(OBS, ACT, CQLConfig(num_critics=2, cql_n_actions=N_ACTIONS, cql_lagrange=True,
                                    **SMALL))
    optimizers = agent.make_optimizers()
    critic_params = {id(p) for g in optimizers["critic"].param_groups for p in g["params"]}
    assert id(agent.cql_log_alpha.log_value) not in critic_params
    before = agent.cql_log_alpha.log_value.item()
    EagerSteps(agent.updater, optimizers).critic(make_batch(8), 0)
    assert agent.cql_log_alpha.log_value.item() == before


# ------------------------------------------------------------------------ max-target backup


def test_max_target_backup_hand_computation_and_dominance():
    """Max over n sampled next actions of the subset-min target Q; sample 0 is the action the
    plain backup uses, so the max-backup target is ≥ it, and strictly larger somewhere."""
    torch.manual_seed(19)
    n, batch_size = 4, 5
    config = CQLConfig(num_critics=5, target_subset=2, cql_n_actions=n, discount=0.9,
                       cql_max_target_backup=False, **SMALL)
    agent = CQL(OBS, ACT, config)
    with torch.no_grad():
        for param in agent.target_critic.parameters():  # target ≠ online
            param.add_(0.3 * torch.randn_like(param))

    def stub(obs, deterministic=False):
        rows = obs.shape[0]
        j = (torch.arange(rows) % n) if rows == batch_size * n else torch.zeros(rows)
        action = torch.tanh(0.5 * obs[:, :ACT] + 0.6 * (j[:, None] - 1.5))
        return action, torch.zeros(rows)

    agent.actor.forward = stub
    batch = make_batch(batch_size, seed=20)
    batch["terminals"] = torch.tensor([0.0, 0.0, 1.0, 0.0, 0.0])

    torch.manual_seed(41)
    plain = agent.td_target(batch)  # cql_max_target_backup off: SAC's backup
    agent.config.cql_max_target_backup = True
    torch.manual_seed(41)
    maxed = agent.td_target(batch)
    torch.manual_seed(41)
    chosen = torch.randint(5, (2,)).tolist()  # the stub consumes no RNG

    next_a, _ = stub(batch["next_observations"].repeat_interleave(n, 0))
    expected, first = [], []
    for b in range(batch_size):
        s = batch["next_observations"][b]
        per_sample = [min(hand_q(agent, i, s, next_a[b * n + j], target=True) for i in chosen)
                      for j in range(n)]
        not_done = 1.0 - float(batch["terminals"][b])
        expected.append(float(batch["rewards"][b]) + 0.9 * not_done * max(per_sample))
        first.append(float(batch["rewards"][b]) + 0.9 * not_done * per_sample[0])
    torch.testing.assert_close(maxed, torch.tensor(expected), rtol=0, atol=1e-5)
    torch.testing.assert_close(plain, torch.tensor(first), rtol=0, atol=1e-5)
    assert torch.all(maxed >= plain - 1e-6)
    assert (maxed - plain).max() > 1e-2
    assert maxed[2] == batch["rewards"][2]  # terminal row


@pytest.mark.parametrize("backup_entropy", [False, True])
def test_sac_max_target_backup_hand_computation(backup_entropy):
    """Online SAC's max-target backup (official antmaze_wsrl): the max over n sampled next
    actions of the subset-min target Q (minus α·log π first, when the entropy is backed up),
    against plain Python on 3 rows; switched off, the plain backup of the first sample."""
    torch.manual_seed(42)
    n, batch_size = 3, 3
    agent = SAC(OBS, ACT, SACConfig(num_critics=4, target_subset=2, discount=0.9,
                                    backup_entropy=backup_entropy, max_target_backup=True,
                                    max_target_actions=n, **SMALL))
    assert agent.backup_actions() == n
    with torch.no_grad():
        for param in agent.target_critic.parameters():  # target ≠ online
            param.add_(0.3 * torch.randn_like(param))
        agent.temperature.log_value.fill_(math.log(0.7))

    def stub(obs, deterministic=False):  # sample j of a row: its own action and log π
        rows = obs.shape[0]
        j = (torch.arange(rows) % n) if rows == batch_size * n else torch.zeros(rows)
        return torch.tanh(0.5 * obs[:, :ACT] + 0.8 * (1.0 - j[:, None])), 1.0 - 0.5 * j

    agent.actor.forward = stub
    batch = make_batch(batch_size, seed=43)
    batch["terminals"] = torch.tensor([0.0, 1.0, 0.0])
    torch.manual_seed(44)
    maxed = agent.td_target(batch)
    torch.manual_seed(44)
    chosen = torch.randint(4, (2,)).tolist()  # the stub consumes no RNG
    agent.config.max_target_backup = False
    torch.manual_seed(44)
    plain = agent.td_target(batch)

    next_a, next_log_prob = stub(batch["next_observations"].repeat_interleave(n, 0))
    alpha = 0.7 if backup_entropy else 0.0
    expected, first = [], []
    for b in range(batch_size):
        s = batch["next_observations"][b]
        per_sample = [min(hand_q(agent, i, s, next_a[b * n + j], target=True) for i in chosen)
                      - alpha * float(next_log_prob[b * n + j]) for j in range(n)]
        not_done = 1.0 - float(batch["terminals"][b])
        expected.append(float(batch["rewards"][b]) + 0.9 * not_done * max(per_sample))
        first.append(float(batch["rewards"][b]) + 0.9 * not_done * per_sample[0])
    torch.testing.assert_close(maxed, torch.tensor(expected), rtol=0, atol=1e-5)
    torch.testing.assert_close(plain, torch.tensor(first), rtol=0, atol=1e-5)
    assert (maxed - plain).max() > 1e-2  # the max picked another sample somewhere
    assert maxed[1] == batch["rewards"][1]  # terminal row


def test_cql_backup_follows_its_own_switch_not_sacs():
    """As the official CQLAgent: `cql_max_target_backup` over `cql_n_actions` decides (on by
    default, as the official cql_config.py); SAC's `max_target_backup` does not."""
    assert CQLConfig().cql_max_target_backup and not SACConfig().max_target_backup
    config = CQLConfig(cql_n_actions=4, max_target_backup=True, max_target_actions=7,
                       cql_max_target_backup=False, **SMALL)
    assert CQL(OBS, ACT, config).backup_actions() == 1
    config.cql_max_target_backup = True
    assert CQL(OBS, ACT, config).backup_actions() == 4


# ------------------------------------------------------------------------------ temperature


@pytest.mark.parametrize("agent_class", [SAC, CQL])
def test_temperature_loss_takes_the_policy_at_the_next_states(agent_class):
    """As the official `temperature_loss_fn`: α·(entropy − target) with the entropy of the
    policy's actions at s', as many per s' as the backup draws (CQL's max-target backup: n),
    written out with the stub policy's known log-densities."""
    config = (CQLConfig(num_critics=2, cql_n_actions=N_ACTIONS, cql_max_target_backup=True,
                        **SMALL) if agent_class is CQL else SACConfig(num_critics=2, **SMALL))
    agent = agent_class(OBS, ACT, config)
    agent.actor.forward = stub_policy
    with torch.no_grad():
        agent.temperature.log_value.fill_(math.log(0.5))
    batch = make_batch(5, seed=40)
    n = N_ACTIONS if agent_class is CQL else 1
    log_probs = []
    for row in range(5):
        for sample in range(n):
            position = row * n + sample
            offset = (position % N_ACTIONS) - 1.0
            log_probs.append(-0.5 + 0.3 * float(batch["next_observations"][row, 0])
                             - 0.25 * offset + 0.05 * position)
    expected = -0.5 * sum(lp + agent.target_entropy for lp in log_probs) / len(log_probs)
    loss, _ = agent.temperature_loss(batch)
    torch.testing.assert_close(loss, torch.tensor(expected), rtol=1e-5, atol=1e-6)
