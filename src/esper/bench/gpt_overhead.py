"""What the MorphogeneticModel costs over plain PyTorch on the GPT host (task `text`).

- gpt_dormant_overhead: every slot DORMANT vs the bare GPT host.
- gpt_fossilized_overhead: a fossilized seed in every slot (lora, attention, mlp_small,
  norm: one of each kind of transformer seed module) vs `StaticGrownGPT`, a hand-written
  plain module with the seeds' math inlined and the same parameter values copied in.

Each is timed twice: forward+backward in training mode (a training step without the
optimizer) and forward alone in eval mode without autograd (inference). As in the CNN
suites, outputs are checked to be equal before anything is timed.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from esper.bench.model_overhead import (
    DORMANT_GOAL,
    FOSSILIZED_GOAL,
    check_equal,
    fossilize_all,
    grow_to_blending,
    perturb_seeds,
    train_step,
)
from esper.bench.timing import BenchError, BenchSettings, PairTiming, summarise, time_pair
from esper.blueprints.transformer import AttentionSeed, LoraSeed, MlpSeed
from esper.blueprints.zero_init import ScaledNormSeed
from esper.hosts import build_host
from esper.hosts.transformer import GPTHost, GPTHostConfig
from esper.model import MorphogeneticModel
from esper.seeds.gates import GateConfig
from esper.tasks.text import text_task

__all__ = [
    "FOSSILIZED_BLUEPRINTS",
    "GPTCase",
    "StaticGrownGPT",
    "gpt_case",
    "gpt_dormant_overhead",
    "gpt_fossilized_overhead",
    "grow_gpt",
]

# One of each transformer seed module, in slot order (mlp_small and mlp are the same module
# with a different hidden width; flex_attention cannot train on a CPU).
FOSSILIZED_BLUEPRINTS = ("lora", "attention", "mlp_small", "norm")
# About the character vocabulary of the text task's default corpus (Python's stdlib).
_VOCAB_SIZE = 96
_DATA_SEED = 4321


@dataclass(frozen=True)
class GPTCase:
    """A GPT host configuration and the token batch it is timed on."""

    config: dict[str, Any]
    batch: int

    @property
    def description(self) -> str:
        c = self.config
        return (
            f"GPT d_model {c['d_model']}, {c['n_layers']} layers, {c['n_heads']} heads, "
            f"vocab {c['vocab_size']}, batch {self.batch}x{c['block_size']} tokens"
        )

    def build_host(self) -> GPTHost:
        host = build_host("gpt", self.config)
        assert isinstance(host, GPTHost)
        return host

    def input(self) -> Tensor:
        generator = torch.Generator().manual_seed(_DATA_SEED)
        shape = (self.batch, self.config["block_size"])
        return torch.randint(0, self.config["vocab_size"], shape, generator=generator)


def gpt_case(tiny: bool) -> GPTCase:
    """The text task's own host and batch size (a toy version when tiny)."""
    task = text_task()
    config = {**task.host_config, "vocab_size": _VOCAB_SIZE}
    if tiny:
        config.update(d_model=16, n_heads=2, block_size=8, vocab_size=11)
        return GPTCase(config, batch=2)
    return GPTCase(config, batch=task.defaults.batch_size)


def grow_gpt(host: GPTHost, blueprints: Sequence[str] = FOSSILIZED_BLUEPRINTS) -> MorphogeneticModel:
    """A model over `host` with blueprints[i] fossilized in slot i, seeds perturbed off the identity."""
    model = MorphogeneticModel(host, gates=GateConfig(permissive=True))
    slot_ids = model.slot_ids()
    if len(blueprints) != len(slot_ids):
        raise BenchError(f"benchmark setup: {len(slot_ids)} slots but {len(blueprints)} blueprints")
    for sid, blueprint in zip(slot_ids, blueprints, strict=True):
        grow_to_blending(model, [sid], blueprint)
    fossilize_all(model, slot_ids)
    perturb_seeds(model)
    return model


# ----------------------------------------------------- the hand-written model
def _layer_norm(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    return F.layer_norm(x, (x.shape[-1],), weight, bias)


class StaticGrownGPT(nn.Module):
    """The grown GPT written by hand: stem, `h = seed_i(block_i(h))`, head.

    The host's transformer blocks are plain PyTorch modules and are reused as they are
    (deep-copied); the stem, the head and every seed are written out here as tensor
    math over this module's own copies of the parameters. A seed's math is chosen once,
    at construction, by its kind.
    """

    def __init__(self, host: GPTHost, seeds: Sequence[nn.Module]) -> None:
        super().__init__()
        if len(seeds) != len(host.segments):
            raise ValueError(f"StaticGrownGPT: expected {len(host.segments)} seeds, got {len(seeds)}")
        own = copy.deepcopy(host)  # keeps the tie between the embedding and the output layer
        self.token_embedding = own.token_embedding.weight
        self.position_embedding = own.position_embedding.weight
        self.blocks = own.segments
        self.final_norm = own.final_norm
        self.lm_head = own.lm_head.weight
        if not isinstance(host.cfg, GPTHostConfig):
            raise ValueError(f"StaticGrownGPT: expected a GPT host config, got {type(host.cfg).__name__}")
        self.n_heads = host.cfg.n_heads
        self.kinds: list[str] = []
        self.seed_params = nn.ParameterList()
        self._offsets: list[int] = []
        for seed in seeds:
            kind, tensors = _seed_tensors(seed)
            self.kinds.append(kind)
            self._offsets.append(len(self.seed_params))
            for tensor in tensors:
                self.seed_params.append(nn.Parameter(tensor.detach().clone()))

    def _seed(self, index: int, h: Tensor) -> Tensor:
        kind, at = self.kinds[index], self._offsets[index]
        p = self.seed_params
        if kind == "lora":
            return h + F.linear(F.linear(h, p[at]), p[at + 1])
        if kind == "mlp":
            hidden = F.gelu(F.linear(_layer_norm(h, p[at], p[at + 1]), p[at + 2], p[at + 3]))
            return h + F.linear(hidden, p[at + 4], p[at + 5])
        if kind == "norm":
            return h + torch.tanh(p[at + 2]) * _layer_norm(h, p[at], p[at + 1])
        # attention
        batch, seq, width = h.shape
        qkv = F.linear(_layer_norm(h, p[at], p[at + 1]), p[at + 2], p[at + 3])
        q, k, v = (
            t.reshape(batch, seq, self.n_heads, width // self.n_heads).transpose(1, 2) for t in qkv.split(width, dim=-1)
        )
        attended = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return h + F.linear(attended.transpose(1, 2).reshape(batch, seq, width), p[at + 4], p[at + 5])

    def forward(self, idx: Tensor) -> Tensor:
        positions = torch.arange(idx.shape[1], device=idx.device)
        h = F.embedding(idx, self.token_embedding) + F.embedding(positions, self.position_embedding)
        for index, block in enumerate(self.blocks):
            h = self._seed(index, block(h))
        return F.linear(self.final_norm(h), self.lm_head)


def _seed_tensors(seed: nn.Module) -> tuple[str, list[Tensor]]:
    """A fossilized seed's kind and its parameters in the order `StaticGrownGPT._seed` reads them."""
    if isinstance(seed, LoraSeed):
        return "lora", [seed.down.weight, seed.up.weight]
    if isinstance(seed, MlpSeed):
        return "mlp", [seed.norm.weight, seed.norm.bias, seed.fc1.weight, seed.fc1.bias, seed.fc2.weight, seed.fc2.bias]
    if isinstance(seed, ScaledNormSeed) and isinstance(seed.norm, nn.LayerNorm):
        return "norm", [seed.norm.weight, seed.norm.bias, seed.scale]
    if type(seed) is AttentionSeed:
        return "attention", [
            seed.norm.weight,
            seed.norm.bias,
            seed.qkv.weight,
            seed.qkv.bias,
            seed.out.weight,
            seed.out.bias,
        ]
    raise ValueError(f"StaticGrownGPT: no hand-written version of a {type(seed).__name__} seed")


# ------------------------------------------------------------------- suites
@torch.no_grad()
def _inference(module: nn.Module, x: Tensor) -> None:
    module(x)


def _time_both(
    ours: nn.Module, plain: nn.Module, x: Tensor, settings: BenchSettings, what: str
) -> dict[str, tuple[str, PairTiming]]:
    """forward+backward in train mode, then forward alone in eval mode without autograd."""
    ours.train()
    plain.train()
    check_equal(ours, plain, x, f"{what}/gpt")
    step = time_pair(partial(train_step, ours, x), partial(train_step, plain, x), settings.plan)
    ours.eval()
    plain.eval()
    check_equal(ours, plain, x, f"{what}/gpt_forward")
    forward = time_pair(partial(_inference, ours, x), partial(_inference, plain, x), settings.plan)
    return {"gpt": ("forward+backward, train mode", step), "gpt_forward": ("forward only, eval mode, no grad", forward)}


def gpt_dormant_overhead(settings: BenchSettings) -> dict[str, Any]:
    """MorphogeneticModel over the GPT host with all slots DORMANT vs `host(x)`."""
    case = gpt_case(settings.tiny)
    host = case.build_host()
    model = MorphogeneticModel(host)
    timed = _time_both(model, host, case.input(), settings, "gpt_dormant_overhead")
    cases = {name: (f"{case.description}, {what}", timing) for name, (what, timing) in timed.items()}
    definition = "ours / plain: MorphogeneticModel over the GPT host (all slots DORMANT) vs host(x), same weights"
    return {"gpt_dormant_overhead": summarise(cases, kind="ratio", goal=DORMANT_GOAL, definition=definition)}


def gpt_fossilized_overhead(settings: BenchSettings) -> dict[str, Any]:
    """Every slot of the GPT host holding a fossilized seed vs StaticGrownGPT."""
    case = gpt_case(settings.tiny)
    host = case.build_host()
    model = grow_gpt(host)
    static = StaticGrownGPT(host, [model.slot(sid).seed for sid in model.slot_ids()])  # type: ignore[misc]
    timed = _time_both(model, static, case.input(), settings, "gpt_fossilized_overhead")
    seeds = ", ".join(FOSSILIZED_BLUEPRINTS)
    cases = {
        name: (f"{case.description}, fossilized {seeds}, {what}", timing) for name, (what, timing) in timed.items()
    }
    definition = (
        "ours / plain: MorphogeneticModel over the GPT host (every seed FOSSILIZED) vs hand-written StaticGrownGPT"
    )
    metric = summarise(cases, kind="ratio", goal=FOSSILIZED_GOAL, definition=definition)
    return {"gpt_fossilized_overhead": metric}
