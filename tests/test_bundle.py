"""The pretraining → fine-tuning contract: `PretrainedBundle` round-trips, shares its tensors
with the Lightning checkpoint it lives in, reads pre-bundle checkpoints, and rejects files it
cannot read with one line."""

import dataclasses

import pytest
import torch

from wsrl_wm.errors import WsrlError
from wsrl_wm.lightning.bundle import BUNDLE_KEY, FORMAT_VERSION, PretrainedBundle


def assert_same(a, b, path="bundle"):
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), path
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for key in a:
            assert_same(a[key], b[key], f"{path}.{key}")
    else:
        assert a == b, path


def test_round_trip_keeps_every_field(pretrained, tmp_path):
    bundle = PretrainedBundle.load(pretrained)
    assert bundle.env == "Hopper-v5" and bundle.world_model_config is not None
    assert set(bundle.optimizer_states) == {"critic", "actor", "temperature"}
    bundle.save(tmp_path / "bundle.pt")
    again = PretrainedBundle.load(tmp_path / "bundle.pt")
    for field in dataclasses.fields(PretrainedBundle):
        assert_same(getattr(bundle, field.name), getattr(again, field.name), field.name)
    assert not list(tmp_path.glob(".*.tmp"))  # written through a temporary sibling


def test_the_checkpoint_stores_the_agent_once(pretrained):
    """The bundle's tensors are Lightning's own entries, so the checkpoint does not double."""
    ckpt = torch.load(pretrained, weights_only=False)
    bundle = PretrainedBundle.from_dict(ckpt[BUNDLE_KEY])
    for key, value in bundle.agent_state.items():
        lightning = ckpt["state_dict"][f"agent.{key}"]
        assert value.untyped_storage().data_ptr() == lightning.untyped_storage().data_ptr(), key
    critic = ckpt["optimizer_states"][0]["state"][0]["exp_avg"]
    assert bundle.optimizer_states["critic"]["state"][0]["exp_avg"] is critic


def test_a_pre_bundle_checkpoint_reads_as_the_same_bundle(pretrained, tmp_path):
    """Checkpoints pretrained before the bundle (its fields spread over the checkpoint) keep
    working: hours of pretraining are not thrown away by a format change."""
    bundle = PretrainedBundle.load(pretrained)
    old = torch.load(pretrained, weights_only=False)
    del old[BUNDLE_KEY]
    old.update(optimizer_names=list(bundle.optimizer_states), env=bundle.env,
               agent_config=dataclasses.asdict(bundle.agent_config), probe=bundle.probe,
               world_model_config=dataclasses.asdict(bundle.world_model_config))
    torch.save(old, tmp_path / "old.ckpt")
    legacy = PretrainedBundle.load(tmp_path / "old.ckpt")
    for field in dataclasses.fields(PretrainedBundle):
        assert_same(getattr(bundle, field.name), getattr(legacy, field.name), field.name)


def saved(tmp_path, content) -> str:
    path = tmp_path / "file.ckpt"
    torch.save(content, path)
    return str(path)


@pytest.mark.parametrize(("edit", "message"), [
    (lambda r: r.update(format_version=FORMAT_VERSION + 1), "bundle format 2, this code reads"),
    (lambda r: r.update(format_version=None), "bundle format None"),
    (lambda r: r["agent_config"].update(renamed_option=1), "incompatible pretrained bundle"),
    (lambda r: r.pop("probe"), "incompatible pretrained bundle"),
])
def test_an_incompatible_bundle_is_one_line(pretrained, tmp_path, edit, message):
    record = PretrainedBundle.load(pretrained).to_dict()
    edit(record)
    with pytest.raises(WsrlError, match=message) as error:
        PretrainedBundle.load(saved(tmp_path, {BUNDLE_KEY: record}))
    assert "\n" not in str(error.value) and "pretrain again" in str(error.value)


def test_files_that_are_no_pretraining_checkpoint_are_rejected(tmp_path):
    with pytest.raises(WsrlError, match="not found"):
        PretrainedBundle.load(tmp_path / "missing.ckpt")
    with pytest.raises(WsrlError, match="not a wsrl-wm pretraining checkpoint"):
        PretrainedBundle.load(saved(tmp_path, {"state_dict": {}}))
    (tmp_path / "text.ckpt").write_text("not a checkpoint")
    with pytest.raises(WsrlError, match="cannot load checkpoint"):
        PretrainedBundle.load(tmp_path / "text.ckpt")
