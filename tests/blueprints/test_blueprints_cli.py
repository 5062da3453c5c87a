"""`esper blueprints`: table, JSON, argument errors, and the installed console script."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from esper.blueprints import default_registry
from esper.blueprints.transformer import flex_attention_unavailable_reason
from esper.cli.blueprints_cmd import collect
from esper.cli.main import main
from esper.contracts.shapes import SlotShape


def _run_json(capsys: pytest.CaptureFixture[str], *args: str) -> dict:
    assert main(["blueprints", "--json", *args]) == 0
    return json.loads(capsys.readouterr().out)


def test_json_has_exact_counts_for_every_blueprint(capsys: pytest.CaptureFixture[str]) -> None:
    document = _run_json(capsys)
    registry = default_registry()
    assert document["width"] == 64
    cnn_rows = document["blueprints"]["cnn"]
    assert {row["name"] for row in cnn_rows} == set(registry.names("cnn"))
    for row in cnn_rows:
        assert set(row) == {"name", "description", "params_1d", "params_2d"}
        assert row["params_1d"] == registry.param_count(row["name"], SlotShape("cnn", 64, spatial_dims=1))
        assert row["params_2d"] == registry.param_count(row["name"], SlotShape("cnn", 64, spatial_dims=2))
        assert row["description"] == registry.get("cnn", row["name"]).description
    by_name = {row["name"]: row for row in cnn_rows}
    assert (by_name["conv_heavy"]["params_1d"], by_name["conv_heavy"]["params_2d"]) == (49_728, 148_032)
    assert [row["params_2d"] for row in cnn_rows] == sorted(row["params_2d"] for row in cnn_rows)

    shape = SlotShape("transformer", 64, n_heads=4)
    transformer_rows = document["blueprints"]["transformer"]
    for row in transformer_rows:
        assert set(row) == {"name", "description", "params"}
        assert row["params"] == registry.param_count(row["name"], shape)
    listed = {row["name"] for row in transformer_rows}
    unavailable = {row["name"]: row["reason"] for row in document["unavailable"]["transformer"]}
    assert listed | set(unavailable) == set(registry.names("transformer"))
    assert not listed & set(unavailable)
    if flex_attention_unavailable_reason() is not None:
        assert "backward on CPU" in unavailable["flex_attention"]
    else:
        assert "flex_attention" in listed


def test_json_at_a_small_width_reports_lora_large_as_unavailable(capsys: pytest.CaptureFixture[str]) -> None:
    document = _run_json(capsys, "--width", "16", "--heads", "2")
    assert document["width"] == 16
    unavailable = {row["name"]: row["reason"] for row in document["unavailable"]["transformer"]}
    assert "rank 32 is larger than the slot width 16" in unavailable["lora_large"]
    lora = next(row for row in document["blueprints"]["transformer"] if row["name"] == "lora")
    assert lora["params"] == 2 * 16 * 8
    assert document["unavailable"]["cnn"] == []


def test_table_output(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["blueprints", "--width", "32"]) == 0
    out = capsys.readouterr().out
    assert "cnn blueprints at 32 channels" in out
    assert "transformer blueprints at width 32, 4 heads" in out
    heavy = default_registry().param_count("conv_heavy", SlotShape("cnn", 32, spatial_dims=2))
    assert f"{heavy:,}" in out
    for name in default_registry().names("cnn"):
        assert name in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--width", "0"], "--width: expected a positive int, got 0"),
        (["--width", "-8"], "--width: expected a positive int, got -8"),
        (["--width", "10"], "--width: expected a multiple of --heads (4), got 10"),
        (["--heads", "0"], "--heads: expected a positive int, got 0"),
    ],
)
def test_bad_width_exits_2_with_a_message(
    capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    assert main(["blueprints", *args]) == 2
    captured = capsys.readouterr()
    assert message in captured.err
    assert captured.out == ""


def test_a_non_integer_width_is_an_argparse_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["blueprints", "--width", "wide"])
    assert info.value.code == 2
    assert "--width" in capsys.readouterr().err


def test_console_script() -> None:
    script = Path(sys.executable).parent / "esper"
    result = subprocess.run(
        [str(script), "blueprints", "--json"], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    # The installed command prints exactly what this process computes.
    assert document == collect(default_registry(), 64, 4)
