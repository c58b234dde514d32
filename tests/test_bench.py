"""python -m attnlib.bench: a smoke test at a tiny size (every key, sane values), its table, its errors.

The real run (`python -m attnlib.bench --quick`) is not part of the tests: timings are not asserted here.
"""

import json

import pytest
import torch

from attnlib import bench

KEYS = ("sdpa_vs_torch", "sdpa_causal_vs_torch", "sdpa_padding_vs_torch", "naive_vs_fused", "mha_vs_torch",
        "kv_cache_speedup", "gpt_train_tokens_per_s", "attention_peak_bytes")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        path = tmp_path_factory.mktemp("bench") / "bench.json"
        assert bench.main(["--tiny", "--json", str(path), "--no-progress", "--device", "cpu"]) == 0
        return json.loads(path.read_text())
    finally:
        torch.set_num_threads(threads)


def test_tiny_run_writes_every_key_the_issue_lists(tiny):
    for key in KEYS:
        assert key in tiny, key
    for key in KEYS[:-1]:
        assert isinstance(tiny[key], float) and tiny[key] > 0, (key, tiny[key])
    assert tiny["machine"]["device"] == "cpu" and tiny["machine"]["size"] == "tiny"
    assert "gpt_mfu" not in tiny and "sdpa_flash_vs_math" not in tiny  # CUDA only
    assert tiny["gpt_train_tokens_per_s_minimal"] > 0 and tiny["gpt_train_tokens_per_s_plain"] > 0


def test_peak_bytes_grow_like_the_score_matrix_for_the_naive_path_only(tiny):
    peaks = tiny["attention_peak_bytes"]
    short, long = peaks["16"], peaks["32"]
    assert set(short) == {"naive", "tiled", "fused"}
    assert long["naive"] >= 8 * 32 * 32 * 4  # the (1, 8, 32, 32) float32 weights, at least
    assert long["fused"] / short["fused"] < 2.2  # L × 2: bytes × 2 (the output)
    assert long["naive"] / short["naive"] > long["fused"] / short["fused"] + 0.5  # the L² weights show, even this small


def test_table_lists_the_figures_and_goals(tiny, capsys):
    table = bench.format_table(tiny)
    assert table.startswith("| benchmark | result | goal | met | what |")
    for key in KEYS:
        assert f"`{key}`" in table
    assert "<= 1.05" in table and ">= 5" in table


def test_bad_arguments_are_explained(capsys):
    with pytest.raises(ValueError, match="size must be one of"):
        bench.run(size="huge")
    with pytest.raises(ValueError, match="only names unknown benchmarks"):
        bench.run(size="tiny", only=("sdpa", "warp"))
    threads = torch.get_num_threads()
    assert bench.main(["--tiny", "--threads", "0", "--no-progress"]) == 2
    assert "--threads must be >= 1" in capsys.readouterr().err
    assert torch.get_num_threads() == threads  # the caller's setting is restored
    if not torch.cuda.is_available():
        assert bench.main(["--tiny", "--device", "cuda", "--no-progress"]) == 2
        assert "torch.cuda.is_available() is False" in capsys.readouterr().err
