"""`PretrainedBundle`: everything fine-tuning takes from pretraining, as one versioned record.

Pretraining writes it into its Lightning checkpoint under `BUNDLE_KEY` (the agent's and the
optimisers' tensors are the ones Lightning's own `state_dict` / `optimizer_states` entries hold,
and `torch.save` writes a shared tensor once, so the checkpoint does not grow); fine-tuning reads
it from there. `save` writes a file holding the bundle alone, which loads the same way.
"""

import dataclasses
from pathlib import Path

import torch

from wsrl_wm.agents import CQLConfig
from wsrl_wm.atomic import atomic_path
from wsrl_wm.errors import WsrlError
from wsrl_wm.world_model import WorldModelConfig

BUNDLE_KEY = "wsrl_pretrained"
FORMAT_VERSION = 1


@dataclasses.dataclass
class PretrainedBundle:
    env: str
    dataset: str
    agent_config: CQLConfig
    agent_state: dict[str, torch.Tensor]  # the agent's state_dict
    optimizer_states: dict[str, dict]  # optimiser name (critic, actor, ...) → its state_dict
    probe: dict[str, torch.Tensor]  # offline rows kept for diagnostics only, never trained on
    reward_scale: float = 1.0
    reward_bias: float = 0.0
    sparse_negative_reward: float | None = None
    world_model_config: WorldModelConfig | None = None
    world_model_state: dict[str, torch.Tensor] | None = None
    # With action chunks (`agent_config.action_chunk` > 1), the probe rows are chunks; these are
    # their first env steps, on which the one-step world model is measured. None: the probe.
    step_probe: dict[str, torch.Tensor] | None = None

    def to_dict(self) -> dict:
        """Plain types only (configs as dicts), so a later code version reads it by name."""
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        fields["agent_config"] = dataclasses.asdict(self.agent_config)
        if self.world_model_config is not None:
            fields["world_model_config"] = dataclasses.asdict(self.world_model_config)
        return {"format_version": FORMAT_VERSION, **fields}

    @classmethod
    def from_dict(cls, record: dict, source: str = "bundle") -> "PretrainedBundle":
        version = record.get("format_version")
        if version != FORMAT_VERSION:
            raise WsrlError(f"{source}: pretrained bundle format {version}, this code reads "
                            f"format {FORMAT_VERSION}; pretrain again with this version")
        fields = {k: v for k, v in record.items() if k != "format_version"}
        try:
            fields["agent_config"] = CQLConfig(**fields["agent_config"])
            if fields.get("world_model_config") is not None:
                fields["world_model_config"] = WorldModelConfig(**fields["world_model_config"])
            return cls(**fields)
        except (KeyError, TypeError) as exc:
            raise WsrlError(f"{source}: incompatible pretrained bundle ({exc}); pretrain again "
                            "with this version") from None

    def save(self, path: str | Path) -> None:
        with atomic_path(path) as tmp:
            torch.save({BUNDLE_KEY: self.to_dict()}, tmp)

    @classmethod
    def load(cls, path: str | Path) -> "PretrainedBundle":
        """From a pretraining checkpoint or a file `save` wrote."""
        if not Path(path).is_file():
            raise WsrlError(f"pretrained checkpoint not found: {path}; run the pretrain config "
                            "first")
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as exc:
            raise WsrlError(f"{path}: cannot load checkpoint ({exc})") from None
        if not isinstance(ckpt, dict):
            raise WsrlError(f"{path}: not a wsrl-wm pretraining checkpoint")
        if BUNDLE_KEY in ckpt:
            return cls.from_dict(ckpt[BUNDLE_KEY], str(path))
        return cls.from_dict(_legacy_record(ckpt, str(path)), str(path))

    @property
    def model_probe(self) -> dict[str, torch.Tensor]:
        """The probe as env steps, for the world model."""
        return self.probe if self.step_probe is None else self.step_probe

    def agent_state_for(self, agent: torch.nn.Module) -> dict[str, torch.Tensor]:
        """The pretrained entries `agent` has (an online SAC lacks e.g. the CQL multiplier)."""
        wanted = agent.state_dict().keys()
        return {k: v for k, v in self.agent_state.items() if k in wanted}


def _legacy_record(ckpt: dict, source: str) -> dict:
    """A pretraining checkpoint from before the bundle (its keys spread over the checkpoint),
    as a format-1 record, so that existing pretrained agents stay usable."""
    legacy = ("state_dict", "optimizer_states", "optimizer_names", "env", "agent_config",
              "probe", "hyper_parameters")
    if any(key not in ckpt for key in legacy):
        raise WsrlError(f"{source}: not a wsrl-wm pretraining checkpoint (no {BUNDLE_KEY!r}); "
                        "pass the checkpoint the pretrain config wrote")
    hparams = ckpt["hyper_parameters"]
    has_model = ckpt.get("world_model_config") is not None
    return {
        "format_version": FORMAT_VERSION, "env": ckpt["env"], "dataset": hparams["dataset"],
        "agent_config": ckpt["agent_config"],
        "agent_state": _under(ckpt["state_dict"], "agent"),
        "optimizer_states": dict(zip(ckpt["optimizer_names"], ckpt["optimizer_states"],
                                     strict=True)),
        "probe": ckpt["probe"], "reward_scale": hparams["reward_scale"],
        "reward_bias": hparams["reward_bias"],
        "sparse_negative_reward": hparams["sparse_negative_reward"],
        "world_model_config": ckpt.get("world_model_config"),
        "world_model_state": _under(ckpt["state_dict"], "world_model") if has_model else None,
    }


def _under(state_dict: dict, prefix: str) -> dict:
    """The entries of a module's state_dict under `prefix.`, with the prefix removed."""
    return {k.removeprefix(prefix + "."): v for k, v in state_dict.items()
            if k.startswith(prefix + ".")}
