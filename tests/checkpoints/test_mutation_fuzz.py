"""Mutate one field of a real checkpoint: the load either gives back exactly what was stored, or
raises a CheckpointError naming the mutated path, never any other exception.

The checkpoints are real: a model with seeds at several stages (one GATE seed
mid-BLENDING, one FOSSILIZED, one EMBARGOED), a run checkpoint from a short
real run with a seed and its optimizer, and a PPO agent. Each mutated
payload is written with torch.save and read back through the real loaders.
A load that succeeds must give back exactly the stored state when saved
again (so nothing was coerced, defaulted or dropped); a refusal must name
the mutated path (or, for a value whose problem is its relation to another
field, name that field's record).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.checkpoints.mutation import Path as NodePath
from tests.checkpoints.mutation import mutate, nodes, render, same

from esper.checkpoints import CheckpointError, load_model, save_model
from esper.checkpoints.model_io import model_payload
from esper.contracts.actions import ActionSpace, Op
from esper.contracts.alpha import AlphaAlgorithm
from esper.contracts.committed_events import CommittedEvents
from esper.control.decision import Decision
from esper.control.registry import build_controller
from esper.growth_rl.agent_io import AgentMeta, load_agent, optimizer_to_primitives, save_agent
from esper.growth_rl.observations import ObservationLayout
from esper.hosts import build_host
from esper.model import MorphogeneticModel
from esper.rl.normalizers import RewardNormalizer, RunningMeanStd
from esper.rl.policy import RecurrentActorCritic
from esper.rl.ppo import PPOConfig, PPOTrainer
from esper.seeds import GateConfig
from esper.training.config import TrainConfig
from esper.training.growth_run import GrowthRun
from esper.training.run_io import load_run, save_run

HEADER = frozenset({"format", "schema_version", "esper_version", "torch_version", "created_at"})
FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)


def staged_model() -> MorphogeneticModel:
    """r0c0: GATE seed mid-BLENDING; r0c1: FOSSILIZED; r0c2: EMBARGOED."""
    torch.manual_seed(0)
    host = build_host("cnn", {"in_channels": 1, "num_classes": 3, "widths": [4, 4, 4], "spatial_dims": 1})
    model = MorphogeneticModel(host, gates=GateConfig(permissive=True, g2_min_epochs=0))
    for slot in model.slots():
        slot.record_accuracy(0.4)
    model.germinate("r0c1", "conv_light", blend_steps=0)
    for _ in range(3):
        assert model.advance("r0c1").passed
    model.slot("r0c1").record_contribution(2.0)
    assert model.fossilize("r0c1").passed
    model.germinate("r0c2", "norm", alpha_algorithm=AlphaAlgorithm.MULTIPLY)
    model.advance("r0c2")
    model.prune("r0c2", "test")
    model.step_epoch()
    model.germinate("r0c0", "conv_light", alpha_algorithm=AlphaAlgorithm.GATE, blend_steps=5, alpha_target=0.7)
    assert model.advance("r0c0").passed and model.advance("r0c0").passed
    model.step_epoch()
    model.step_epoch()
    model.slot("r0c0").record_contribution(0.5)
    with torch.no_grad():
        for params in model.seed_parameter_groups().values():
            for param in params:
                param.add_(0.05)
    return model


def write(payload: dict[str, Any], path: Path) -> None:
    """The raw save path: the payload as it is, no checks."""
    torch.save(payload, path)


def check_refusal(error: CheckpointError, path: NodePath, what: str, related: tuple[str, ...] = ()) -> None:
    """The error names the mutated path, the list holding it (a list is checked as a whole), or a related field."""
    text = str(error)
    named = render(path)
    while path and isinstance(path[-1], int):
        path = path[:-1]
    assert named in text or render(path) in text or any(part in text for part in related), (
        f"{what} at {named}: the error names neither it nor {related}:\n{text}"
    )


def payload_paths(payload: dict[str, Any], skip: frozenset[str] = frozenset()) -> list[NodePath]:
    return [path for path in nodes(payload, skip=skip) if path[0] not in HEADER]


# --------------------------------------------------------------------------- model
@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], torch.Tensor, Path]:
    directory = tmp_path_factory.mktemp("model")
    model = staged_model()
    source = directory / "model.pt"
    save_model(model, source)
    payload = torch.load(source, weights_only=True)
    with torch.no_grad():
        output = model.eval()(torch.linspace(-1, 1, 2 * 8).reshape(2, 1, 8))
    return payload, output, directory


def model_related(path: NodePath) -> tuple[str, ...]:
    # A slot's fields are checked against each other and against its tensors in the state_dict.
    if not path:
        return ()
    if path[0] == "seed_slots" and len(path) > 1:
        return (f"seed_slots.{path[1]}",)
    if path[0] == "host":
        return ("host", "state_dict > host.")
    return ()


def test_the_unmutated_model_checkpoint_loads_and_behaves_identically(model_file: Any) -> None:
    payload, output, directory = model_file
    write(payload, directory / "same.pt")
    loaded = load_model(directory / "same.pt")
    assert same({k: v for k, v in payload.items() if k not in HEADER}, model_payload(loaded)) is None
    with torch.no_grad():
        assert torch.equal(loaded.eval()(torch.linspace(-1, 1, 16).reshape(2, 1, 8)), output)


@FUZZ
@given(data=st.data())
def test_a_mutated_model_checkpoint_loads_exactly_or_names_the_field(model_file: Any, data: st.DataObject) -> None:
    payload, _, directory = model_file
    path = data.draw(st.sampled_from(payload_paths(payload)), label="path")
    tree, path, what = mutate(payload, path, data.draw(st.integers(0, 63), label="mutation"))
    file = directory / "mutated.pt"
    write(tree, file)
    try:
        loaded = load_model(file)
    except CheckpointError as error:
        check_refusal(error, path, what, model_related(path))
        return
    stored = {k: v for k, v in tree.items() if k not in HEADER}
    differs = same(stored, model_payload(loaded))
    assert differs is None, f"{what} at {render(path)} loaded, but {differs} is not what was stored"


# ----------------------------------------------------------------------------- run
RUN_CONFIG = TrainConfig(task="mnist1d", epochs=4, max_batches_per_epoch=3, seed=1, controller="heuristic")


def controller_for(run: GrowthRun) -> Any:
    return build_controller(
        run.plan.controller,
        blueprints=run.blueprints,
        limits=run.limits,
        seed=run.plan.seed,
        heuristic=run.plan.heuristic,
    )


@pytest.fixture(scope="module")
def run_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Any, Path]:
    """Two epochs of a real run, a GATE seed germinated after the first (so it has an optimizer)."""
    directory = tmp_path_factory.mktemp("run")
    run = GrowthRun(RUN_CONFIG)
    controller = controller_for(run)
    controller.decide(run.train_epoch(), run.model)
    slot = run.model.slot_ids()[-1]
    decision = Decision(Op.GERMINATE, slot=slot, blueprint="norm", alpha_algorithm=AlphaAlgorithm.GATE, reason="t")
    assert run.apply(decision, "test").executed
    controller.decide(run.train_epoch(), run.model)
    assert run.optimizers.seeds and run.governor.snapshot
    source = directory / "checkpoint.pt"
    save_run(
        source,
        config=RUN_CONFIG.model_dump(mode="json"),
        model=run.model,
        run_state=run.state_dict(),
        controller=controller.state_dict(),
        wall_seconds=1.5,
        events=CommittedEvents(bytes=0, lines=0, sha256=hashlib.sha256().hexdigest()),
    )
    return torch.load(source, weights_only=True), run.splits, directory


def resume(file: Path, splits: Any) -> dict[str, Any]:
    """What the trainer does to resume, returning the resumed run's state as a checkpoint payload."""
    saved = load_run(file)
    config = TrainConfig.model_validate(saved.config)
    run = GrowthRun(config, model=saved.model, splits=splits)
    run.load_state_dict(saved.run_state)
    controller = controller_for(run)
    controller.load_state_dict(saved.controller)
    return {
        "config": config.model_dump(mode="json"),
        "model": model_payload(run.model),
        "run": run.state_dict(),
        "controller": controller.state_dict(),
        "wall_seconds": saved.wall_seconds,
        "events": None if saved.events is None else saved.events.model_dump(),
    }


def run_related(path: NodePath) -> tuple[str, ...]:
    """Fields whose problem may be reported at the field they must agree with."""
    related: list[str] = []
    if path[0] == "model":
        related += ["model > " + part for part in model_related(path[1:])]
        if len(path) > 2 and path[1] == "seed_slots":
            # A seed's optimizer and snapshot tensors follow its slot.
            related += [f"run > optimizers > seeds > {path[2]}", f"seed_slots.{path[2]}."]
    if path[0] == "run" and len(path) > 1:
        related.append(render(path[:2]))  # history lengths, governor counters: the section
        if path[1] in ("epoch", "history", "governor"):
            related += ["run > history", "run > epoch", "run > governor", "> tick"]
        if path[1] == "optimizers":
            related.append(render(path[:4]) if len(path) >= 4 else "run > optimizers")
    if path[0] == "config":
        related += [render(path[:2]), "run > ", "controller > "]  # limits the run state is checked against
    if path[0] == "controller":
        related.append("controller")
    return tuple(related)


def test_the_unmutated_run_checkpoint_resumes_identically(run_file: Any) -> None:
    payload, splits, directory = run_file
    write(payload, directory / "same.pt")
    state = resume(directory / "same.pt", splits)
    assert same({k: v for k, v in payload.items() if k not in HEADER}, state) is None


@FUZZ
@given(data=st.data())
def test_a_mutated_run_checkpoint_resumes_exactly_or_names_the_field(run_file: Any, data: st.DataObject) -> None:
    payload, splits, directory = run_file
    path = data.draw(st.sampled_from(payload_paths(payload)), label="path")
    tree, path, what = mutate(payload, path, data.draw(st.integers(0, 63), label="mutation"))
    file = directory / "mutated.pt"
    write(tree, file)
    try:
        state = resume(file, splits)
    except CheckpointError as error:
        check_refusal(error, path, what, run_related(path))
        return
    stored = {k: v for k, v in tree.items() if k not in HEADER}
    differs = same(stored, state)
    assert differs is None, f"{what} at {render(path)} loaded, but {differs} is not what was stored"


# --------------------------------------------------------------------------- agent
AGENT_SLOTS = ["r0c0", "r0c1"]
AGENT_BLUEPRINTS = ["norm", "conv_light", "attention"]


def trained_agent(path: Path) -> None:
    """A PPO agent whose optimizer and normalisers hold real state."""
    layout = ObservationLayout(tuple(AGENT_SLOTS), tuple(AGENT_BLUEPRINTS))
    torch.manual_seed(0)
    policy = RecurrentActorCritic(layout.dim, ActionSpace(2, 3), hidden=8, lstm_hidden=8, head_hidden=8)
    trainer = PPOTrainer(policy, PPOConfig(lr=1e-3), RunningMeanStd(layout.dim), RewardNormalizer(2, 0.995))
    trainer.obs_normalizer.update(torch.randn(4, layout.dim))  # type: ignore[union-attr]
    trainer.reward_normalizer.update(torch.tensor([1.0, -2.0]), torch.tensor([False, True]))  # type: ignore[union-attr]
    sum(p.pow(2).sum() for p in policy.parameters()).backward()  # type: ignore[union-attr]
    trainer.optimizer.step()
    trainer.updates = 3
    meta = AgentMeta(
        task="mnist1d-blind",
        blueprints=list(AGENT_BLUEPRINTS),
        slot_ids=list(AGENT_SLOTS),
        observation=layout.describe(),
        round=3,
        rng={"sampler": torch.Generator().manual_seed(5).get_state()},
        hyperparameters={"seed": 0, "envs": 2},
        history=[{"round": 0, "mean_return": 1.5}],
    )
    save_agent(path, trainer, meta)


def agent_state(file: Path) -> dict[str, Any]:
    """Load the agent and rebuild its trainer, returning what it would save."""
    loaded = load_agent(file)
    trainer = loaded.build_trainer()
    loaded.build_policy()
    loaded.build_obs_normalizer()
    state = trainer.state_dict()
    state["policy"] = dict(state["policy"])  # type: ignore[call-overload]
    state["optimizer"] = optimizer_to_primitives(state["optimizer"])  # type: ignore[arg-type]
    return {"trainer": state, "meta": loaded.meta.to_dict()}


def agent_related(path: NodePath) -> tuple[str, ...]:
    # The architecture, meta sizes, weights and optimizer are checked against each other.
    if path[0] == "meta" and len(path) > 1 and path[1] in ("blueprints", "slot_ids", "observation", "action_space"):
        return ("meta > action_space", "trainer > architecture")
    if path[:2] in (("trainer", "architecture"), ("trainer", "config")):
        return ("trainer > architecture", "meta > ", "trainer > policy", "trainer > optimizer")
    if path[:2] == ("trainer", "reward_normalizer"):
        return ("trainer > reward_normalizer",)
    return ()


@pytest.fixture(scope="module")
def agent_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    directory = tmp_path_factory.mktemp("agent")
    trained_agent(directory / "agent.pt")
    return torch.load(directory / "agent.pt", weights_only=True), directory


def test_the_unmutated_agent_checkpoint_loads_identically(agent_file: Any) -> None:
    payload, directory = agent_file
    write(payload, directory / "same.pt")
    assert same({k: v for k, v in payload.items() if k not in HEADER}, agent_state(directory / "same.pt")) is None


@FUZZ
@given(data=st.data())
def test_a_mutated_agent_checkpoint_loads_exactly_or_names_the_field(agent_file: Any, data: st.DataObject) -> None:
    payload, directory = agent_file
    path = data.draw(st.sampled_from(payload_paths(payload)), label="path")
    tree, path, what = mutate(payload, path, data.draw(st.integers(0, 63), label="mutation"))
    file = directory / "mutated.pt"
    write(tree, file)
    try:
        state = agent_state(file)
    except CheckpointError as error:
        check_refusal(error, path, what, agent_related(path))
        return
    stored = {k: v for k, v in tree.items() if k not in HEADER}
    differs = same(stored, state)
    assert differs is None, f"{what} at {render(path)} loaded, but {differs} is not what was stored"
