"""Every fast path against its plain path: the compiled (fused) update vs eager, fused Adam vs
the for-each Adam; when "auto" compiles; the allocator setting.
(The REDQ subset target and the one-elite rollout are checked against their plain paths in
test_agents / test_world_model.)"""

import copy
import platform
import sys
import warnings

import pytest
import torch
from conftest import make_batch

from wsrl_wm import allocator
from wsrl_wm.agents import CQL, SAC, CQLConfig, SACConfig, compilation
from wsrl_wm.errors import DivergenceError, WsrlError

SHAPES = dict(num_critics=4, critic_hidden=(32, 32), actor_hidden=(32, 32), layer_norm=True,
              utd=2)


def updated_parameters(agent: SAC, optimizers: dict, batch: dict, updates: int) -> dict:
    torch.manual_seed(7)
    for _ in range(updates):
        agent.update(batch, optimizers)
    return {k: v.detach().clone() for k, v in agent.state_dict().items()}


@pytest.mark.parametrize("agent_class, config", [
    (SAC, SACConfig(**SHAPES, compile="on")),
    (SAC, SACConfig(**SHAPES, compile="on", update_rule="trained_only")),
    (CQL, CQLConfig(**SHAPES, compile="on", calql=True, cql_n_actions=3)),
])
def test_compiled_losses_match_eager(agent_class, config):
    assert_compiled_matches_eager(agent_class, config)


# Every supported shape compiles (inductor once failed at num_critics 2, where the REDQ subset
# is every critic): 1 to 10 critics, LayerNorm on and off, Cal-QL, CQL with and without
# importance sampling, the critic subset and the Lagrange α, max-target backup (CQL's and the
# online SAC's), Q-chunking's mean over the critics with its BC term, UTD 1 to 8.
COMPILE_MATRIX = [
    (SAC, dict(num_critics=1, layer_norm=True, utd=1)),
    (SAC, dict(num_critics=4, layer_norm=True, q_agg="mean", bc_alpha=0.01, utd=2)),
    (SAC, dict(num_critics=2, layer_norm=False, utd=8)),
    (SAC, dict(num_critics=10, layer_norm=True, max_target_backup=True, max_target_actions=3,
               utd=2)),
    (CQL, dict(num_critics=2, layer_norm=False, calql=True)),
    (CQL, dict(num_critics=1, layer_norm=True, cql_max_target_backup=True, utd=2)),
    (CQL, dict(num_critics=3, layer_norm=True, calql=True, cql_max_target_backup=True, utd=4,
               cql_critic_subset=False)),
    (CQL, dict(num_critics=10, layer_norm=True, cql_importance_sample=False, cql_lagrange=True,
               utd=1)),
]


@pytest.mark.slow
@pytest.mark.parametrize("agent_class, shape", COMPILE_MATRIX)
def test_every_supported_shape_compiles_and_matches_eager(agent_class, shape):
    config_class = CQLConfig if agent_class is CQL else SACConfig
    extra = dict(cql_n_actions=3) if agent_class is CQL else {}
    config = config_class(critic_hidden=(32, 32), actor_hidden=(32, 32), compile="on",
                          **shape, **extra)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no fallback to eager either
        assert_compiled_matches_eager(agent_class, config)


def assert_compiled_matches_eager(agent_class, config):
    """Same start, same batch, same random draws (inductor told to draw like eager): the
    compiled update lands on the eager update's parameters within float tolerance."""
    if not compilation.compile_available():
        pytest.skip("torch.compile has no working backend here (no C++ compiler / Triton)")
    torch.manual_seed(0)
    eager = agent_class(3, 2, config)
    compiled = copy.deepcopy(eager)
    assert compiled.compile_losses(updates=1)
    batch = make_batch(64, seed=1)
    expected = updated_parameters(eager, eager.make_optimizers(), batch, 3)
    with torch._inductor.config.patch(fallback_random=True):
        got = updated_parameters(compiled, compiled.make_optimizers(), batch, 3)
    assert compiled.fused_update is not None  # it did not fall back to eager
    for name, value in expected.items():
        torch.testing.assert_close(got[name], value, rtol=1e-4, atol=1e-5, msg=name)
    assert any(not torch.equal(value, eager_start) for value, eager_start in
               zip(expected.values(), agent_class(3, 2, config).state_dict().values(),
                   strict=True))


def test_a_failing_compile_warns_once_and_the_run_goes_on_eager(monkeypatch):
    """A backend that fails (as inductor did at some shapes) costs one warning line; the
    failed update and every later one run eager and land where eager updates land."""
    def failing_backend(graph, example_inputs):
        raise RuntimeError("a stand-in for an inductor bug\nwith a second line")

    monkeypatch.setattr(compilation, "BACKEND", failing_backend)
    torch.manual_seed(0)
    eager = CQL(3, 2, CQLConfig(**SHAPES, calql=True, cql_n_actions=3, compile="off"))
    torch.manual_seed(0)
    compiled = CQL(3, 2, CQLConfig(**SHAPES, calql=True, cql_n_actions=3, compile="on"))
    assert compiled.compile_losses(updates=1)

    batch = make_batch(64, seed=1)
    expected = updated_parameters(eager, eager.make_optimizers(), batch, 3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = updated_parameters(compiled, compiled.make_optimizers(), batch, 3)
    messages = [str(w.message) for w in caught if "torch.compile" in str(w.message)]
    assert len(messages) == 1 and "\n" not in messages[0]
    assert "a stand-in for an inductor bug" in messages[0] and "goes on eager" in messages[0]
    assert compiled.fused_update is None
    for name, value in expected.items():
        torch.testing.assert_close(got[name], value, rtol=1e-5, atol=1e-6, msg=name)


def compiled_agent(config: SACConfig) -> SAC:
    if not compilation.compile_available():
        pytest.skip("torch.compile has no working backend here (no C++ compiler / Triton)")
    torch.manual_seed(0)
    agent = SAC(3, 2, config)
    assert agent.compile_losses(updates=1)
    return agent


def fused_and_plain() -> tuple[SAC, SAC]:
    """The same agent twice, one taking the fused update, one the eager stepper."""
    fused = compiled_agent(SACConfig(**SHAPES, compile="on"))
    torch.manual_seed(0)
    plain = SAC(3, 2, SACConfig(**SHAPES, compile="off"))
    return fused, plain


def test_cql_candidates_in_blocks_match_one_pass(monkeypatch):
    """The critics see CQL's candidate rows in blocks (cache-sized); the gap and its gradient
    are those of one pass over all rows, blocks cutting through a state's candidates included."""
    from wsrl_wm.agents import cql
    torch.manual_seed(0)
    agent = CQL(3, 2, CQLConfig(**SHAPES, calql=True, cql_n_actions=5))
    batch = make_batch(40)  # 3 · 5 · 40 = 600 candidate rows: blocks of 128 cut states apart

    def gap_and_grad(block_rows: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
        monkeypatch.setattr(cql, "CANDIDATE_BLOCK_ROWS", block_rows)
        torch.manual_seed(1)  # the same uniform and policy candidates in both passes
        q_data = agent.critic(batch["observations"], batch["actions"])
        gap = agent.cql_gap(batch, q_data)
        return gap.detach(), torch.autograd.grad(gap.sum(), list(agent.critic.parameters()))

    whole, blocks = gap_and_grad(10_000), gap_and_grad(128)
    torch.testing.assert_close(blocks[0], whole[0])
    for blocked, plain in zip(blocks[1], whole[1], strict=True):
        torch.testing.assert_close(blocked, plain)


def test_eager_and_compiled_critic_heads_agree():
    """A one-output layer runs as a batched matmul eager and as a product and a sum compiled:
    the same values either way, and those of each member's own nn.Linear."""
    from models.ensemble import EnsembleLinear
    torch.manual_seed(0)
    head, x = EnsembleLinear(3, 8, 1), torch.randn(3, 5, 8)
    eager = head(x)
    linears = [torch.nn.functional.linear(x[m], head.weight[m].T, head.bias[m, 0])
               for m in range(3)]
    torch.testing.assert_close(eager, torch.stack(linears))
    if compilation.compile_available():
        torch.testing.assert_close(torch.compile(head)(x), eager)


def test_fused_update_keeps_adams_state_layout():
    """The fused update writes Adam's own state, so its checkpoints load into the autograd path
    (and back): same keys, same values as torch.optim.Adam after the same steps, for the critic,
    actor and temperature optimisers."""
    batch = make_batch(64, seed=3)
    states = []
    for agent in fused_and_plain():
        optimizers = agent.make_optimizers()
        assert agent.fused_update is None or agent.fused_update.supports(optimizers)
        with torch._inductor.config.patch(fallback_random=True):
            updated_parameters(agent, optimizers, batch, 2)
        states.append({name: opt.state_dict() for name, opt in optimizers.items()})
    got, expected = states
    for name in expected:
        assert got[name]["param_groups"] == expected[name]["param_groups"]
        assert got[name]["state"].keys() == expected[name]["state"].keys()
        for index, state in expected[name]["state"].items():
            assert got[name]["state"][index].keys() == state.keys()
            for key, value in state.items():
                torch.testing.assert_close(got[name]["state"][index][key], value, rtol=1e-4,
                                           atol=1e-6, msg=f"{name} {index} {key}")


def poison_second_slice(batch: dict) -> dict:
    """NaN rewards in the second UTD slice only: the first critic step is sound."""
    batch["rewards"][len(batch["rewards"]) // SHAPES["utd"]] = float("nan")
    return batch


def poison_temperature(agent: SAC) -> None:
    """An infinite temperature: the critic steps are sound, the actor loss is not."""
    with torch.no_grad():
        agent.temperature.log_value.fill_(float("inf"))


@pytest.mark.parametrize("poison, message", [
    ("second slice", "critic loss became NaN"),
    ("temperature", "actor loss became"),
])
def test_fused_update_stops_where_the_plain_path_stops(poison, message):
    """A non-finite loss in a later step of the update: the fused update masks that step and
    every later one on the device, so it raises the plain path's error with every parameter,
    target and optimiser moment where the plain path's check left them (earlier steps
    applied)."""
    batch = make_batch(64, seed=5)
    ends = []
    for agent in fused_and_plain():
        optimizers = agent.make_optimizers()
        with torch._inductor.config.patch(fallback_random=True):
            torch.manual_seed(7)
            agent.update(make_batch(64, seed=4), optimizers)  # Adam state exists
            if poison == "temperature":
                poison_temperature(agent)
            start = copy.deepcopy(agent.state_dict())
            with pytest.raises(DivergenceError, match=message):
                agent.update(poison_second_slice(dict(batch)) if poison == "second slice"
                             else batch, optimizers)
        ends.append((start, agent.state_dict(),
                     {name: opt.state_dict() for name, opt in optimizers.items()}))
    (fused_start, fused_params, fused_moments), (_, plain_params, plain_moments) = ends
    assert any(not torch.equal(fused_params[k], v) for k, v in fused_start.items())
    for name, value in plain_params.items():
        torch.testing.assert_close(fused_params[name], value, rtol=1e-4, atol=1e-6, msg=name)
    for name, moments in plain_moments.items():
        for index, state in moments["state"].items():
            for key, value in state.items():
                torch.testing.assert_close(fused_moments[name]["state"][index][key], value,
                                           rtol=1e-4, atol=1e-6, msg=f"{name} {index} {key}")


def test_fused_update_moves_nothing_on_a_nonfinite_first_loss():
    agent = compiled_agent(SACConfig(**SHAPES, compile="on"))
    optimizers = agent.make_optimizers()
    assert agent.fused_update.supports(optimizers)
    agent.update(make_batch(64, seed=4), optimizers)  # Adam state exists
    before = copy.deepcopy((agent.state_dict(),
                            {name: opt.state_dict() for name, opt in optimizers.items()}))
    batch = make_batch(64, seed=5)
    batch["rewards"][3] = float("nan")
    with pytest.raises(DivergenceError, match="critic loss became NaN"):
        agent.update(batch, optimizers)
    for name, value in before[0].items():
        assert torch.equal(agent.state_dict()[name], value), name
    for name, moments in before[1].items():
        for index, state in moments["state"].items():
            for key, value in state.items():
                assert torch.equal(optimizers[name].state_dict()["state"][index][key], value)


def test_fused_update_leaves_other_optimisers_to_autograd():
    agent = compiled_agent(SACConfig(**SHAPES, compile="on"))
    update = agent.fused_update
    optimizers = agent.make_optimizers()
    assert update.supports(optimizers)
    critic = list(agent.critic.parameters())
    for other in (torch.optim.Adam(critic, weight_decay=1e-4),
                  torch.optim.Adam(critic, amsgrad=True), torch.optim.SGD(critic, lr=0.1),
                  torch.optim.Adam(critic[1:])):
        assert not update.supports({**optimizers, "critic": other})
    assert not update.supports({"critic": optimizers["critic"]})


def test_a_copy_of_a_compiled_agent_updates_itself_only():
    """Compiled functions are not deep-copied: the copy is compiled anew, so updating it moves
    its own parameters and leaves the original's alone."""
    agent = compiled_agent(SACConfig(**SHAPES, compile="on"))
    copied = copy.deepcopy(agent)
    before = {k: v.clone() for k, v in agent.state_dict().items()}
    optimizers = copied.make_optimizers()
    assert copied.fused_update.supports(optimizers)
    copied.update(make_batch(64, seed=6), optimizers)
    for name, value in before.items():
        assert torch.equal(agent.state_dict()[name], value), name
    assert any(not torch.equal(copied.state_dict()[k], v) for k, v in before.items())


def test_fused_adam_matches_foreach_adam():
    torch.manual_seed(0)
    agent = SAC(3, 2, SACConfig(**SHAPES))
    plain = copy.deepcopy(agent)
    fused = agent.make_optimizers()
    assert all(group["fused"] for opt in fused.values() for group in opt.param_groups)
    foreach = {name: torch.optim.Adam(opt.param_groups[0]["params"],
                                      lr=opt.param_groups[0]["lr"], foreach=True)
               for name, opt in plain.make_optimizers().items()}
    batch = make_batch(64, seed=2)
    got = updated_parameters(agent, fused, batch, 5)
    expected = updated_parameters(plain, foreach, batch, 5)
    for name, value in expected.items():
        torch.testing.assert_close(got[name], value, rtol=1e-5, atol=1e-6, msg=name)


def test_auto_compiles_only_long_runs_where_a_backend_exists(monkeypatch):
    monkeypatch.setattr(compilation, "why_compile_unavailable", lambda: None)
    assert compilation.wants_compile("auto", compilation.AUTO_MIN_UPDATES)
    assert not compilation.wants_compile("auto", compilation.AUTO_MIN_UPDATES - 1)
    assert compilation.wants_compile("on", 1) and not compilation.wants_compile("off", 10**9)
    monkeypatch.setattr(compilation, "why_compile_unavailable", lambda: "no C++ compiler")
    with pytest.warns(RuntimeWarning, match="compile: auto runs eager: no C\\+\\+ compiler"):
        assert not compilation.wants_compile("auto", 10**9)
    agent = SAC(3, 2, SACConfig(**SHAPES, compile="off"))
    assert not agent.compile_losses(10**9)
    assert agent.critic_loss.__func__ is SAC.critic_loss


def test_unknown_compile_mode_is_rejected():
    with pytest.raises(WsrlError, match="compile must be one of auto, on, off"):
        SACConfig(compile="fast")


def test_allocator_setting_applies_on_linux_and_can_be_opted_out(monkeypatch):
    monkeypatch.setenv(allocator.OPT_OUT, "1")
    assert not allocator.keep_freed_memory()
    monkeypatch.delenv(allocator.OPT_OUT)
    assert allocator.keep_freed_memory() == (sys.platform.startswith("linux")
                                             and platform.libc_ver()[0] == "glibc")


def test_auto_detection_needs_a_backend_and_a_working_trial_compile(monkeypatch):
    detect = compilation.why_compile_unavailable.__wrapped__  # uncached
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(compilation.shutil, "which", lambda name: None)
    assert detect() == "no C++ compiler (c++, g++ or clang++) on PATH"
    monkeypatch.setattr(compilation.shutil, "which", lambda name: "/usr/bin/" + name)

    def broken(*args, **kwargs):
        raise RuntimeError("inductor: Python.h not found")
    monkeypatch.setattr(torch, "compile", broken)
    assert detect() == "a trial kernel failed to compile (RuntimeError)"  # the toolchain fails
