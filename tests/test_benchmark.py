"""scripts/benchmark.py in a tiny configuration: every section it runs writes positive figures to the JSON, and
the optional comparisons (transformers, local-attention) are skipped with a recorded reason when missing."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "benchmark.py"

TINY = [
    "--quick",
    "--threads=1",
    "--batch=2",
    "--seq-len=16",
    "--dim=32",
    "--layers=1",
    "--heads=2",
    "--vocab=300",
    "--warmup=1",
    "--steps=2",
    "--encoders=cnn",
    "--local-n=64,128",
    "--local-window=16",
    "--local-heads=2",
    "--local-head-dim=8",
    "--local-rounds=1",
    "--matmul-repeats=1",
]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("attnfit_benchmark_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


def _positive(data: dict, keys: list[str]) -> None:
    for key in keys:
        assert key in data, f"missing {key}"
        value = data[key]
        assert isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0, f"{key}={value!r}"


def test_train_and_local_skip_missing_optional_packages(bench, tmp_path, monkeypatch):
    import torch

    def import_module(name: str):  # the optional packages fail to import, as when not installed
        if name in ("transformers", "local_attention"):
            raise ModuleNotFoundError(f"No module named {name!r}")
        return importlib.import_module(name)

    monkeypatch.setattr(bench, "importlib", SimpleNamespace(import_module=import_module))
    threads = torch.get_num_threads()
    out = tmp_path / "bench.json"
    try:
        bench.main([*TINY, "--sections=train,local", f"--json={out}"])
    finally:
        torch.set_num_threads(threads)
    data = json.loads(out.read_text())
    _positive(
        data,
        [
            "cpu_count",
            "threads",
            "matmul_gflops",
            "train_flops_per_token",
            "train_tokens_per_s_attnfit",
            "train_tokens_per_s_plain",
            "train_step_ms_attnfit",
            "train_ratio_vs_plain",
            "mfu",
            "mfu_plain",
            "train_tokens_per_s_cnn",
            "local_attnfit_ms_64",
            "local_attnfit_ms_128",
            "local_dense_ms_128",
            "local_attnfit_peak_mb_128",
            "local_dense_peak_mb_128",
            "local_speedup_vs_dense_128",
            "local_time_linearity_attnfit",
            "local_memory_linearity_attnfit",
        ],
    )
    assert data["train_params_attnfit"] == data["train_params_plain"]  # the same model in both stacks
    assert "transformers" in data["train_hf_skipped"]
    assert "local_attention" in data["local_package_skipped"]
    assert "train_ratio_vs_hf" not in data and "local_ratio_vs_package_128" not in data
    assert data["target_train_ratio_vs_hf"] is None  # not measured is neither met nor missed
    assert data["torch_version"] == torch.__version__


def test_data_section_on_a_tiny_corpus(bench, tmp_path):
    words = ["the", "cat", "sat", "on", "a", "mat", "while", "some", "dogs", "ran", "far", "away", "from", "home"]
    lines = [" ".join(words[(i * 7 + j) % len(words)] for j in range(5 + i % 20)) for i in range(400)]
    train, valid = tmp_path / "train.txt", tmp_path / "valid.txt"
    train.write_text("\n".join(lines[:350]) + "\n")
    valid.write_text("\n".join(lines[350:]) + "\n")
    out = tmp_path / "bench.json"
    bench.main([*TINY, "--sections=data", f"--data-train={train}", f"--data-validation={valid}", f"--json={out}"])
    data = json.loads(out.read_text())
    _positive(
        data,
        [
            "data_tokens",
            "data_pipeline_tokens_per_s",
            "data_raw_tokens_per_s",
            "pipeline_ratio_vs_raw_tokenizer",
            "cached_rerun_s",
            "data_tokenizer_train_s",
        ],
    )
    assert data["data_lines"] == 400


def test_data_section_skipped_without_data(bench, tmp_path):
    out = tmp_path / "bench.json"
    bench.main([*TINY, "--sections=data", f"--data-dir={tmp_path / 'absent'}", f"--json={out}"])
    data = json.loads(out.read_text())
    assert "not found" in data["data_skipped"]
    assert data["target_pipeline_ratio_vs_raw_tokenizer"] is None
