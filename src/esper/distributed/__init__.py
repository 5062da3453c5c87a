"""Running Esper under `torchrun`: one process per rank, PyTorch's own distributed stack.

- `group`: process-group setup from torchrun's environment, rank/world helpers.
- `collectives`: metric all-reduce (sums, never means of means), broadcasts, run-on-rank-0.
- `sharding`: each rank's share of an epoch (DistributedSampler semantics) and of an evaluation set.
- `ddp`: the DistributedDataParallel wrapper, rebuilt whenever the model's structure changes.
- `measurement`: the collective context inside which counterfactual `force_alpha` is allowed.
- `launch`: joining and leaving torchrun's process group around one command.

Torch-level only, low in the layers (seeds and the RL core use it): it imports nothing else
of Esper. The DDP training pass is `esper.training.distributed`; decentralised PPO is
`esper.growth_rl.rank_sync` (what the update shares) and `esper.growth_rl.ppo_run` (the run loop's parts).

Every helper is the identity (or a plain local computation) when no process group
with more than one rank is initialised, so single-process runs are unchanged.
"""

from esper.distributed.collectives import all_reduce_sums, broadcast_object, on_main
from esper.distributed.group import active, init_from_env, is_main, rank, shutdown, world_size

__all__ = [
    "active",
    "all_reduce_sums",
    "broadcast_object",
    "init_from_env",
    "is_main",
    "on_main",
    "rank",
    "shutdown",
    "world_size",
]
