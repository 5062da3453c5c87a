"""Smoke tests of `esper bench`: toy sizes, a few repeats, structure only.

No assertion here is about speed: timings on a shared test machine say
nothing. The real numbers come from running `esper bench` itself.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import json
import math
import statistics
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import esper
from esper.bench import runner
from esper.bench.machine import cpu_model, describe_machine
from esper.bench.timing import BenchSettings, PairTiming, TimingPlan, summarise, time_pair
from esper.cli import bench_cmd
from esper.cli import main as cli_main

GOAL_METRICS = (
    "dormant_overhead",
    "fossilized_overhead",
    "gpt_dormant_overhead",
    "gpt_fossilized_overhead",
    "checkpoint_save_ratio",
    "checkpoint_load_ratio",
)
ALL_METRICS = (
    *GOAL_METRICS,
    "checkpoint_save_vs_atomic_ratio",
    "checkpoint_load_vs_rebuild_ratio",
    "checkpoint_load_read_ratio",
    "checkpoint_load_then_read_all_ratio",
    "fused_counterfactual_speedup",
)
# The RL throughput suite has its own shape test (tests/rl_env/test_cli.py).
MODEL_SUITES = (
    "dormant_overhead",
    "fossilized_overhead",
    "gpt_dormant_overhead",
    "gpt_fossilized_overhead",
    "checkpoint",
    "fused_counterfactual",
)


def _parser() -> argparse.ArgumentParser:
    # The lead wires the command into COMMANDS; until then, register it on a bare parser.
    if "esper.cli.bench_cmd" in cli_main.COMMANDS:
        return cli_main.build_parser()
    parser = argparse.ArgumentParser(prog="esper")
    bench_cmd.register(parser.add_subparsers(dest="command"))
    return parser


def _run(argv: list[str]) -> int:
    args = _parser().parse_args(["bench", *argv])
    return args.func(args)


def _positive_finite(value: Any) -> bool:
    return isinstance(value, float) and math.isfinite(value) and value > 0


@pytest.fixture(scope="module")
def full_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str, Path]:
    """Every suite once, tiny and quick, with --json; shared by the structure tests."""
    out = tmp_path_factory.mktemp("bench") / "nested" / "results.json"
    stdout = io.StringIO()
    threads_before = torch.get_num_threads()
    rng_before = torch.random.get_rng_state()
    with contextlib.redirect_stdout(stdout):
        status = _run(["--quick", "--tiny", "--json", "--out", str(out), "--suite", *MODEL_SUITES])
    assert status == 0
    assert torch.get_num_threads() == threads_before
    assert torch.equal(torch.random.get_rng_state(), rng_before)
    return json.loads(stdout.getvalue()), stdout.getvalue(), out


def test_json_stdout_is_exactly_the_results_file(full_run: tuple[dict[str, Any], str, Path]) -> None:
    document, text, out = full_run
    assert json.loads(out.read_text(encoding="utf-8")) == document
    assert text.strip().startswith("{") and text.strip().endswith("}")


def test_document_header(full_run: tuple[dict[str, Any], str, Path]) -> None:
    document, _, _ = full_run
    assert document["esper_version"] == esper.__version__
    assert datetime.fromisoformat(document["created_at"]).tzinfo is not None
    machine = document["machine"]
    assert isinstance(machine["cpu_model"], str) and machine["cpu_model"]
    assert machine["torch_threads"] == 1
    assert machine["torch_version"] == str(torch.__version__)
    for key in ("logical_cores", "python_version", "os"):
        assert machine[key]
    assert document["settings"]["quick"] is True and document["settings"]["tiny"] is True
    assert document["settings"]["plan"] == {"warmup": 1, "rounds": 3, "min_sample_ms": 0.0, "clock": "cpu"}


def test_every_metric_is_a_positive_finite_number(full_run: tuple[dict[str, Any], str, Path]) -> None:
    document, _, _ = full_run
    assert list(document["results"]) == list(MODEL_SUITES)
    assert set(MODEL_SUITES) | {"rl_throughput", "distributed"} == set(runner.suite_names())
    metrics = {name: m for suite in document["results"].values() for name, m in suite.items()}
    assert sorted(metrics) == sorted(ALL_METRICS)
    for name, metric in metrics.items():
        assert document[name] == metric["value"], name
        assert _positive_finite(metric["value"]), name
        kind = metric["kind"]
        assert kind == ("speedup" if name.endswith("speedup") else "ratio")
        for case in metric["cases"].values():
            for key in ("ours_ms", "plain_ms", kind, f"{kind}_q1", f"{kind}_q3"):
                assert _positive_finite(case[key]), (name, key)
            assert case["rounds"] == 3
    for name in GOAL_METRICS:
        assert metrics[name]["goal"] is not None
        assert isinstance(metrics[name]["passed"], bool)
    # The cases the brief names are all measured.
    assert set(metrics["dormant_overhead"]["cases"]) == {"cnn1d", "cnn2d"}
    assert set(metrics["fossilized_overhead"]["cases"]) == {"cnn1d", "cnn2d"}
    assert set(metrics["gpt_dormant_overhead"]["cases"]) == {"gpt", "gpt_forward"}
    assert set(metrics["gpt_fossilized_overhead"]["cases"]) == {"gpt", "gpt_forward"}
    assert metrics["checkpoint_save_ratio"]["cases"]["cnn2d_wide"]["clock"] == "wall"


def test_default_out_and_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.chdir(tmp_path)
    assert _run(["--quick", "--tiny", "--suite", "dormant_overhead"]) == 0
    printed = capsys.readouterr()
    assert "dormant_overhead" in printed.out and "goal" in printed.out
    assert "results written to" in printed.err
    document = json.loads((tmp_path / "benchmarks" / "results.json").read_text(encoding="utf-8"))
    assert list(document["results"]) == ["dormant_overhead"]
    assert _positive_finite(document["dormant_overhead"])
    assert "fossilized_overhead" not in document


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--threads", "0"], "--threads: expected an int >= 1, got 0"),
        (["--threads", "2"], "--clock cpu needs --threads 1"),
    ],
)
def test_bad_arguments(argv: list[str], message: str, capsys: pytest.CaptureFixture) -> None:
    assert _run(argv) == 2
    assert message in capsys.readouterr().err


def test_out_must_not_be_a_directory(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert _run(["--out", str(tmp_path)]) == 2
    assert f"--out: expected a file path, got the directory {tmp_path}" in capsys.readouterr().err


def test_unknown_suite_is_refused_by_the_parser(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        _run(["--suite", "no_such_suite"])
    assert exit_info.value.code == 2
    assert "no_such_suite" in capsys.readouterr().err


# ------------------------------------------------------------- runner API
def _fake_timing(ours: float, plain: float) -> PairTiming:
    return PairTiming(ours_ms=(ours,) * 3, plain_ms=(plain,) * 3, calls=1, warmup=0, clock="cpu")


def _fake_suite(_: BenchSettings) -> dict[str, dict[str, Any]]:
    cases = {"only": ("fake", _fake_timing(3.0, 2.0))}
    return {"fake_ratio": summarise(cases, kind="ratio", goal=2.0, definition="x")}


def test_a_suite_is_a_function_in_the_tuple() -> None:
    suites = (runner.Suite("fake", _fake_suite, "a registered function"),)
    document = runner.run_benchmarks(quick=True, suites=suites)
    assert document["fake_ratio"] == 1.5
    assert document["results"]["fake"]["fake_ratio"]["passed"] is True


def test_runner_refuses_reserved_metric_names_and_unknown_suites() -> None:
    def clashing(_: BenchSettings) -> dict[str, dict[str, Any]]:
        return {"machine": _fake_suite(_)["fake_ratio"]}

    with pytest.raises(ValueError, match="metric name 'machine' is reserved"):
        runner.run_benchmarks(quick=True, suites=(runner.Suite("clash", clashing, "bad"),))
    with pytest.raises(ValueError, match=r"unknown suite\(s\) \['nope'\]; available: dormant_overhead"):
        runner.run_benchmarks(["nope"], quick=True)
    with pytest.raises(ValueError, match="clock 'cpu' needs threads=1"):
        runner.run_benchmarks(quick=True, threads=2, suites=())


# ------------------------------------------------------------- timing helper
def test_time_pair_interleaves_after_warmup_with_gc_off() -> None:
    order: list[str] = []
    gc_states: list[bool] = []

    def contender(name: str) -> None:
        order.append(name)
        gc_states.append(gc.isenabled())

    plan = TimingPlan(warmup=2, rounds=4, min_sample_ms=0.0)
    timing = time_pair(lambda: contender("A"), lambda: contender("B"), plan)
    assert order == ["A", "B"] * 2 + ["A", "B", "B", "A", "A", "B", "B", "A"]
    assert gc_states and not any(gc_states)
    assert gc.isenabled()
    assert len(timing.ours_ms) == len(timing.plain_ms) == 4 and timing.calls == 1


def test_time_pair_calibrates_calls_per_sample() -> None:
    counts = {"A": 0, "B": 0}

    def bump(name: str) -> None:
        counts[name] += 1

    plan = TimingPlan(warmup=1, rounds=3, min_sample_ms=0.5)
    timing = time_pair(lambda: bump("A"), lambda: bump("B"), plan)
    assert timing.calls > 1  # a no-op call is far shorter than 0.5 ms
    assert counts["A"] == counts["B"] == 1 + 3 + 3 * timing.calls


@pytest.mark.parametrize(
    ("field", "kwargs"),
    [
        ("warmup", {"warmup": -1, "rounds": 1, "min_sample_ms": 0.0}),
        ("rounds", {"warmup": 0, "rounds": 0, "min_sample_ms": 0.0}),
        ("min_sample_ms", {"warmup": 0, "rounds": 1, "min_sample_ms": math.inf}),
        ("clock", {"warmup": 0, "rounds": 1, "min_sample_ms": 0.0, "clock": "sundial"}),
    ],
)
def test_timing_plan_names_the_bad_field(field: str, kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=f"TimingPlan.{field}: expected"):
        TimingPlan(**kwargs)


def test_summarise_reports_the_worst_case() -> None:
    cases = {"fast": ("a", _fake_timing(1.0, 1.0)), "slow": ("b", _fake_timing(3.0, 2.0))}
    ratio = summarise(cases, kind="ratio", goal=1.2, definition="x")
    assert ratio["value"] == 1.5 and ratio["passed"] is False
    assert ratio["cases"]["fast"]["passed"] is True and ratio["cases"]["slow"]["passed"] is False
    speedup = summarise(cases, kind="speedup", goal=None, definition="x")
    assert speedup["value"] == pytest.approx(2.0 / 3.0) and speedup["passed"] is None


@settings(max_examples=50, deadline=None)
@given(
    st.lists(
        st.tuples(st.floats(1e-3, 1e3), st.floats(1e-3, 1e3)),
        min_size=1,
        max_size=15,
    )
)
def test_summary_median_lies_within_its_quartiles(pairs: list[tuple[float, float]]) -> None:
    ours, plain = tuple(o for o, _ in pairs), tuple(p for _, p in pairs)
    timing = PairTiming(ours_ms=ours, plain_ms=plain, calls=1, warmup=0, clock="wall")
    for kind in ("ratio", "speedup"):
        summary = timing.summary(kind)
        per_round = timing.per_round(kind)
        median = summary[kind]
        assert min(per_round) <= median <= max(per_round)
        # Quartiles interpolate differently from the median: allow rounding in the last bits.
        slack = 1e-12 * median
        assert summary[f"{kind}_q1"] <= median + slack
        assert median <= summary[f"{kind}_q3"] + slack
        assert summary["ours_ms"] == statistics.median(ours)
        assert summary["plain_ms"] == statistics.median(plain)


# ------------------------------------------------------------------ machine
def test_cpu_model_reads_x86_and_arm_cpuinfo(tmp_path: Path) -> None:
    x86 = tmp_path / "x86"
    x86.write_text("processor\t: 0\nmodel name\t: Example CPU @ 2.0GHz\n\nprocessor\t: 1\nmodel name\t: B\n")
    assert cpu_model(x86) == "Example CPU @ 2.0GHz"
    arm = tmp_path / "arm"
    arm.write_text("processor\t: 0\nBogoMIPS\t: 50.00\n\nHardware\t: Example SoC\n")
    assert cpu_model(arm) == "Example SoC"


def test_describe_machine_is_json_ready() -> None:
    machine = describe_machine()
    assert json.loads(json.dumps(machine)) == machine
    assert machine["torch_threads"] == torch.get_num_threads()
