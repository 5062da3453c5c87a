"""`esper train` prints the committed growth measurement only under the conditions it was measured in."""

from __future__ import annotations

from esper.training.config import TrainConfig
from esper.training.growth_reference import REFERENCES, reference_line

SUMMARY = {"seed_params": 12_576, "host_params": 19_498}


def test_default_mnist1d_run_gets_the_labelled_reference_line() -> None:
    line = reference_line(TrainConfig(), SUMMARY)
    assert line is not None
    assert "seeds added 12,576 parameters to the 19,498-parameter host" in line
    assert "measured reference (seeds 100-102, benchmarks/frontier/mnist1d)" in line
    reference = REFERENCES["mnist1d"]
    gain = reference.grown_mean - reference.static_mean
    assert f"({gain:+.2f} points" in line
    # A gain smaller than the spread must say so on the line.
    assert (", within the spread over seeds" in line) == (abs(gain) < max(reference.static_std, reference.grown_std))


def test_default_text_run_gets_its_reference_in_bits_per_char() -> None:
    summary = {"seed_params": 16_833, "host_params": 210_304, "test_loss": 1.6635532939}
    line = reference_line(TrainConfig(task="text"), summary)
    assert line is not None
    assert line.startswith("this run 2.400 bits/char · seeds added 16,833 parameters")
    assert "measured reference (seeds 100-102, benchmarks/frontier/text-default)" in line
    assert "this host static 2.453 ± 0.121 bits/char, grown by the heuristic 2.438 ± 0.131 bits/char" in line
    # -0.015 bits/char is better, but inside the spread over seeds: the line says both.
    assert "(-0.015 bits/char, within the spread over seeds)" in line
    # Another corpus is other data: no reference.
    assert reference_line(TrainConfig(task="text", text_file="corpus.txt"), SUMMARY) is None


def test_the_committed_references_match_their_frontier_files() -> None:
    import json
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    for reference in REFERENCES.values():
        record = json.loads((root / reference.source / "frontier.json").read_text(encoding="utf-8"))
        groups = {g["controller"]: g for g in record["groups"] if g["width"] == 1.0}
        scale = 100.0 if reference.metric == "accuracy" else 1.0
        key = "test_accuracy" if reference.metric == "accuracy" else "metric"
        digits = 2 if reference.metric == "accuracy" else 3
        assert round(scale * groups["static"][f"{key}_mean"], digits) == reference.static_mean
        assert round(scale * groups["static"][f"{key}_std"], digits) == reference.static_std
        assert round(scale * groups["heuristic"][f"{key}_mean"], digits) == reference.grown_mean
        assert round(scale * groups["heuristic"][f"{key}_std"], digits) == reference.grown_std
        assert round(groups["heuristic"]["total_params_mean"]) == reference.grown_params
        assert record["epochs"] == reference.epochs


def test_no_reference_line_outside_the_measured_conditions() -> None:
    assert reference_line(TrainConfig(controller="static"), SUMMARY) is None
    assert reference_line(TrainConfig(host_overrides={"widths": [8, 16, 16]}), SUMMARY) is None
    assert reference_line(TrainConfig(epochs=3), SUMMARY) is None
    assert reference_line(TrainConfig(heuristic={"min_epoch_to_germinate": 4}), SUMMARY) is None
    assert reference_line(TrainConfig(max_batches_per_epoch=2), SUMMARY) is None
    assert reference_line(TrainConfig(task="mnist1d-blind"), SUMMARY) is None
