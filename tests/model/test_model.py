"""MorphogeneticModel: chaining, slot addressing, accounting, groups, reports, fused forward."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from esper.contracts.alpha import AlphaAlgorithm
from esper.contracts.stages import SeedStage
from esper.hosts import CNNHost, CNNHostConfig, GPTHost, GPTHostConfig
from esper.model import MorphogeneticModel, ParamCounts, SlotReport
from esper.seeds import GateConfig, LifecycleError

FAST = GateConfig(permissive=True, g2_min_epochs=0)


def cnn_host(widths: tuple[int, ...] = (8, 16, 8)) -> CNNHost:
    torch.manual_seed(0)
    return CNNHost(CNNHostConfig(in_channels=1, num_classes=4, widths=list(widths), spatial_dims=1))


def gpt_host(tie: bool = True) -> GPTHost:
    torch.manual_seed(0)
    cfg = GPTHostConfig(
        vocab_size=17, block_size=8, d_model=16, n_heads=2, n_layers=2, layers_per_segment=1, tie_weights=tie
    )
    return GPTHost(cfg)


def cnn_input() -> Tensor:
    return torch.randn(4, 1, 16, generator=torch.Generator().manual_seed(5))


def perturb(model: MorphogeneticModel, slot_id: str) -> None:
    g = torch.Generator().manual_seed(9)
    with torch.no_grad():
        for p in model.slot(slot_id).seed_parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.3)


def to_stage(model: MorphogeneticModel, slot_id: str, stage: SeedStage, **germinate: object) -> None:
    model.germinate(slot_id, germinate.pop("blueprint", "conv_light"), blend_steps=0, **germinate)  # type: ignore[arg-type]
    order = [SeedStage.GERMINATED, SeedStage.TRAINING, SeedStage.BLENDING, SeedStage.HOLDING]
    for _ in range(order.index(stage)):
        assert model.advance(slot_id).passed
    assert model.slot(slot_id).stage == stage


# ------------------------------------------------------------ construction


def test_slots_follow_the_host_in_row_major_order() -> None:
    model = MorphogeneticModel(cnn_host())
    assert model.slot_ids() == ["r0c0", "r0c1", "r0c2"]
    assert [s.shape.width for s in model.slots()] == [8, 16, 8]


def test_a_subset_of_slots() -> None:
    host = cnn_host()
    model = MorphogeneticModel(host, slots=["r0c2", "r0c0"])
    assert model.slot_ids() == ["r0c0", "r0c2"]
    with pytest.raises(LifecycleError, match=r"unknown slot 'r0c1'.*\['r0c0', 'r0c2'\]"):
        model.germinate("r0c1", "noop")
    x = cnn_input()
    model.eval()
    assert torch.equal(model(x), host(x))


@pytest.mark.parametrize(
    ("slots", "error", "fragment"),
    [
        (["r0c5"], ValueError, "r0c5"),
        (["r0c0", "r0c0"], ValueError, "unique"),
    ],
)
def test_bad_slot_lists_raise(slots: list[str], error: type[Exception], fragment: str) -> None:
    with pytest.raises(error, match=fragment):
        MorphogeneticModel(cnn_host(), slots=slots)


def test_non_host_raises() -> None:
    with pytest.raises(TypeError, match="HostProtocol"):
        MorphogeneticModel(nn.Linear(3, 3))


def test_dormant_model_is_the_bare_host() -> None:
    host = cnn_host()
    model = MorphogeneticModel(host)
    x = cnn_input()
    model.eval()
    assert torch.equal(model(x), host(x))
    model.train()
    assert torch.equal(model(x), host(x))


# ------------------------------------------------------ slot addressing


@pytest.mark.parametrize(
    "action",
    [
        lambda m: m.germinate("r9c9", "noop"),
        lambda m: m.advance("r9c9"),
        lambda m: m.fossilize("r9c9"),
        lambda m: m.prune("r9c9", "x"),
        lambda m: m.set_alpha_target("r9c9", 1.0, steps=0),
        lambda m: m.slot("r9c9"),
        lambda m: m.fused_forward(cnn_input(), [{"r9c9": 0.0}]),
    ],
)
def test_unknown_slot_errors_name_the_slot(action) -> None:  # type: ignore[no-untyped-def]
    model = MorphogeneticModel(cnn_host()).eval()
    with pytest.raises(LifecycleError, match=r"unknown slot 'r9c9'; slots are \['r0c0', 'r0c1', 'r0c2'\]"):
        action(model)


def test_germinate_on_a_busy_slot_is_refused() -> None:
    model = MorphogeneticModel(cnn_host(), gates=FAST)
    to_stage(model, "r0c1", SeedStage.TRAINING)
    seed = model.slot("r0c1").seed
    counts = model.param_counts()
    with pytest.raises(LifecycleError, match="r0c1: cannot germinate: stage is TRAINING"):
        model.germinate("r0c1", "conv_heavy")
    assert model.slot("r0c1").seed is seed and model.slot("r0c1").state.blueprint == "conv_light"  # type: ignore[union-attr]
    assert model.param_counts() == counts


def test_lifecycle_through_the_model() -> None:
    model = MorphogeneticModel(cnn_host(), gates=FAST)
    to_stage(model, "r0c0", SeedStage.HOLDING)
    model.set_alpha_target("r0c0", 0.5, steps=2)
    assert model.slot("r0c0").stage == SeedStage.BLENDING
    model.step_epoch()
    assert [s.tick for s in model.slots()] == [1, 1, 1]
    model.prune("r0c0", "x", steps=3)
    assert model.slot("r0c0").pending_prune_reason == "x"
    to_stage(model, "r0c2", SeedStage.HOLDING)
    model.slot("r0c2").record_contribution(1.0)
    assert model.fossilize("r0c2").passed
    assert model.active_seed_slots() == ["r0c0"]


# -------------------------------------------------------------- accounting


def test_param_counts_cnn() -> None:
    host = cnn_host()
    model = MorphogeneticModel(host, gates=FAST)
    host_total = sum(p.numel() for p in host.parameters())
    assert model.param_counts() == ParamCounts(host_total, 0, host_total, {"r0c0": 0, "r0c1": 0, "r0c2": 0})
    model.germinate("r0c0", "conv_light")
    model.germinate("r0c1", "bottleneck", alpha_algorithm=AlphaAlgorithm.GATE)
    counts = model.param_counts()
    per_slot = {sid: model.slot(sid).seed_param_count() for sid in model.slot_ids()}
    assert counts.per_slot == per_slot and per_slot["r0c0"] > 0 and per_slot["r0c1"] > 0
    assert counts.host == host_total
    assert counts.seeds == per_slot["r0c0"] + per_slot["r0c1"]
    assert counts.total == sum(p.numel() for p in model.parameters())
    model.prune("r0c0", "x")
    assert model.param_counts().per_slot["r0c0"] == 0


def test_tied_weights_count_once() -> None:
    tied, untied = gpt_host(tie=True), gpt_host(tie=False)
    assert tied.lm_head.weight is tied.token_embedding.weight
    every_use = sum(p.numel() for _, p in tied.named_parameters(remove_duplicate=False))
    shared = tied.token_embedding.weight.numel()
    assert shared == 17 * 16
    counts = MorphogeneticModel(tied).param_counts()
    assert counts.host == every_use - shared
    assert MorphogeneticModel(untied).param_counts().host == counts.host + shared
    assert len(MorphogeneticModel(tied).host_parameters()) == len(list(tied.parameters()))


def test_parameter_groups_partition_the_model() -> None:
    model = MorphogeneticModel(gpt_host(), gates=FAST)
    model.germinate("r0c0", "lora", alpha_algorithm=AlphaAlgorithm.GATE)
    model.germinate("r0c1", "noop")
    groups = model.seed_parameter_groups()
    assert list(groups) == ["r0c0", "r0c1"]
    assert groups["r0c1"] == []
    slot = model.slot("r0c0")
    expected = {id(p) for p in slot.seed.parameters()} | {id(p) for p in slot.blend_gate.parameters()}  # type: ignore[union-attr]
    assert {id(p) for p in groups["r0c0"]} == expected
    host_ids = {id(p) for p in model.host_parameters()}
    seed_ids = {id(p) for group in groups.values() for p in group}
    assert not host_ids & seed_ids
    assert host_ids | seed_ids == {id(p) for p in model.parameters()}


def test_reports() -> None:
    model = MorphogeneticModel(cnn_host(), gates=FAST)
    to_stage(model, "r0c1", SeedStage.BLENDING, blueprint="attention", alpha_algorithm=AlphaAlgorithm.GATE)
    model.slot("r0c1").record_contribution(0.75)
    model.step_epoch()
    reports = model.reports()
    assert list(reports) == ["r0c0", "r0c1", "r0c2"]
    assert reports["r0c0"] == SlotReport("r0c0", "DORMANT", None, 0.0, None, None, 0, 0)
    assert reports["r0c1"] == SlotReport(
        "r0c1", "BLENDING", "attention", 1.0, "GATE", 0.75, 1, model.slot("r0c1").seed_param_count()
    )


def test_measure_gradients_records_the_ratio() -> None:
    model = MorphogeneticModel(cnn_host(), gates=FAST)
    to_stage(model, "r0c1", SeedStage.TRAINING)
    perturb(model, "r0c1")
    nn.functional.cross_entropy(model(cnn_input()), torch.tensor([0, 1, 2, 3])).backward()
    model.measure_gradients()
    slot = model.slot("r0c1")
    host_norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.host.parameters()]))
    seed_norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in slot.seed.parameters()]))  # type: ignore[union-attr]
    metrics = slot.state.metrics  # type: ignore[union-attr]
    assert metrics.seed_gradient_norm == pytest.approx(float(seed_norm), rel=1e-5)
    assert metrics.gradient_ratio == pytest.approx(float(seed_norm / host_norm), rel=1e-5)
    assert model.slot("r0c0").state is None


# ----------------------------------------------------------- fused forward


def blended_model() -> MorphogeneticModel:
    model = MorphogeneticModel(cnn_host(), gates=FAST)
    to_stage(model, "r0c0", SeedStage.HOLDING)
    to_stage(model, "r0c1", SeedStage.BLENDING, alpha_algorithm=AlphaAlgorithm.GATE)
    model.set_alpha_target("r0c1", 0.7, steps=0)
    perturb(model, "r0c0")
    perturb(model, "r0c1")
    return model.eval()


def test_fused_forward_matches_separate_forwards() -> None:
    model = blended_model()
    x = cnn_input()
    fused = model.fused_forward(x, [{}, {"r0c0": 0.0}, {"r0c0": 0.0, "r0c1": 0.0}, {"r0c1": 0.3}])
    assert fused.shape == (4, 4, 4)
    plain = model(x)
    with model.slot("r0c0").force_alpha(0.0):
        solo = model(x)
        with model.slot("r0c1").force_alpha(0.0):
            both = model(x)
    with model.slot("r0c1").force_alpha(0.3):
        partial = model(x)
    for got, want in zip(fused, [plain, solo, both, partial], strict=True):
        assert torch.allclose(got, want, atol=1e-6)
    assert not torch.allclose(plain, solo, atol=1e-4)  # the settings really differ
    assert not torch.allclose(plain, partial, atol=1e-4)


def test_fused_forward_all_off_is_the_bare_host() -> None:
    model = blended_model()
    x = cnn_input()
    fused = model.fused_forward(x, [{"r0c0": 0.0, "r0c1": 0.0}])
    assert torch.allclose(fused[0], model.host(x), atol=1e-6)


def test_fused_forward_restores_alphas() -> None:
    model = blended_model()
    x = cnn_input()
    before = [s.alpha.to_dict() for s in model.slots()]
    out = model(x)
    model.fused_forward(x, [{"r0c0": 0.0}, {"r0c1": 0.0}])
    assert [s.alpha.to_dict() for s in model.slots()] == before
    assert not any(s.alpha.forced for s in model.slots())
    assert torch.equal(model(x), out)


def test_fused_forward_refuses_in_training_mode() -> None:
    model = blended_model().train()
    with pytest.raises(RuntimeError, match="eval"):
        model.fused_forward(cnn_input(), [{}, {"r0c0": 0.0}])


def test_fused_forward_needs_settings() -> None:
    with pytest.raises(ValueError, match="at least one"):
        blended_model().fused_forward(cnn_input(), [])


def test_fused_forward_unwinds_on_a_refused_slot() -> None:
    model = MorphogeneticModel(cnn_host(), gates=FAST)
    to_stage(model, "r0c0", SeedStage.HOLDING)
    model.germinate("r0c2", "noop")  # GERMINATED: not in forward, cannot be forced
    model.eval()
    with pytest.raises(LifecycleError, match="r0c2"):
        model.fused_forward(cnn_input(), [{"r0c0": 0.0, "r0c2": 0.0}])
    assert not model.slot("r0c0").alpha.forced


def test_fused_forward_on_tokens() -> None:
    model = MorphogeneticModel(gpt_host(), gates=FAST)
    to_stage(model, "r0c0", SeedStage.HOLDING, blueprint="mlp_small")
    perturb(model, "r0c0")
    model.eval()
    x = torch.randint(0, 17, (3, 8), generator=torch.Generator().manual_seed(2))
    fused = model.fused_forward(x, [{}, {"r0c0": 0.0}])
    assert fused.shape == (2, 3, 8, 17)
    assert torch.allclose(fused[0], model(x), atol=1e-5)
    assert torch.allclose(fused[1], model.host(x), atol=1e-5)
