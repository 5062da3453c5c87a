"""`esper frontier` end to end on tiny budgets, its argument checks, and Ctrl-C."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from esper.cli.main import main
from esper.model import MorphogeneticModel
from esper.tasks import default_tasks
from esper.training.frontier import check_growth_config, width_overrides
from esper.training.run_io import load_run

RUN_KEYS = {
    "task", "width", "host_overrides", "controller", "seed", "run_dir", "epochs", "finish_reason",
    "host_params", "seed_params", "total_params", "seeds_germinated", "seeds_fossilized", "seed_blueprints",
    "test_accuracy", "test_loss", "wall_seconds", "examples_seen", "forward_flops_per_example_host",
    "forward_flops_per_example_final", "host_training_flops", "training_flops",
}
GROUP_KEYS = {
    "width", "controller", "host_overrides", "runs", "metric", "metric_mean", "metric_std",
    "test_accuracy_mean", "test_accuracy_std", "host_params", "total_params_mean", "total_params_std",
    "runs_that_grew", "runs_with_fossilized_seeds", "training_flops_mean", "training_flops_std", "wall_seconds_mean",
    "metric_minus_own_host", "frontier_metric_at_params", "metric_minus_frontier",
}
DOCUMENT_KEYS = {
    "format", "complete", "command", "spec", "task", "metric", "epochs", "base_host", "machine",
    "wall_seconds", "flops_note", "groups", "runs",
}
TINY = ["--widths", "0.5,1", "--seeds", "1", "--epochs", "2", "--max-batches-per-epoch", "2", "--workers", "2"]


def _one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("esper frontier: ")
    return lines[0]


def _check_runs(document: dict, task: str, metric: str) -> None:
    assert set(document) == DOCUMENT_KEYS
    assert document["format"] == "esper-frontier/1" and document["complete"] is True
    assert document["task"] == task and document["metric"] == metric
    assert document["machine"]["cpu_model"] and document["machine"]["torch"]
    runs = document["runs"]
    assert [(r["width"], r["controller"]) for r in runs] == [
        (0.5, "static"), (0.5, "heuristic"), (1.0, "static"), (1.0, "heuristic")
    ]
    for run in runs:
        expected = RUN_KEYS | ({"bits_per_char"} if metric == "bits_per_char" else set())
        assert set(run) == expected
        assert run["task"] == task and run["finish_reason"] == "completed" and run["epochs"] == 2
        assert Path(run["run_dir"]).is_dir()
        assert run["total_params"] == run["host_params"] + run["seed_params"]
        # The parameters of the model that was tested (the run's final checkpoint).
        assert run["total_params"] == load_run(Path(run["run_dir"]) / "checkpoint.pt").model.param_counts().total
        assert 0.0 <= run["test_accuracy"] <= 1.0
        assert run["host_training_flops"] == pytest.approx(
            3 * run["forward_flops_per_example_host"] * run["examples_seen"]
        )
        if run["seeds_germinated"] == 0:
            assert run["training_flops"] == run["host_training_flops"]
        else:  # a seed that ran in the forward pass adds its own FLOPs
            assert run["training_flops"] >= run["host_training_flops"]
    assert runs[0]["host_params"] < runs[2]["host_params"]  # the half-width host is smaller
    assert runs[2]["host_overrides"] == {}
    assert len({r["run_dir"] for r in runs}) == len(runs)
    assert [set(g) for g in document["groups"]] == [GROUP_KEYS] * 4
    for group, run in zip(document["groups"], runs, strict=True):
        assert group["metric_mean"] == run[metric] and group["metric_std"] == 0.0


@pytest.mark.slow
def test_mnist1d_frontier_json_png_and_refusal(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "frontier"
    assert main(["frontier", "--task", "mnist1d", *TINY, "--out", str(out)]) == 0
    document = json.loads((out / "frontier.json").read_text())
    _check_runs(document, "mnist1d", "test_accuracy")
    assert document["runs"][0]["host_overrides"] == {"widths": [16, 32, 32]}
    assert document["command"].startswith("esper frontier --task mnist1d --widths 0.5,1 --seeds 1")
    assert (out / "frontier.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "written" in capsys.readouterr().out
    before = (out / "frontier.json").read_bytes()
    assert main(["frontier", "--task", "mnist1d", *TINY, "--out", str(out)]) == 2
    assert "--overwrite" in _one_line_error(capsys)
    assert (out / "frontier.json").read_bytes() == before
    # --overwrite replaces the frontier and its runs, and leaves the user's other files alone.
    (out / "notes.txt").write_text("mine", encoding="utf-8")
    again = ["--widths", "0.5", "--seeds", "1", "--epochs", "1", "--max-batches-per-epoch", "1", "--workers", "1"]
    assert main(["frontier", "--task", "mnist1d", *again, "--out", str(out), "--overwrite"]) == 0
    document = json.loads((out / "frontier.json").read_text())
    assert document["spec"]["widths"] == [0.5] and [r["epochs"] for r in document["runs"]] == [1, 1]
    assert (out / "notes.txt").read_text(encoding="utf-8") == "mine"
    assert json.loads((out / "runs" / "w0.5-static-s0" / "summary.json").read_text())["epochs"] == 1


@pytest.mark.slow
def test_text_frontier_reports_bits_per_character(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the quick brown fox jumps over the lazy dog; " * 600, encoding="utf-8")
    out = tmp_path / "text"
    args = ["frontier", "--task", "text", *TINY, "--text-file", str(corpus), "--out", str(out)]
    assert main(args) == 0
    document = json.loads((out / "frontier.json").read_text())
    _check_runs(document, "text", "bits_per_char")
    assert document["runs"][0]["host_overrides"] == {"d_model": 32}
    for run in document["runs"]:
        assert run["bits_per_char"] == pytest.approx(run["test_loss"] / math.log(2))
    assert "--text-file" in document["command"]
    assert (out / "frontier.png").is_file() and (out / "compute.png").is_file()


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--widths", "0,1"], "--widths: expected numbers > 0"),
        (["--widths=-0.5,1"], "--widths: expected numbers > 0, got '-0.5'"),
        (["--widths", "1,-2"], "--widths: expected numbers > 0, got '-2'"),
        (["--widths", "half,1"], "--widths: expected comma-separated numbers > 0, got 'half'"),
        (["--widths", "1,1"], "--widths: multipliers must be unique"),
        (["--task", "nope"], "--task: unknown task 'nope'"),
        (["--controllers", "heuristic,oracle"], "--controllers: unknown controller 'oracle'"),
        (["--controllers", "static"], "--controllers: the static host always runs"),
        (["--seeds", "0"], "--seeds: expected an int >= 1, got 0"),
        (["--workers", "0"], "--workers: expected an int >= 1, got 0"),
        (["--task", "text", "--widths", "0.25,0.26"], "--widths: 0.25 and 0.26 give the same text host"),
        (["--text-file", "missing.txt"], "--text-file: no such file"),
        (["--widths", "0.5,1", "--static-widths", "1,2"], "--static-widths: 1 already in --widths"),
        (["--static-widths", "0,2"], "--static-widths: expected numbers > 0, got '0'"),
        (["--static-widths", "2,2"], "--static-widths: multipliers must be unique"),
        (["--task", "text", "--widths", "0.5", "--static-widths", "0.52"],
         "--widths: 0.5 and 0.52 give the same text host"),
        (["--growth-config", "missing.toml"], "config file missing.toml does not exist"),
        (["--variant", "rotate"], "--variant: expected LABEL=FILE, got 'rotate'"),
        (["--variant", "a b=x.toml"], "--variant: label 'a b' must be letters"),
        (["--variant", "random=x.toml"], "--variant: label 'random' is already a controller"),
        (["--variant", "v=missing.toml"], "config file missing.toml does not exist"),
    ],
)
def test_bad_arguments_fail_in_one_line_before_touching_disk(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], expected: str
) -> None:
    out = tmp_path / "out"
    assert main(["frontier", "--out", str(out), *extra]) == 2
    assert expected in _one_line_error(capsys)
    assert not out.exists()


def test_argparse_errors_are_one_line_too(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["frontier", "--seeds", "three", "--out", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    assert "--seeds" in _one_line_error(capsys)


def test_an_out_that_is_a_file_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "file"
    target.write_text("keep me", encoding="utf-8")
    for extra in ([], ["--overwrite"]):
        assert main(["frontier", "--out", str(target), *extra]) == 2
        assert "is not a directory" in _one_line_error(capsys)
    assert target.read_text(encoding="utf-8") == "keep me"


def test_width_multipliers_scale_every_width() -> None:
    tasks = default_tasks()
    assert width_overrides(tasks.get("mnist1d"), [0.25, 1, 2]) == {
        0.25: {"widths": [8, 16, 16]}, 1: {}, 2: {"widths": [64, 128, 128]}
    }
    assert width_overrides(tasks.get("text"), [0.5, 1.5]) == {0.5: {"d_model": 32}, 1.5: {"d_model": 96}}


@pytest.mark.slow
def test_ctrl_c_stops_the_workers_and_writes_no_frontier(tmp_path: Path) -> None:
    out = tmp_path / "frontier"
    command = [
        sys.executable, "-m", "esper", "frontier", "--task", "mnist1d", "--widths", "0.5,1", "--seeds", "2",
        "--epochs", "200", "--workers", "2", "--out", str(out),
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        # Wait until the workers are training (a run has written its first epoch's checkpoint).
        while not list(out.glob("runs/*/checkpoint.pt")):
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.2)
        os.killpg(process.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole group
        _, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
    assert process.returncode == 130
    lines = err.decode().strip().splitlines()
    assert "interrupted" in lines[-1] and "frontier.json not written" in lines[-1]
    assert "Traceback" not in err.decode()
    assert not (out / "frontier.json").exists()
    deadline = time.monotonic() + 10
    while True:  # the workers are gone with the parent: the process group is empty
        try:
            os.killpg(process.pid, 0)
        except ProcessLookupError:
            break
        assert time.monotonic() < deadline, "worker processes outlived the interrupted frontier"
        time.sleep(0.1)


def _group(width: float, controller: str, params: float, accuracy: float, grew: int) -> dict:
    return {
        "width": width, "controller": controller, "runs": 2, "metric_mean": accuracy, "metric_std": 0.01,
        "total_params_mean": params, "total_params_std": 10.0 if controller != "static" else 0.0,
        "runs_that_grew": grew,
    }


def test_the_plot_draws_static_line_and_arrows_for_grown_points(tmp_path: Path) -> None:
    from esper.training.frontier_plot import build_figure, render_frontier

    document = {
        "task": "mnist1d", "metric": "test_accuracy", "epochs": 25, "spec": {"seeds": [0, 1]},
        "groups": [
            _group(0.5, "static", 5000, 0.95, 0), _group(0.5, "heuristic", 9000, 0.96, 2),
            _group(1.0, "static", 19000, 0.97, 0), _group(1.0, "heuristic", 19000, 0.97, 0),
        ],
    }
    figure = build_figure(document)
    axes = figure.axes[0]
    arrows = [t for t in axes.texts if getattr(t, "arrow_patch", None) is not None]
    assert len(arrows) == 2  # one per grown group, from its own static host
    assert arrows[0].xy == (9000, 96.0) and arrows[0].xyann == (5000, 95.0)
    assert "(2/4 runs germinated a seed)" in axes.get_legend().get_texts()[1].get_text()
    render_frontier(document, tmp_path / "f.png")
    assert (tmp_path / "f.png").read_bytes()[:4] == b"\x89PNG"


def test_groups_need_every_seed(tmp_path: Path) -> None:
    from esper.training.frontier import FrontierSpec, summarize_groups

    spec = FrontierSpec(task="mnist1d", widths=(1.0,), seeds=(0, 1), controllers=("heuristic",))
    run = {"width": 1.0, "controller": "static", "total_params": 10, "test_accuracy": 0.5, "training_flops": 1.0,
           "host_overrides": {}, "host_params": 10, "seeds_germinated": 0, "seeds_fossilized": 0,
           "wall_seconds": 1.0}
    with pytest.raises(ValueError, match="width 1 static: expected 2 runs, got 1"):
        summarize_groups([run], spec)


def test_the_frontier_is_interpolated_in_log_parameters_and_never_extrapolated() -> None:
    from esper.training.frontier_groups import frontier_value

    static = [{"total_params_mean": 1000.0, "metric_mean": 0.90}, {"total_params_mean": 100000.0, "metric_mean": 0.96}]
    assert frontier_value(static, 10000.0) == pytest.approx(0.93)  # halfway in log parameters
    assert frontier_value(static, 1000.0) == pytest.approx(0.90)
    assert frontier_value(static, 999.0) is None and frontier_value(static, 100001.0) is None


def test_groups_compare_grown_runs_with_their_host_and_the_frontier() -> None:
    from esper.training.frontier import FrontierSpec, summarize_groups

    spec = FrontierSpec(task="mnist1d", widths=(0.5, 1.0), seeds=(0,), controllers=("random",))

    def run(width: float, controller: str, params: int, accuracy: float) -> dict:
        return {"width": width, "controller": controller, "total_params": params, "test_accuracy": accuracy,
                "training_flops": None, "host_overrides": {}, "host_params": params, "seeds_germinated": 1,
                "seeds_fossilized": 0, "wall_seconds": 1.0}

    rows = summarize_groups(
        [run(0.5, "static", 1000, 0.90), run(0.5, "random", 10000, 0.95),
         run(1.0, "static", 100000, 0.96), run(1.0, "random", 200000, 0.97)],
        spec,
    )
    grown_narrow, grown_wide = rows[1], rows[3]
    assert grown_narrow["metric_minus_own_host"] == pytest.approx(0.05)
    assert grown_narrow["frontier_metric_at_params"] == pytest.approx(0.93)
    assert grown_narrow["metric_minus_frontier"] == pytest.approx(0.02)  # above the frontier
    assert grown_wide["metric_minus_frontier"] is None  # beyond the widest static host: not extrapolated
    assert rows[0]["metric_minus_own_host"] == 0.0 and rows[0]["metric_minus_frontier"] == pytest.approx(0.0)


def test_a_growth_config_may_set_the_seed_lifecycle_rules() -> None:
    # Gates only act on seeds, so they cannot favour the static runs either way.
    values = {"gates": {"blend_full_host_gradient": True, "g2_min_epochs": 1}, "max_seeds": 4}
    assert check_growth_config(values, "test") == values


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('host_lr = 0.1\n', "'host_lr' cannot be set for growth runs only; allowed: heuristic, blueprints"),
        ('[heuristic]\nmin_epochs_left = 3\n', "[heuristic]"),
        ('[heuristic]\nrotate_blueprints = "yes"\n', "rotate_blueprints"),
        ('blueprints = "mlp"\n', "blueprints"),
        ('max_seeds = -1\n', "max_seeds"),
        ('[gates]\nblend_full_host_gradient = "yes"\n', "blend_full_host_gradient"),
    ],
)
def test_a_bad_growth_config_fails_in_one_line_before_touching_disk(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, expected: str
) -> None:
    config = tmp_path / "growth.toml"
    config.write_text(text, encoding="utf-8")
    out = tmp_path / "out"
    assert main(["frontier", "--growth-config", str(config), "--out", str(out)]) == 2
    line = _one_line_error(capsys)
    assert f"--growth-config {config}" in line and expected in line
    assert not out.exists()


@pytest.mark.slow
def test_static_widths_growth_config_variants_and_keep_finished_as_typed(tmp_path: Path) -> None:
    """Static-only widths join the frontier; the growth config reaches the growth runs only; a
    variant is one more group of heuristic runs; --keep-finished keeps completed runs."""
    config = tmp_path / "rotate.toml"
    config.write_text(
        'blueprints = ["conv_light", "norm"]\nmax_seeds = 2\n'
        "[heuristic]\nrotate_blueprints = true\nmax_live_experiments = 2\nmin_epochs_left_to_germinate = 0\n",
        encoding="utf-8",
    )
    variant = tmp_path / "light.toml"
    variant.write_text('blueprints = ["conv_light"]\nmax_seeds = 1\n', encoding="utf-8")
    out = tmp_path / "frontier"
    command = [
        sys.executable, "-m", "esper", "frontier", "--task", "mnist1d", "--widths", "0.5", "--static-widths", "0.25",
        "--seeds", "1", "--epochs", "4", "--max-batches-per-epoch", "2", "--workers", "2",
        "--growth-config", str(config), "--variant", f"light={variant}", "--out", str(out),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "compute.png" in done.stdout
    document = json.loads((out / "frontier.json").read_text())
    assert [(r["width"], r["controller"]) for r in document["runs"]] == [
        (0.25, "static"), (0.5, "static"), (0.5, "heuristic"), (0.5, "light")
    ]
    # The variant: the heuristic with the growth config, then the variant's own settings over it.
    light_config = json.loads((out / "runs" / "w0.5-light-s0" / "summary.json").read_text())["config"]
    assert light_config["controller"] == "heuristic" and light_config["blueprints"] == ["conv_light"]
    assert light_config["max_seeds"] == 1 and light_config["heuristic"]["rotate_blueprints"] is True
    assert [b.split(":")[1] for b in document["runs"][3]["seed_blueprints"]] == ["conv_light"]
    assert f"--variant light={variant}" in document["command"]
    assert "--static-widths 0.25" in document["command"] and f"--growth-config {config}" in document["command"]
    assert document["spec"]["static_widths"] == [0.25]
    grown = document["runs"][2]
    # Rotation with two live experiments: both blueprints of the configured list, one per slot.
    assert [b.split(":")[1] for b in grown["seed_blueprints"]] == ["conv_light", "norm"]
    static_config = json.loads((out / "runs" / "w0.5-static-s0" / "summary.json").read_text())["config"]
    grown_config = json.loads((out / "runs" / "w0.5-heuristic-s0" / "summary.json").read_text())["config"]
    assert grown_config["heuristic"]["rotate_blueprints"] is True and grown_config["max_seeds"] == 2
    assert static_config["heuristic"] == {} and static_config["blueprints"] is None
    # The seeds ran in the forward pass (TRAINING from epoch 2), so they cost FLOPs of their own.
    assert grown["training_flops"] > grown["host_training_flops"]
    assert document["groups"][2]["training_flops_mean"] == grown["training_flops"]
    assert (out / "compute.png").read_bytes()[:4] == b"\x89PNG"
    # Again with --keep-finished: nothing is trained again, the same runs are reported.
    checkpoints = {path: path.stat().st_mtime_ns for path in out.glob("runs/*/checkpoint.pt")}
    again = subprocess.run([*command, "--keep-finished"], capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert {path: path.stat().st_mtime_ns for path in out.glob("runs/*/checkpoint.pt")} == checkpoints
    kept = json.loads((out / "frontier.json").read_text())
    assert [r["wall_seconds"] for r in kept["runs"]] == [r["wall_seconds"] for r in document["runs"]]
    assert kept["command"].endswith("--keep-finished")


def test_a_finished_run_is_kept_only_with_the_same_configuration(tmp_path: Path) -> None:
    from esper.training.config import TrainConfig
    from esper.training.frontier import finished_summary

    config = TrainConfig(task="mnist1d", controller="static", seed=3)
    run = tmp_path / "run"
    assert finished_summary(run, config, 2) is None  # nothing there
    run.mkdir()
    (run / "checkpoint.pt").write_bytes(b"")
    summary = {"finish_reason": "completed", "config": config.model_dump(mode="json"), "epochs": 2}
    (run / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
    assert finished_summary(run, config, 2) == summary
    assert finished_summary(run, config, 3) is None  # a different length
    assert finished_summary(run, TrainConfig(task="mnist1d", controller="static", seed=4), 2) is None
    (run / "summary.json").write_text(json.dumps({**summary, "finish_reason": "interrupted"}), encoding="utf-8")
    assert finished_summary(run, config, 2) is None
    (run / "summary.json").write_text("{not json", encoding="utf-8")
    assert finished_summary(run, config, 2) is None


def test_seed_epochs_in_the_forward_pass_come_from_the_events() -> None:
    from esper.telemetry.events import EpochMetrics, SeedStageChanged
    from esper.training.frontier_flops import seed_forward_epochs

    def stage(epoch: int, slot: str, blueprint: str, to: str) -> SeedStageChanged:
        return SeedStageChanged(epoch=epoch, slot=slot, blueprint=blueprint, from_stage="DORMANT", to_stage=to,
                                reason="", alpha=0.0, seed_params=10)

    events = [
        stage(1, "r0c0", "mlp", "GERMINATED"), stage(2, "r0c0", "mlp", "TRAINING"),
        stage(5, "r0c0", "mlp", "BLENDING"), stage(11, "r0c0", "mlp", "PRUNED"),
        stage(12, "r0c0", "mlp", "EMBARGOED"), stage(14, "r0c0", "mlp", "DORMANT"),
        stage(3, "r0c1", "norm", "GERMINATED"), stage(4, "r0c1", "norm", "TRAINING"),
        stage(13, "r0c1", "norm", "FOSSILIZED"),
        stage(15, "r0c0", "lora", "GERMINATED"), stage(16, "r0c0", "lora", "PRUNED"),  # never ran
    ]
    assert not isinstance(events[0], EpochMetrics)
    # mlp ran in epochs 3..11 (9), norm in 5..25 (21), lora never left GERMINATED.
    assert seed_forward_epochs(events, 25) == [("r0c0", "mlp", 9), ("r0c1", "norm", 21)]


def test_seed_forward_flops_count_the_seed_module_at_its_slot() -> None:
    from esper.training.frontier_flops import forward_flops, seed_forward_flops, slot_inputs

    task = default_tasks().get("mnist1d")
    torch.manual_seed(0)
    model = MorphogeneticModel(task.build_host())
    batch = torch.randn(4, 1, 40)
    inputs = slot_inputs(model, batch)
    assert set(inputs) == set(model.slot_ids())
    flops = seed_forward_flops(model, inputs, "r0c0", "conv_heavy")
    assert flops > 0
    # The same count as planting the seed and measuring the model's increase.
    before = forward_flops(model, batch)
    model.germinate("r0c0", "conv_heavy")
    model.advance("r0c0")  # TRAINING: the seed's module runs in the forward pass
    assert forward_flops(model, batch) - before == flops


def test_the_compute_plot_uses_training_flops_and_skips_groups_without_them(tmp_path: Path) -> None:
    from esper.training.frontier_plot import build_figure, render_compute

    groups = [
        _group(0.5, "static", 5000, 0.95, 0) | {"training_flops_mean": 1e9, "training_flops_std": 0.0},
        _group(0.5, "heuristic", 9000, 0.96, 2) | {"training_flops_mean": 1.5e9, "training_flops_std": 1e8},
        _group(1.0, "static", 19000, 0.97, 0) | {"training_flops_mean": 4e9, "training_flops_std": 0.0},
        _group(1.0, "heuristic", 19000, 0.97, 2) | {"training_flops_mean": None, "training_flops_std": None},
    ]
    document = {"task": "text", "metric": "bits_per_char", "epochs": 25, "spec": {"seeds": [0, 1]},
                "groups": groups}
    axes = build_figure(document, "training_flops").axes[0]
    arrows = [t for t in axes.texts if getattr(t, "arrow_patch", None) is not None]
    assert len(arrows) == 1 and arrows[0].xy == (1.5e9, 0.96) and arrows[0].xyann == (1e9, 0.95)
    assert axes.get_xlabel() == "training FLOPs (log scale)"
    with pytest.raises(ValueError, match="x_key must be one of"):
        build_figure(document, "wall_seconds")
    render_compute(document, tmp_path / "c.png")
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"
