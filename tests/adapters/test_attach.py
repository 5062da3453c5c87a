"""esper.attach on a ResNet-18-shaped CNN and a Hugging Face GPT-2: identity, lifecycle, errors, fused forward."""

from __future__ import annotations

from contextlib import ExitStack

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from esper.adapters import AttachConfig, AttachedModel, attach, primary_tensor
from esper.contracts.stages import SeedStage
from esper.seeds.gates import GateConfig
from esper.training.counterfactual import measure

from .models import gpt2, images, resnet, tokens

FAST = GateConfig(permissive=True, g2_min_epochs=0)
RESNET_SLOTS = ["layer1", "layer2", "layer3", "layer4"]
GPT_SLOTS = ["transformer.h.0", "transformer.h.1"]


def attached_resnet(**kwargs: object) -> AttachedModel:
    return attach(resnet(), slots=RESNET_SLOTS, example_input=images(), gates=FAST, **kwargs)


def attached_gpt2() -> AttachedModel:
    return attach(gpt2(), slots=GPT_SLOTS, example_input=tokens(), gates=FAST)


# ------------------------------------------------------------------ probing
def test_probe_infers_cnn_and_transformer_layouts() -> None:
    cnn = attached_resnet()
    assert [cnn.slot(s).shape.width for s in cnn.slot_ids()] == [8, 16, 16, 32]
    assert {cnn.slot(s).shape.topology for s in cnn.slot_ids()} == {"cnn"}
    assert cnn.slot("r0c0").shape.spatial_dims == 2
    assert cnn.module_for("r0c2") == "layer3"
    lm = attached_gpt2()
    shape = lm.slot("r0c1").shape
    assert (shape.topology, shape.width, shape.n_heads) == ("transformer", 32, 2)


def test_a_mapping_chooses_the_slot_ids() -> None:
    model = attach(resnet(), slots={"r1c0": "layer4", "r0c0": "layer2"}, example_input=images())
    assert model.slot_ids() == ["r0c0", "r1c0"]
    assert model.module_for("r1c0") == "layer4"


def test_conv1d_outputs_are_cnn_and_overrides_win() -> None:
    net = nn.Sequential(nn.Conv1d(2, 6, 3, padding=1), nn.ReLU(), nn.Conv1d(6, 6, 3, padding=1))
    x = torch.randn(2, 2, 10)
    model = attach(net, slots=["0", "1"], example_input=x)
    for slot in ("r0c0", "r0c1"):  # "1" is a ReLU: the model's convs decide
        assert (model.slot(slot).shape.topology, model.slot(slot).shape.spatial_dims) == ("cnn", 1)
    seq = nn.Sequential(nn.Linear(6, 6))
    forced = attach(seq, slots=["0"], example_input=torch.randn(2, 5, 6), n_heads={"r0c0": 3})
    assert forced.slot("r0c0").shape.n_heads == 3


# ------------------------------------------------------------------ identity
@pytest.mark.parametrize("train_mode", [False, True])
def test_dormant_resnet_is_bitwise_the_original(train_mode: bool) -> None:
    plain, x = resnet(), images()
    plain.train(train_mode)
    want = plain(x)
    model = attached_resnet()
    model.train(train_mode)
    assert torch.equal(model(x), want)
    # Same parameters, not copies: the user's module is used in place.
    host = model.host
    assert all(a is b for a, b in zip(host.parameters(), model.host_parameters(), strict=True))


def test_dormant_gpt2_is_bitwise_the_original() -> None:
    x = tokens()
    want = gpt2()(x).logits
    model = attached_gpt2()
    out = model(x)
    assert torch.equal(out.logits, want)
    assert model.param_counts().seeds == 0
    assert model.param_counts().host == sum(p.numel() for p in {id(p): p for p in gpt2().parameters()}.values())


def test_tuple_outputs_keep_the_other_elements() -> None:
    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(8, 8)

        def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, str]:
            return self.lin(h), torch.arange(3), "kept"

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.block = Block()

        def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, str]:
            return self.block(h)

    net, x = Net(), torch.randn(2, 4, 8)
    model = attach(net, slots=["block"], example_input=x, gates=FAST)
    assert model.attach_config.slots["r0c0"].output_index == 0
    model.germinate("r0c0", "mlp_small")
    model.advance("r0c0")  # TRAINING: value unchanged (straight-through)
    model.advance("r0c0")  # BLENDING, alpha 0
    model.step_epoch()  # alpha ramps up: the seed now changes the hidden state
    hidden, extra, tag = model(x)
    assert torch.equal(extra, torch.arange(3)) and tag == "kept"
    assert hidden.shape == (2, 4, 8)


# ------------------------------------------------------------------ errors
def test_unknown_module_lists_close_matches() -> None:
    with pytest.raises(ValueError, match=r"no submodule named 'layr1'.*close matches: layer1"):
        attach(resnet(), slots=["layr1"], example_input=images())


def test_a_module_without_a_supported_tensor_says_what_it_found() -> None:
    with pytest.raises(ValueError, match=r"'fc' outputs tensor of shape \(4, 10\).*\(B, C, L\)"):
        attach(resnet(), slots=["fc"], example_input=images())


def test_a_module_that_never_runs_is_refused() -> None:
    net = resnet()
    net.spare = nn.Conv2d(3, 3, 1)
    with pytest.raises(ValueError, match="'spare' ran 0 times"):
        attach(net, slots=["spare"], example_input=images())


def test_attach_needs_an_example_input_and_refuses_twice() -> None:
    with pytest.raises(ValueError, match="example_input"):
        attach(resnet(), slots=["layer1"])
    model = attached_resnet()
    with pytest.raises(ValueError, match="already has esper slots"):
        attach(model.host, slots=["layer2"], example_input=images())
    with pytest.raises(ValueError, match="each submodule takes one slot"):
        AttachConfig.model_validate(
            {"slots": {s: model.attach_config.slots["r0c0"].model_dump() for s in ("r0c0", "r0c1")}}
        )


def test_detach_restores_the_plain_module() -> None:
    model = attached_resnet()
    model.germinate("r0c0", "conv_light")
    model.advance("r0c0")
    model.advance("r0c0")
    model.step_epoch()
    x = images()
    plain = model.detach()
    plain.eval()
    reference = resnet().eval()
    assert torch.equal(plain(x), reference(x))


# ------------------------------------------------------------------ lifecycle
def _batch(which: str, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    if which == "resnet":
        return images(8, seed=10 + step), torch.arange(8) % 10
    x = tokens(4, seed=10 + step)
    return x, x.roll(-1, dims=1)  # next-token targets


def _train_steps(model: AttachedModel, which: str, steps: int, optimizer: torch.optim.Optimizer) -> None:
    model.train()
    for step in range(steps):
        x, y = _batch(which, step)
        optimizer.zero_grad()
        with model.recording_proximal() as proximal:
            logits = primary_tensor(model(x))
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        penalty = proximal.penalty()
        (loss if penalty is None else loss + penalty).backward()
        model.measure_gradients()
        optimizer.step()


LIFECYCLE = {
    "resnet": (attached_resnet, "r0c1", "conv_light", "norm"),
    "gpt2": (attached_gpt2, "r0c1", "mlp_small", "lora"),
}


@pytest.mark.parametrize("which", sorted(LIFECYCLE))
def test_full_lifecycle_on_one_slot_with_training(which: str) -> None:
    build, slot_id, blueprint, other = LIFECYCLE[which]
    model = build()
    model.germinate(slot_id, blueprint)
    seed_params = model.seed_parameter_groups()[slot_id]
    before = [p.detach().clone() for p in seed_params]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    for target in (SeedStage.TRAINING, SeedStage.BLENDING):
        assert model.advance(slot_id).passed
        assert model.slot(slot_id).stage == target
        _train_steps(model, which, 2, optimizer)
        model.step_epoch()
    assert any(not torch.equal(a, b) for a, b in zip(before, seed_params, strict=True)), "the seed learned"
    for _ in range(5):
        model.step_epoch()
    assert model.advance(slot_id).passed and model.slot(slot_id).stage == SeedStage.HOLDING
    _train_steps(model, which, 1, optimizer)
    x, y = _batch(which, 99)
    counterfactuals = measure(model, torch.utils.data.TensorDataset(x, y), 2, torch.device("cpu"), project=False)
    assert set(counterfactuals.contributions) == {slot_id}
    # A random tiny model's measured contribution may be <= 0; G5 (fossilize) needs > 0.
    model.slot(slot_id).record_contribution(1.0)
    assert model.fossilize(slot_id).passed
    assert model.active_seed_slots() == []
    model.germinate("r0c0", other)
    model.prune("r0c0", "test")
    assert model.slot("r0c0").stage == SeedStage.PRUNED
    assert model.param_counts().per_slot["r0c0"] == 0 and model.param_counts().per_slot[slot_id] > 0


def _blended(model: AttachedModel, slot: str, blueprint: str) -> None:
    model.germinate(slot, blueprint)
    model.advance(slot)
    model.advance(slot)
    for _ in range(2):
        model.step_epoch()
    with torch.no_grad():
        for p in model.slot(slot).seed_parameters():
            p.add_(0.05 * torch.randn_like(p))  # a seed that actually changes the output


@pytest.mark.parametrize("which", ["resnet", "gpt2"])
def test_fused_forward_matches_separate_forwards(which: str) -> None:
    if which == "resnet":
        model, x, slots = attached_resnet(), images(), ("r0c1", "r0c3")
        blueprints = ("conv_light", "conv_light")
    else:
        model, x, slots = attached_gpt2(), tokens(), ("r0c0", "r0c1")
        blueprints = ("mlp_small", "lora")
    for slot, blueprint in zip(slots, blueprints, strict=True):
        _blended(model, slot, blueprint)
    model.eval()
    settings = [{}, {slots[0]: 0.0}, {slots[1]: 1.0}, {slots[0]: 0.0, slots[1]: 0.0}]
    fused = model.fused_forward(x, settings)
    with torch.no_grad():
        for k, setting in enumerate(settings):
            with ExitStack() as stack:
                for slot, alpha in setting.items():
                    stack.enter_context(model.slot(slot).force_alpha(alpha))
                single = primary_tensor(model(x))
            torch.testing.assert_close(fused[k], single, rtol=1e-5, atol=1e-5)
    assert not torch.equal(fused[0], fused[3]), "the seeds change the output"
