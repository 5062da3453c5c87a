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


def test_no_reference_line_outside_the_measured_conditions() -> None:
    assert reference_line(TrainConfig(controller="static"), SUMMARY) is None
    assert reference_line(TrainConfig(host_overrides={"widths": [8, 16, 16]}), SUMMARY) is None
    assert reference_line(TrainConfig(epochs=3), SUMMARY) is None
    assert reference_line(TrainConfig(heuristic={"min_epoch_to_germinate": 4}), SUMMARY) is None
    assert reference_line(TrainConfig(max_batches_per_epoch=2), SUMMARY) is None
    assert reference_line(TrainConfig(task="mnist1d-blind"), SUMMARY) is None
