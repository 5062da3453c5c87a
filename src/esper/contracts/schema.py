"""Schema versions of everything we persist, with their changelogs.

Bump a version whenever the persisted layout changes, add a line to its
changelog, and add a migration in `esper.checkpoints.migrations`.
"""

from __future__ import annotations

# Model checkpoint ("esper.model").
MODEL_CHECKPOINT_FORMAT = "esper.model"
MODEL_CHECKPOINT_VERSION = 1
MODEL_CHECKPOINT_CHANGELOG: dict[int, str] = {
    1: "First self-describing layout: host kind+config, slot layout, per-slot seed state as primitives.",
}

# Seed state inside a slot (SeedRecord: SeedState / SeedMetrics plus the blend plan).
SEED_STATE_VERSION = 1
SEED_STATE_CHANGELOG: dict[int, str] = {
    1: "Stage and history as ints, timestamps as ISO strings, metrics with explicit None for unmeasured values.",
}

# Run checkpoint ("esper.run"): model + optimizers + controller + RNG + counters.
RUN_CHECKPOINT_FORMAT = "esper.run"
RUN_CHECKPOINT_VERSION = 3
RUN_CHECKPOINT_CHANGELOG: dict[int, str] = {
    1: "First layout.",
    2: "`events`: the committed prefix of events.jsonl (bytes, lines, sha256) that the checkpoint commits.",
    3: "`run.rng.cuda`: the run's own CUDA generator state, or None when the run has not drawn on CUDA.",
}

# PPO agent checkpoint ("esper.agent").
AGENT_CHECKPOINT_FORMAT = "esper.agent"
AGENT_CHECKPOINT_VERSION = 1
AGENT_CHECKPOINT_CHANGELOG: dict[int, str] = {
    1: "First layout: network, optimizer, normalisers, hyperparameters, architecture, observation schema.",
}

# Telemetry events (events.jsonl).
TELEMETRY_EVENT_VERSION = 3
TELEMETRY_EVENT_CHANGELOG: dict[int, str] = {
    1: "First layout: every line has type, version, epoch, time and a typed payload.",
    2: 'Non-finite floats are the strings "NaN", "Infinity", "-Infinity" (version 1 wrote bare NaN/Infinity).',
    3: "`run_started` carries `plan`, the resolved run plan (every value the run uses); earlier versions have none.",
}
