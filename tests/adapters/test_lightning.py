"""GrowthCallback: a tiny LightningModule grows over a few CPU epochs, optimizers follow, checkpoints resume."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from esper.adapters import attach
from esper.contracts.actions import Op
from esper.contracts.stages import SeedStage
from esper.control import Decision
from esper.seeds.gates import GateConfig

from .test_grower import Scripted

pl = pytest.importorskip("lightning.pytorch")
from esper.integrations.lightning import GrowthCallback  # noqa: E402  (after the skip)

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")


def _data(n: int, seed: int) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=g)
    x = torch.randn(n, 1, 12, generator=g) + y[:, None, None].float()
    return TensorDataset(x, y)


class Tiny(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        net = nn.Sequential(nn.Conv1d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(48, 3))
        gates = GateConfig(permissive=True, g2_min_epochs=0)
        # The slot sits after the ReLU (a parameter-free submodule): the model's Conv1d makes it cnn.
        self.model = attach(net, slots=["1"], example_input=torch.zeros(2, 1, 12), gates=gates)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def _step(self, batch: tuple[torch.Tensor, torch.Tensor], prefix: str) -> torch.Tensor:
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits, y)
        self.log(f"{prefix}_loss", loss, on_epoch=True, on_step=False)
        self.log(f"{prefix}_acc", (logits.argmax(-1) == y).float().mean(), on_epoch=True, on_step=False)
        return loss

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], _index: int) -> torch.Tensor:
        with self.model.recording_proximal() as proximal:
            loss = self._step(batch, "train")
        penalty = proximal.penalty()
        return loss if penalty is None else loss + penalty

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], _index: int) -> None:
        self._step(batch, "val")

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=1e-2)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(_data(32, 0), batch_size=8)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(_data(16, 1), batch_size=8)


def _trainer(tmp_path: Path, epochs: int, callback: GrowthCallback) -> object:
    return pl.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        callbacks=[callback, pl.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)],
        logger=pl.loggers.CSVLogger(tmp_path, name="logs"),
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )


def _script() -> Scripted:
    return Scripted(
        [
            Decision(Op.GERMINATE, slot="r0c0", blueprint="conv_light"),
            Decision(Op.ADVANCE, slot="r0c0"),
            Decision(Op.ADVANCE, slot="r0c0"),
        ]
    )


def test_the_callback_grows_rebuilds_optimizers_logs_and_resumes(tmp_path: Path) -> None:
    module = Tiny()
    callback = GrowthCallback(controller=_script())
    trainer = _trainer(tmp_path, 3, callback)
    trainer.fit(module)
    slot = module.model.slot("r0c0")
    assert slot.stage == SeedStage.BLENDING
    # The optimizer was rebuilt when the seed appeared: it now trains the seed too.
    optimized = {id(p) for group in trainer.optimizers[0].param_groups for p in group["params"]}
    assert all(id(p) in optimized for p in slot.seed_parameters())
    # The seed trained (its weights moved away from the zero-initialised identity).
    assert any(float(p.abs().sum()) > 0 for p in slot.seed.parameters())  # type: ignore[union-attr]
    assert trainer.logged_metrics["esper/seed_params"] > 0
    rows = list(csv.DictReader((Path(trainer.logger.log_dir) / "metrics.csv").open()))
    assert any(row.get("esper/seed_params") not in (None, "", "0.0") for row in rows)

    # Resume from the last checkpoint into a fresh module: the seed comes back with its weights.
    resumed = Tiny()
    callback2 = GrowthCallback(controller=Scripted([]))
    trainer2 = _trainer(tmp_path / "again", 4, callback2)
    trainer2.fit(resumed, ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"))
    assert resumed.model.slot("r0c0").stage == SeedStage.BLENDING
    assert callback2.grower is not None and callback2.grower.epoch == 4
    assert callback2.grower.history["val_loss"][:3] == callback.grower.history["val_loss"]  # type: ignore[union-attr]


def test_missing_metrics_are_named(tmp_path: Path) -> None:
    module = Tiny()
    callback = GrowthCallback(controller="static", metrics={"val_accuracy": "val_accuracy"})
    trainer = _trainer(tmp_path, 1, callback)
    with pytest.raises(ValueError, match=r"metric 'val_accuracy' \(the val_accuracy signal\) was not logged"):
        trainer.fit(module)
    with pytest.raises(ValueError, match="unknown signals"):
        GrowthCallback(metrics={"accuracy": "acc"})


def test_a_clear_message_when_lightning_is_missing() -> None:
    script = (
        "import sys\n"
        "sys.modules['lightning'] = None\n"
        "sys.modules['lightning.pytorch'] = None\n"
        "try:\n"
        "    import esper.integrations.lightning\n"
        "except ImportError as error:\n"
        "    print(error)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True)
    assert "pip install 'esper[lightning]'" in done.stdout
