"""The beyond-WSRL fine-tuning options: plasticity resets and the JSRL roll-in (semantics
pinned by hand, then through a real fine-tuning run)."""

import csv
import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import build_config_module, fit_module
from lightning.pytorch import Callback

from wsrl_wm.ablation.plan import plan
from wsrl_wm.ablation.study import load_spec, sweep_of
from wsrl_wm.agents import SAC, SACConfig
from wsrl_wm.errors import WsrlError
from wsrl_wm.evaluation import EVAL_SEED_OFFSET, evaluate
from wsrl_wm.lightning import FinetuneModule
from wsrl_wm.lightning.bundle import PretrainedBundle
from wsrl_wm.online import EnvRunner, JSRLConfig, ResetConfig
from wsrl_wm.online.resets import check_reset_layers, layer_groups, reset_layers

ROOT = Path(__file__).resolve().parents[1]
SMALL = SACConfig(num_critics=3, critic_hidden=(8, 8), actor_hidden=(8, 8), layer_norm=True)


def trained_pair(config: SACConfig = SMALL, seed: int = 0):
    """(agent after one Adam step, so its optimisers hold moments; a fresh agent; optimisers)"""
    torch.manual_seed(seed)
    agent, fresh = SAC(3, 2, config), SAC(3, 2, config)
    optimizers = agent.make_optimizers()
    for name, module in (("critic", agent.critic), ("actor", agent.actor),
                         ("temperature", agent.temperature)):
        loss = sum((p.pow(2) + p).sum() for p in module.parameters())  # no zero gradient
        optimizers[name].zero_grad()
        loss.backward()
        optimizers[name].step()
    agent.target_critic.load_state_dict({k: v + 1 for k, v in
                                         agent.critic.state_dict().items()})
    return agent, fresh, optimizers


def snapshot(module):
    return {k: v.clone() for k, v in module.state_dict().items()}


def test_a_reset_touches_exactly_the_named_layers():
    agent, fresh, optimizers = trained_pair()
    before = {name: snapshot(getattr(agent, name)) for name in ("actor", "critic",
                                                                 "target_critic")}
    count = reset_layers(agent, fresh, ResetConfig(networks=("critic",), layers=2), optimizers)
    # critic net: Linear0, LN0, ReLU, Linear1, LN1, ReLU, head -> layers (L0+LN0), (L1+LN1), head
    reset = {"mlp.net.3.weight", "mlp.net.3.bias", "mlp.net.4.weight", "mlp.net.4.bias",
             "mlp.net.6.weight", "mlp.net.6.bias"}
    critic, fresh_critic = agent.critic.state_dict(), fresh.critic.state_dict()
    for key, value in critic.items():
        expected = fresh_critic[key] if key in reset else before["critic"][key]
        assert torch.equal(value, expected), key
        target = agent.target_critic.state_dict()[key]
        assert torch.equal(target, value if key in reset else before["target_critic"][key]), key
    assert all(torch.equal(v, before["actor"][k]) for k, v in agent.actor.state_dict().items())
    assert count == sum(critic[k].numel() for k in reset)
    moments = dict(agent.critic.named_parameters())
    for key, param in moments.items():
        state = optimizers["critic"].state[param]
        assert (state["exp_avg"].abs().sum() == 0) == (key in reset), key
        assert (float(state["step"]) == 0) == (key in reset), key


def test_shrink_and_perturb_pulls_toward_a_fresh_draw_and_keeps_the_log_std_with_the_head():
    config = SACConfig(**{**SMALL.__dict__, "actor_state_dependent_std": False})
    agent, fresh, optimizers = trained_pair(config)
    with torch.no_grad():
        agent.actor.log_std.fill_(-1.0)
    before = snapshot(agent.actor)
    reset_layers(agent, fresh, ResetConfig(networks=("actor",), layers=1, shrink=0.75),
                 optimizers)
    after, new = agent.actor.state_dict(), fresh.actor.state_dict()
    for key in ("net.6.weight", "net.6.bias", "log_std"):
        torch.testing.assert_close(after[key], 0.75 * before[key] + 0.25 * new[key])
    assert torch.equal(after["net.0.weight"], before["net.0.weight"])
    assert [len(group) for group in layer_groups(agent.actor)] == [4, 4, 3]


def test_the_sac_preset_rebuilds_the_whole_agent_with_fresh_adam_states():
    """Nikishin et al.'s SAC resets: every layer, the target critic, the temperature back to
    its initial value, and every optimiser's state as a new Adam's (step 0, zero moments)."""
    config = SACConfig(**{**SMALL.__dict__, "initial_temperature": 0.5})
    agent, fresh, optimizers = trained_pair(config)
    assert agent.temperature().item() != pytest.approx(0.5)
    count = reset_layers(agent, fresh, ResetConfig(preset="sac"), optimizers)
    for name in ("actor", "critic"):
        for key, value in getattr(agent, name).state_dict().items():
            assert torch.equal(value, getattr(fresh, name).state_dict()[key]), (name, key)
    for key, value in agent.target_critic.state_dict().items():
        assert torch.equal(value, fresh.critic.state_dict()[key]), key
    assert agent.temperature().item() == pytest.approx(0.5)
    for name, optimizer in optimizers.items():
        assert len(optimizer.state) == len(optimizer.param_groups[0]["params"]), name
        for state in optimizer.state.values():
            assert float(state["step"]) == 0, name
            assert not state["exp_avg"].any() and not state["exp_avg_sq"].any(), name
    assert count == sum(p.numel() for p in (*agent.actor.parameters(),
                                            *agent.critic.parameters(),
                                            *agent.temperature.parameters()))


def test_presets_expand_to_their_documented_fields():
    expanded = {name: {field: getattr(ResetConfig(preset=name), field)
                       for field in ("networks", "layers", "shrink", "temperature")}
                for name in ("sac", "head")}
    assert expanded == {
        "sac": {"networks": ("actor", "critic"), "layers": 0, "shrink": 0.0,
                "temperature": True},
        "head": {"networks": ("actor", "critic"), "layers": 1, "shrink": 0.0,
                 "temperature": False}}
    unset = ResetConfig()  # no preset: the fields' own defaults, the head-only reset
    assert (unset.networks, unset.layers, unset.shrink, unset.temperature) == (
        ("actor", "critic"), 1, 0.0, False)
    assert ResetConfig(preset="sac", layers=0, networks=["actor", "critic"]).layers == 0
    with pytest.raises(WsrlError, match="resets.preset sac sets resets.layers to 0"):
        ResetConfig(preset="sac", layers=1)
    with pytest.raises(WsrlError, match="resets.preset must be one of sac, head"):
        ResetConfig(preset="spr")


def test_a_reset_without_the_optimiser_of_what_it_resets_is_an_error():
    agent, fresh, optimizers = trained_pair()
    before = snapshot(agent)
    del optimizers["temperature"]
    with pytest.raises(WsrlError, match="resets: no optimiser named temperature"):
        reset_layers(agent, fresh, ResetConfig(preset="sac"), optimizers)
    assert all(torch.equal(v, before[k]) for k, v in agent.state_dict().items())  # untouched
    reset_layers(agent, fresh, ResetConfig(preset="head"), optimizers)  # needs no temperature


def test_reset_schedule_and_bad_settings():
    periodic = ResetConfig(interval=100)
    assert [s for s in range(-5, 400) if periodic.due(s, 300)] == [100, 200]
    assert [s for s in range(-5, 400) if ResetConfig(at_switch=True).due(s, 300)] == [0]
    assert not ResetConfig().enabled
    for bad, message in (({"networks": ("value",)}, "networks"), ({"layers": -1}, "layers"),
                         ({"shrink": 1.0}, "shrink"), ({"interval": -1}, "interval")):
        with pytest.raises(WsrlError, match=message):
            ResetConfig(**bad)


def test_jsrl_curriculum_stages_fall_linearly_to_no_roll_in():
    config = JSRLConfig(guide_steps=100, stages=5)
    rng = np.random.default_rng(0)
    roll_ins = [config.roll_in(step, 1000, rng) for step in (0, 199, 200, 400, 650, 800, 999)]
    assert roll_ins == [100, 100, 75, 50, 25, 0, 0]
    assert config.roll_in(-1, 1000, rng) > 10**9  # the warmup: the guide acts throughout
    random = JSRLConfig(guide_steps=7, curriculum="random")
    draws = [random.roll_in(5, 1000, np.random.default_rng(3)) for _ in range(3)]
    assert len(set(draws)) == 1 and 0 <= draws[0] <= 7  # one seeded draw per episode
    spread = {random.roll_in(5, 1000, rng) for _ in range(400)}
    assert spread == set(range(8))
    for bad, message in (({"guide_steps": -1}, "guide_steps"), ({"stages": 1}, "stages"),
                         ({"curriculum": "linear"}, "curriculum"), ({"learner": "x"}, "learner")):
        with pytest.raises(WsrlError, match=message):
            JSRLConfig(**bad)


class Constant:
    def __init__(self, value: float):
        self.value = value

    def act(self, obs):
        return torch.full((2,), self.value)


class Recorder:
    def __init__(self):
        self.actions = []

    def add(self, rows):
        self.actions.append(float(rows["actions"][0, 0]))


class StubEnv:
    """Episodes of 5 steps; actions are recorded by the buffer."""

    def reset(self, seed=None):
        self.t = 0
        return np.zeros(3, np.float32), {}

    def step(self, action):
        self.t += 1
        return np.zeros(3, np.float32), 0.0, False, self.t == 5, {}


def test_the_guide_acts_for_the_roll_in_of_each_episode_then_the_learner():
    buffer = Recorder()
    runner = EnvRunner(StubEnv(), buffer)
    runner.reset(0)
    runner.roll_in = 3
    for _ in range(5):
        runner.step(Constant(-1.0), guide=Constant(1.0))
    runner.roll_in = 1
    for _ in range(5):
        runner.step(Constant(-1.0), guide=Constant(1.0))
    assert buffer.actions == [1, 1, 1, -1, -1, 1, -1, -1, -1, -1]


def metrics_of(root, name: str) -> list[tuple[int, float]]:
    rows = csv.DictReader(open(next(root.glob("csv/version_*/metrics.csv"))))
    return [(int(float(r["env_step"])), float(r[name])) for r in rows if r.get(name)]


def head_names(network) -> set[str]:
    """The parameters of a network's output layer: its last indexed module (`net.6.weight`),
    plus a state-independent log-std."""
    names = [name for name, _ in network.named_parameters()]
    last = max(int(name.split(".")[-2]) for name in names if name.split(".")[-2].isdigit())
    return {name for name in names if f".{last}." in f".{name}" or name == "log_std"}


class ResetSpy:
    """Wraps a fine-tuning module's `reset`: what each reset did to the actor, the critics,
    the target critics and the Adam states, seen from outside."""

    def __init__(self, module):
        self.module, self.seen = module, []
        self.original, module.reset = module.reset, self

    def state(self):
        agent = self.module.agent
        optimizers = self.module.named_optimizers()
        params = {(net, name): p.detach().clone() for net in ("actor", "critic", "target_critic")
                  for name, p in getattr(agent, net).named_parameters()}
        moments = {(net, name): {k: v.clone() for k, v in optimizers[net].state[p].items()}
                   for net in ("actor", "critic")
                   for name, p in getattr(agent, net).named_parameters()
                   if p in optimizers[net].state}
        return params, moments

    def __call__(self):
        before = self.state()
        self.original()
        self.seen.append((self.module.env_step, before, self.state()))


def test_resets_in_a_real_run_redraw_the_heads_and_restart_their_adam_moments(pretrained,
                                                                             tmp_path):
    """Every scheduled reset of a fit (WSRL's pretrained learner: its Adam states are full)
    changes the actor's and the critics' output layers and nothing else, copies the critics'
    new heads into the target, and zeroes those parameters' Adam step and moments."""
    module = FinetuneModule(pretrained, warmup_steps=20, online_steps=30, batch_size=32,
                            eval_interval=30, eval_episodes=1, log_interval=10,
                            resets=ResetConfig(layers=1, at_switch=True, interval=10))
    spy = ResetSpy(module)
    fit_module(module, tmp_path)
    assert [step for step, *_ in spy.seen] == [20, 30, 40]  # online steps 0, 10, 20
    assert [step for step, _ in metrics_of(tmp_path, "event/reset_parameters")] == [20, 30, 40]
    heads = {net: head_names(getattr(module.agent, net)) for net in ("actor", "critic")}
    heads["target_critic"] = heads["critic"]
    for step, (params, moments), (params_after, moments_after) in spy.seen:
        for (net, name), value in params.items():
            changed = not torch.equal(value, params_after[net, name])
            if net == "target_critic" and name in heads[net]:
                assert torch.equal(params_after[net, name], params_after["critic", name])
            else:
                assert changed == (name in heads[net]), (step, net, name)
        assert moments, "the pretrained learner's Adam states are restored"
        for (net, name), state in moments.items():
            after = moments_after[net, name]
            if name in heads[net]:
                assert all(not v.any() for v in after.values()), (step, net, name)
                assert any(v.any() for v in state.values()), (step, net, name)
            else:
                assert all(torch.equal(v, state[k]) for k, v in after.items()), (step, name)


class ActingSpy:
    """Records, for every policy query of the training env, the env step, the episode's
    step and which of the two policies was asked."""

    def __init__(self, module):
        self.module, self.calls = module, []
        for who, policy in (("guide", module.guide), ("learner", module.agent)):
            policy.act = self.recording(who, policy.act)

    def recording(self, who, act):
        def call(obs, *args, **kwargs):
            runner = self.module.runner
            self.calls.append((self.module.env_step, runner.episode_step, who))
            return act(obs, *args, **kwargs)
        return call


def test_the_guide_acts_through_the_warmup_and_each_online_roll_in(pretrained, tmp_path):
    """JSRL in a fit, against the curriculum by hand (guide steps 6, 3 stages over 30 online
    steps: roll-ins 6, 3, 0): every warmup episode is the guide's throughout; an online
    episode is the guide's for the roll-in of its starting stage, then the learner's."""
    warmup = 20
    module = FinetuneModule(pretrained, warmup_steps=warmup, online_steps=30, batch_size=32,
                            eval_interval=30, eval_episodes=1, log_interval=10,
                            jsrl=JSRLConfig(guide_steps=6, stages=3, learner="scratch"))
    spy = ActingSpy(module)
    guide_before = snapshot(module.guide)
    fit_module(module, tmp_path)
    assert all(torch.equal(v, guide_before[k]) for k, v in module.guide.state_dict().items())
    assert len(spy.calls) == warmup + 30
    start = None
    for env_step, episode_step, who in spy.calls:
        if episode_step == 0:
            start = env_step
        online_start = start - warmup
        roll_in = float("inf") if online_start < 0 else {0: 6, 1: 3, 2: 0}[online_start // 10]
        assert who == ("guide" if episode_step < roll_in else "learner"), (env_step, episode_step)
    online = [who for env_step, _, who in spy.calls if env_step >= warmup]
    assert "guide" in online and "learner" in online  # the run exercised both


def test_jsrl_learners_start_as_asked_and_evaluation_scores_the_learner(pretrained, tmp_path):
    """`learner: pretrained` is WSRL's agent with its Adam states; `scratch` is a fresh agent
    with fresh Adam states; either way the score at the switch is the learner's (the guide,
    the pretrained policy, scores differently)."""
    bundle = PretrainedBundle.load(pretrained)
    seen = {}

    class AtTrainStart(Callback):
        def on_train_start(self, trainer, module):
            seen[module.jsrl.learner] = {  # copies: the updates step them in place
                name: {index: {k: v.clone() for k, v in tensors.items()}
                       for index, tensors in optimizer.state_dict()["state"].items()}
                for name, optimizer in module.named_optimizers().items()}

    for learner in ("pretrained", "scratch"):
        module = FinetuneModule(pretrained, warmup_steps=5, online_steps=5, batch_size=32,
                                eval_interval=5, eval_episodes=1,
                                jsrl=JSRLConfig(guide_steps=3, learner=learner))
        reference = {k: v.clone() for k, v in module.agent.state_dict().items()}
        same = [torch.equal(v, bundle.agent_state[k]) for k, v in reference.items()
                if k in bundle.agent_state]
        assert same and all(same) == (learner == "pretrained") and any(same) == all(same)
        fit_module(module, tmp_path / learner, [AtTrainStart()])
        states = seen[learner]
        for name, pretrained_state in bundle.optimizer_states.items():
            if learner == "scratch":
                assert states[name] == {}, name
            else:
                for index, tensors in pretrained_state["state"].items():
                    for key, value in tensors.items():
                        assert torch.equal(states[name][index][key], value), (name, key)
        learner_actor = module.agent.actor
        learner_actor.load_state_dict({k[len("actor."):]: v for k, v in reference.items()
                                       if k.startswith("actor.")})
        scores = {who: evaluate(actor, module.env_name, 1, EVAL_SEED_OFFSET)["eval/return"]
                  for who, actor in (("learner", learner_actor), ("guide", module.guide.actor))}
        s0 = module.evaluations[0]
        assert s0["env_step"] == 5 and s0["eval/return"] == pytest.approx(scores["learner"],
                                                                          rel=1e-9)
        if learner == "scratch":
            assert scores["guide"] != pytest.approx(scores["learner"], rel=1e-3)


def test_a_fine_tuning_run_with_sac_resets_restarts_the_agent_and_its_optimisers(pretrained,
                                                                                 tmp_path):
    """Through the real loop: right after each reset the temperature is back at its initial
    value and every optimiser's state is a new Adam's; the pretrained values are gone."""
    module = FinetuneModule(pretrained, warmup_steps=20, online_steps=30, batch_size=32,
                            eval_interval=30, eval_episodes=1, log_interval=10,
                            resets=ResetConfig(preset="sac", at_switch=True, interval=10))
    initial = module.agent.config.initial_temperature
    assert module.agent.temperature().item() != pytest.approx(initial)  # pretrained
    pretrained_actor = snapshot(module.agent.actor)
    after_reset, reset = [], module.reset

    def reset_and_look():
        reset()
        states = [state for optimizer in module.named_optimizers().values()
                  for state in optimizer.state.values()]
        after_reset.append((module.agent.temperature().item(), states and all(
            float(s["step"]) == 0 and not s["exp_avg"].any() and not s["exp_avg_sq"].any()
            for s in states)))

    module.reset = reset_and_look
    fit_module(module, tmp_path)
    assert after_reset == [(pytest.approx(initial), True)] * 3  # online steps 0, 10, 20
    counts = metrics_of(tmp_path, "event/reset_parameters")
    assert {value for _, value in counts} == {sum(p.numel() for p in (
        *module.agent.actor.parameters(), *module.agent.critic.parameters(),
        *module.agent.temperature.parameters()))}
    assert not any(torch.equal(v, pretrained_actor[k])
                   for k, v in module.agent.actor.state_dict().items() if v.dim() > 1)


def test_layers_zero_resets_every_layer_and_too_many_layers_fail_before_the_run():
    agent, fresh, optimizers = trained_pair()
    reset_layers(agent, fresh, ResetConfig(networks=("actor",), layers=0), optimizers)
    for key, value in agent.actor.state_dict().items():
        assert torch.equal(value, fresh.actor.state_dict()[key]), key
    with pytest.raises(WsrlError, match="exceeds the 3 layers of the actor"):
        check_reset_layers(agent, ResetConfig(layers=4))


def test_the_study_variants_reach_the_module_through_the_cli(pretrained, tmp_path):
    """The fine-tuning options of configs/study/beyond.yaml, as the study passes them."""
    spec = load_spec(ROOT / "configs/study/beyond.yaml")
    options = [v for v in spec.variants if not v.own_pretraining]
    assert {v.name for v in options} >= {"reset_head", "reset_sac", "jsrl", "jsrl_wsrl",
                                          "shrink_perturb"}
    for variant in options:
        module = build_config_module(ROOT / "configs/smoke/finetune.yaml",
                                     ("--model.pretrained", pretrained,
                                      *cli_args(variant.overrides)), tmp_path)
        for item in variant.overrides:
            key, value = item.split("=", 1)
            option, field = key.split(".")[1:]
            assert str(getattr(getattr(module, option), field)).lower() == value, item
        assert module.resets.enabled or module.jsrl.enabled
    resets = {name: build_config_module(ROOT / "configs/smoke/finetune.yaml", (
        "--model.pretrained", pretrained, *cli_args(spec_variant(spec, name).overrides)),
        tmp_path).resets for name in ("reset_head", "reset_sac")}
    assert (resets["reset_head"].layers, resets["reset_head"].temperature) == (1, False)
    assert (resets["reset_sac"].layers, resets["reset_sac"].temperature) == (0, True)


def cli_args(overrides: tuple[str, ...]) -> list[str]:
    return [part if i % 2 else f"--{part}"
            for item in overrides for i, part in enumerate(item.split("=", 1))]


def spec_variant(spec, name: str):
    return next(v for v in spec.variants if v.name == name)


@pytest.mark.parametrize("study", ["beyond", "chunking"])
def test_the_chunked_arms_pretrain_with_the_rules_their_names_say(study, hopper_dataset,
                                                                  tmp_path):
    """qc_rlpd gets Q-chunking's rules by default, chunked_sac the plain chunked SAC's, as the
    study's pretraining builds them; and the spec plans (per-seed pretraining for chunking)."""
    spec = load_spec(ROOT / f"configs/study/{study}.yaml")
    pretrainings, finetunes = plan(dataclasses.replace(sweep_of(spec, "stub"), dataset="stub"))
    rules = {}
    for name in ("qc_rlpd", "chunked_sac"):
        overrides = [item.removeprefix("pretrain.")
                     for item in spec_variant(spec, name).own_pretraining]
        module = build_config_module(ROOT / "configs/smoke/pretrain.yaml",
                                     ("--model.dataset", hopper_dataset, *cli_args(overrides)),
                                     tmp_path)
        config = module.agent.config
        rules[name] = (config.action_chunk, config.q_agg, config.bc_alpha,
                       config.terminal_windows, module.agent.target_entropy)
    act_dim = 3  # Hopper's (the study's PointMaze has 2: -5 and -10 there)
    assert rules == {"qc_rlpd": (5, "mean", 0.01, "drop", -5 * act_dim / 2),
                     "chunked_sac": (5, "min", 0.0, "pad", -10.0)}
    if study == "chunking":
        assert not spec.shared_pretraining and len(spec.seeds) == 5
        assert len(pretrainings) == 3 * 5 and len(finetunes) == 3 * 5
        assert {cell.variant for cell in finetunes} == {"wsrl", "qc_rlpd", "chunked_sac"}
        assert all("16000" in cell.args for cell in pretrainings)
