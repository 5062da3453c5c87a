"""Checkpoints are written without tensor CRCs but stay valid zip archives everywhere we read them.

torch.load (in this process and a fresh one) and the audit read them; Python's
zipfile reads every record that is not tensor data without a CRC complaint.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from esper.checkpoints import audit_file, save_model, zip_crc
from esper.checkpoints.atomic import atomic_torch_save
from esper.checkpoints.self_test import TINY_HOSTS, staged_model
from esper.contracts.alpha import AlphaAlgorithm
from esper.contracts.stages import SeedStage


def tensor_records(archive: zipfile.ZipFile) -> list[zipfile.ZipInfo]:
    return [info for info in archive.infolist() if zip_crc._TENSOR_RECORD.fullmatch(info.filename)]


def other_records(archive: zipfile.ZipFile) -> list[zipfile.ZipInfo]:
    return [info for info in archive.infolist() if not zip_crc._TENSOR_RECORD.fullmatch(info.filename)]


def test_a_model_checkpoint_has_real_crcs_except_for_tensor_data(tmp_path: Path) -> None:
    path = tmp_path / "m.pt"
    save_model(staged_model(TINY_HOSTS[1], SeedStage.BLENDING, AlphaAlgorithm.GATE), path)
    with zipfile.ZipFile(path) as archive:
        others = other_records(archive)
        assert {info.filename.split("/", 1)[1] for info in others} >= {"data.pkl", "byteorder", "version"}
        for info in others:
            assert archive.read(info) is not None  # zipfile checks the CRC while reading
            assert info.CRC != 0
        tensors = tensor_records(archive)
        assert tensors and all(info.CRC == 0 for info in tensors)
    assert audit_file(path).compatible


@st.composite
def payloads(draw: st.DrawFn) -> dict[str, Any]:
    shapes = st.lists(st.integers(0, 5), max_size=3)
    tensors = draw(st.lists(shapes.map(lambda shape: torch.randn(shape)), min_size=0, max_size=5))
    texts = draw(st.lists(st.text(max_size=30), max_size=4))
    payload: dict[str, Any] = {f"t{index}": tensor for index, tensor in enumerate(tensors)}
    payload["texts"] = texts
    payload["numbers"] = draw(st.lists(st.floats(allow_nan=False) | st.integers(-(2**40), 2**40), max_size=6))
    if tensors:
        payload["alias"] = tensors[0]  # stored once, like a tied weight
    return payload


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payload=payloads())
def test_any_payload_round_trips_with_valid_non_tensor_crcs(payload: dict[str, Any], tmp_path: Path) -> None:
    path = tmp_path / "p.pt"
    atomic_torch_save(payload, path)
    loaded = torch.load(path, weights_only=True, mmap=True)
    assert loaded.keys() == payload.keys()
    for key, value in payload.items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(loaded[key], value)
        else:
            assert loaded[key] == value
    with zipfile.ZipFile(path) as archive:
        for info in other_records(archive):
            archive.read(info)


def test_an_unexpected_layout_is_written_again_with_every_crc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(zip_crc, "_crc_patches", lambda handle: None)
    path = tmp_path / "p.pt"
    atomic_torch_save({"w": torch.arange(1000.0), "name": "x"}, path)
    with zipfile.ZipFile(path) as archive:
        assert archive.testzip() is None  # every record, tensors included, has its CRC
        assert all(info.CRC != 0 for info in tensor_records(archive))
    assert torch.equal(torch.load(path, weights_only=True)["w"], torch.arange(1000.0))


def test_a_layout_without_data_descriptors_is_not_patched() -> None:
    # A plain zipfile archive has no data descriptors: there is nothing we know how to patch.
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("archive/data.pkl", b"abc")
    assert zip_crc._crc_patches(buffer) is None


def test_the_crc_option_is_restored_even_when_saving_fails() -> None:
    assert torch.serialization.get_crc32_options() is True

    class Unpicklable:
        def __reduce__(self) -> tuple[object, ...]:
            raise RuntimeError("refusing to pickle")

    with pytest.raises(RuntimeError, match="refusing to pickle"):
        zip_crc.save_without_tensor_crcs({"bad": Unpicklable()}, io.BytesIO())
    assert torch.serialization.get_crc32_options() is True
    buffer = io.BytesIO()
    zip_crc.save_without_tensor_crcs({"w": torch.ones(3)}, buffer)
    assert torch.serialization.get_crc32_options() is True
    buffer.seek(0)
    assert torch.equal(torch.load(buffer, weights_only=True)["w"], torch.ones(3))
