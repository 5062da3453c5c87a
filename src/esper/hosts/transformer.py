"""Pre-LN GPT-style language-model host.

stem: token + learned position embeddings (+ dropout). Each segment is
`layers_per_segment` blocks (LN -> causal self-attention -> residual;
LN -> 4x GELU MLP -> residual); slot i sits after segment i. head: final
LayerNorm and a linear map to the vocabulary whose weight is the token
embedding's own Parameter when `tie_weights`.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import Tensor, nn

from esper.contracts.config import MAX_DIM, MAX_LAYERS, StrictConfig
from esper.contracts.shapes import SlotShape
from esper.contracts.slot_ids import format_slot_id
from esper.hosts.registry import HostConfigError, register_host
from esper.hosts.segmented import SegmentedHost

_INIT_STD = 0.02
_MLP_EXPANSION = 4


class GPTHostConfig(StrictConfig):
    vocab_size: int = Field(ge=1, le=MAX_DIM)
    block_size: int = Field(ge=1, le=MAX_DIM)  # longest sequence the position embedding covers
    d_model: int = Field(ge=1, le=MAX_DIM)
    n_heads: int = Field(ge=1, le=MAX_DIM)
    n_layers: int = Field(ge=1, le=MAX_LAYERS)
    layers_per_segment: int = Field(ge=1, le=MAX_LAYERS)
    tie_weights: bool = True
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)

    @model_validator(mode="after")
    def _divisibility(self) -> GPTHostConfig:
        if self.d_model % self.n_heads:
            raise HostConfigError("n_heads", f"must divide d_model={self.d_model}, got n_heads={self.n_heads}")
        if self.n_layers % self.layers_per_segment:
            raise HostConfigError(
                "layers_per_segment",
                f"must divide n_layers={self.n_layers}, got layers_per_segment={self.layers_per_segment}",
            )
        return self


class CausalSelfAttention(nn.Module):
    def __init__(self, d_model: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.attn_dropout = dropout
        self.resid_dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        batch, seq, width = x.shape
        # (B, T, 3D) -> three (B, H, T, D/H) tensors.
        qkv = self.qkv(x).view(batch, seq, 3, self.n_heads, width // self.n_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        dropout_p = self.attn_dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=True)
        y = y.transpose(1, 2).reshape(batch, seq, width)
        return self.resid_dropout(self.proj(y))


class MLP(nn.Module):
    def __init__(self, d_model: int, dropout: float) -> None:
        super().__init__()
        self.fc = nn.Linear(d_model, _MLP_EXPANSION * d_model)
        self.proj = nn.Linear(_MLP_EXPANSION * d_model, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.proj(F.gelu(self.fc(x))))


class TransformerBlock(nn.Module):
    """Pre-LN block: x + attn(LN(x)), then x + mlp(LN(x))."""

    def __init__(self, d_model: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        self.ln_attn = nn.LayerNorm(d_model)
        self.attn = CausalSelfAttention(d_model, n_heads, dropout)
        self.ln_mlp = nn.LayerNorm(d_model)
        self.mlp = MLP(d_model, dropout)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.ln_attn(x))
        return x + self.mlp(self.ln_mlp(x))


@register_host("gpt")
class GPTHost(SegmentedHost):
    """Causal language model over (B, T) token ids; logits are (B, T, vocab_size)."""

    kind: ClassVar[str]  # set by register_host
    config_class = GPTHostConfig
    cfg: GPTHostConfig

    def __init__(self, cfg: GPTHostConfig) -> None:
        super().__init__()
        if not isinstance(cfg, GPTHostConfig):
            raise ValueError(f"GPTHost: expected a GPTHostConfig, got {type(cfg).__name__}")
        self.cfg = cfg
        self.token_embedding = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.position_embedding = nn.Embedding(cfg.block_size, cfg.d_model)
        self.embed_dropout = nn.Dropout(cfg.dropout)
        n_segments = cfg.n_layers // cfg.layers_per_segment
        self.segments = nn.ModuleList(
            nn.Sequential(
                *(TransformerBlock(cfg.d_model, cfg.n_heads, cfg.dropout) for _ in range(cfg.layers_per_segment))
            )
            for _ in range(n_segments)
        )
        self.final_norm = nn.LayerNorm(cfg.d_model)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self._init_weights()
        if cfg.tie_weights:
            # One Parameter, two uses; accounting de-duplicates by identity.
            self.lm_head.weight = self.token_embedding.weight
        shape = SlotShape("transformer", cfg.d_model, n_heads=cfg.n_heads)
        self._slot_shapes = {format_slot_id(0, i): shape for i in range(n_segments)}

    def _init_weights(self) -> None:
        # GPT-2 style: small normal weights, zero biases, residual projections
        # scaled down with depth so the residual stream's variance stays bounded.
        residual_std = _INIT_STD / math.sqrt(2 * self.cfg.n_layers)
        for name, module in self.named_modules():
            if isinstance(module, nn.Linear):
                std = residual_std if name.endswith(".proj") else _INIT_STD
                nn.init.normal_(module.weight, mean=0.0, std=std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, mean=0.0, std=_INIT_STD)

    def stem(self, idx: Tensor) -> Tensor:
        """Token ids (B, T), 1 <= T <= block_size -> embeddings (B, T, d_model)."""
        if idx.dim() != 2 or idx.dtype not in (torch.int64, torch.int32):
            raise ValueError(
                f"GPTHost input: expected (B, T) int64 token ids, got shape {tuple(idx.shape)} of dtype {idx.dtype}"
            )
        seq = idx.shape[1]
        if not 1 <= seq <= self.cfg.block_size:
            raise ValueError(f"GPTHost input: sequence length T={seq} must be in 1..block_size={self.cfg.block_size}")
        positions = torch.arange(seq, device=idx.device)
        return self.embed_dropout(self.token_embedding(idx) + self.position_embedding(positions))

    def head(self, h: Tensor) -> Tensor:
        return self.lm_head(self.final_norm(h))
