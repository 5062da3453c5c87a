"""Constants and helpers shared by the end-to-end tests (fixtures live in conftest.py)."""

from __future__ import annotations

from esper.tasks import default_tasks

# Every task in the registry at collection time: a task added to Esper joins the matrix by itself.
TASKS: list[str] = default_tasks().names()
CONTROLLERS = ("static", "heuristic", "random", "policy")

# Images per generated CIFAR-10 batch file (5 training files + 1 test file).
CIFAR_PER_BATCH = 8

# Tiny runs: two training batches of 16 per epoch.
BASE_CONFIG = "max_batches_per_epoch = 2\nbatch_size = 16\n"

# A heuristic that grows at once, and gates that let a measured seed through whatever it measures:
# strict gates (so strict G2 reads the projected gain) with thresholds no measurement can miss.
# Germinate after epoch 2, TRAINING after 3, BLENDING after 4 (ramp 0: alpha 1 at once),
# HOLDING after 5, FOSSILIZED after 6.
EAGER_CONFIG = (
    BASE_CONFIG
    + """
[gates]
permissive = false
g2_min_epochs = 0
g2_min_improvement_points = -1000.0
g2_min_gradient_ratio = 0.0
g3_min_epochs = 0
g5_min_contribution_points = -1000.0

[heuristic]
min_epoch_to_germinate = 2
min_epochs_left_to_germinate = 0
stable_epochs = 1
stable_rise_tolerance = 1000.0
stable_rel_improvement = 1000.0
plateau_epochs = 1
plateau_min_gain_points = 1000.0
blend_tempo = 0
fossilize_min_contribution_points = -1000.0
prune_if_total_improvement_below = -1000.0
holding_min_epochs = 1
"""
)
EAGER_EPOCHS = 6

# The smallest PPO run that writes an agent: one environment, one round of two epochs, no imitation.
PPO_CONFIG = """
[train]
max_batches_per_epoch = 1
batch_size = 16
{data}
[policy]
hidden = 8
lstm_hidden = 8
head_hidden = 8
[ppo]
n_minibatches = 1
update_epochs = 1
"""


def data_args(data: dict[str, str]) -> list[str]:
    """The same data fields as `esper train` flags."""
    flags = {"data_dir": "--data-dir", "text_file": "--text-file"}
    return [part for key, value in data.items() for part in (flags[key], value)]


def ppo_args(task: str, config: str) -> list[str]:
    """`esper ppo` flags of the smallest run that writes an agent (1 env, 1 round of 2 epochs)."""
    return ["ppo", "--task", task, "--envs", "1", "--rounds", "1", "--episode-length", "2", "--workers", "0",
            "--imitate", "0", "--config", config, "--no-progress"]
