"""docs/export.md's plain-PyTorch loader, run where `import esper` fails, equals Esper's outputs.

The loader is copied out of the document (so the document cannot drift from what is
tested) and run in a fresh, isolated interpreter (`-I`: no PYTHONPATH, no user site)
with an import hook that refuses `esper`. It loads exports of every host (1-D CNN,
2-D CNN, GPT with tied weights) with every available blueprint under every blend
algorithm, plus models grown by `esper train` on every built-in task, and compares
its outputs with the grown models' outputs, bit for bit.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from esper.checkpoints.export import export_safetensors
from esper.checkpoints.model_io import load_model
from esper.checkpoints.self_test import TINY_HOSTS, staged_model
from esper.cli.main import main
from esper.contracts.alpha import AlphaAlgorithm
from esper.contracts.stages import SeedStage
from esper.model import MorphogeneticModel
from esper.tasks import TaskOptions, default_tasks

from .support import EAGER_CONFIG, EAGER_EPOCHS, TASKS, data_args

pytestmark = pytest.mark.slow

DOC = Path(__file__).resolve().parents[2] / "docs" / "export.md"
LOADER_MARK = "# esper_plain_loader.py"

BLOCK_ESPER = '''
import sys


class _NoEsper:
    """Import hook: this interpreter has no Esper."""

    def find_spec(self, name, path=None, target=None):
        if name == "esper" or name.startswith("esper."):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)")
        return None


sys.meta_path.insert(0, _NoEsper())
try:
    import esper  # noqa: F401
except ModuleNotFoundError:
    pass
else:
    raise SystemExit("esper is importable: the test proves nothing")
'''

CHECK = '''
from safetensors.torch import load_file

# The expected outputs were computed with one thread; a different thread count may split
# a convolution differently and change the last bits.
torch.set_num_threads(1)
failures = []
cases = json.loads(sys.argv[1])
for case in cases:
    model = load(case["export"])
    io = load_file(case["io"])
    with torch.no_grad():
        out = model(io["input"])
    if out.shape != io["expected"].shape or not torch.equal(out, io["expected"]):
        failures.append(case["export"])
assert "esper" not in sys.modules
print(f"{len(cases) - len(failures)} of {len(cases)} equal")
for name in failures:
    print(f"MISMATCH {name}")
sys.exit(1 if failures else 0)
'''


def loader_source() -> str:
    text = DOC.read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)
    found = [block for block in blocks if block.startswith(LOADER_MARK)]
    assert len(found) == 1, f"{DOC}: expected one python block starting with {LOADER_MARK!r}"
    return found[0]


def _record(model: MorphogeneticModel, x: torch.Tensor, directory: Path, name: str) -> dict[str, str]:
    """Export `model` and save the input and the grown model's output next to it."""
    export = directory / f"{name}.safetensors"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # seeds that are not fossilized are left out, with a warning
        export_safetensors(model, export)
    model.eval()
    with torch.no_grad():
        expected = model(x)
    io = directory / f"{name}.io.safetensors"
    save_file({"input": x.contiguous(), "expected": expected.contiguous()}, str(io))
    return {"export": str(export), "io": str(io)}


def _grown_by_esper_train(task: str, directory: Path, data: dict[str, str]) -> tuple[MorphogeneticModel, torch.Tensor]:
    config = directory / f"{task}.toml"
    config.write_text(EAGER_CONFIG, encoding="utf-8")
    out = directory / f"run-{task}"
    code = main(["train", "--task", task, "--epochs", str(EAGER_EPOCHS), "--config", str(config),
                 "--out", str(out), "--no-progress", *data_args(data)])
    assert code == 0
    model = load_model(out / "checkpoint.pt")
    assert any(slot.stage == SeedStage.FOSSILIZED for slot in model.slots()), task
    options = TaskOptions(
        data_dir=Path(data["data_dir"]) if "data_dir" in data else None,
        text_file=Path(data["text_file"]) if "text_file" in data else None,
        seed=0,
    )
    x = default_tasks().get(task).load_data(options).test.tensors[0][:8]
    return model, x


def test_the_documented_loader_runs_without_esper_and_matches(
    tmp_path: Path, data_files: dict[str, dict[str, str]]
) -> None:
    cases: list[dict[str, str]] = []
    for host in TINY_HOSTS:
        for algorithm in AlphaAlgorithm:
            model = staged_model(host, SeedStage.FOSSILIZED, algorithm)
            assert model.slots() and all(s.stage == SeedStage.FOSSILIZED for s in model.slots())
            cases.append(_record(model, host.example_input(), tmp_path, f"{host.label}-{algorithm.name}"))
    for task in TASKS:
        model, x = _grown_by_esper_train(task, tmp_path, data_files.get(task, {}))
        cases.append(_record(model, x, tmp_path, f"task-{task}"))
    script = tmp_path / "plain.py"
    script.write_text(BLOCK_ESPER + loader_source() + CHECK, encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-I", str(script), json.dumps(cases)],
        capture_output=True, text=True, timeout=180, cwd=tmp_path, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(cases)} of {len(cases)} equal" in result.stdout


def test_the_loader_refuses_a_file_that_does_not_match_its_metadata(tmp_path: Path) -> None:
    model = staged_model(TINY_HOSTS[0], SeedStage.FOSSILIZED, AlphaAlgorithm.ADD)
    case = _record(model, TINY_HOSTS[0].example_input(), tmp_path, "cnn")
    from safetensors import safe_open

    with safe_open(case["export"], framework="pt") as handle:
        metadata = handle.metadata()
        tensors = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118 (not a dict)
    dropped = sorted(name for name in tensors if name.startswith("blends."))[0]
    del tensors[dropped]
    broken = tmp_path / "broken.safetensors"
    save_file(tensors, str(broken), metadata=metadata)
    script = tmp_path / "plain.py"
    script.write_text(BLOCK_ESPER + loader_source() + f"\nload({str(broken)!r})\n", encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-I", str(script)], capture_output=True, text=True, timeout=180, cwd=tmp_path, check=False
    )
    assert result.returncode != 0
    assert "Missing key(s)" in result.stderr and dropped in result.stderr
