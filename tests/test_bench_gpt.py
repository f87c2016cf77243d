"""scripts/bench_gpt.py (``python scripts/bench.py --gpt``) and scripts/bench_attention.py on a tiny GPT: every row
they promise, with real numbers."""

import json
import runpy

import pytest

from tests.helpers import ROOT


def test_gpt_bench_reports_both_steps_the_ratio_memory_and_where_the_time_goes(tmp_path, capsys):
    bench = runpy.run_path(str(ROOT / "scripts" / "bench.py"), run_name="bench")
    out = tmp_path / "gpt.json"
    assert bench["main"](["--gpt", "--layers", "1", "--width", "16", "--heads", "2", "--block", "8", "--batch", "2",
                          "--vocab", "11", "--rounds", "1", "--no-compile", "--json", str(out)]) == 0
    row = json.loads(out.read_text())
    assert set(row["ms_per_step"]) == {"manualnet", "eager"} and all(v > 0 for v in row["ms_per_step"].values())
    assert row["speedup"]["eager"] == pytest.approx(row["ms_per_step"]["eager"] / row["ms_per_step"]["manualnet"])
    assert set(row["peak_step_mb"]) == {"manualnet", "eager"} and all(v >= 0 for v in row["peak_step_mb"].values())
    assert {"Linear", "CausalSelfAttention", "LayerNorm", "GELU", "Embedding", "CrossEntropyLoss", "AdamW",
            "other"} <= set(row["manualnet_ms_by_part"])
    text = capsys.readouterr().out
    assert "GPT 1x16, 2 heads, block 8, batch 2" in text and "x eager's speed" in text


def test_attention_bench_compares_recomputing_p_with_keeping_it_at_equal_gradients(capsys):
    bench = runpy.run_path(str(ROOT / "scripts" / "bench_attention.py"), run_name="bench_attention")
    assert bench["main"](["--layers", "1", "--width", "16", "--heads", "2", "--block", "8", "--batch", "2",
                          "--rounds", "1", "--threads", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert float(lines[0].rsplit(" ", 1)[1]) < 1e-5  # the two backward passes agree
    assert lines[1].startswith("step: p recomputed ") and "kept / recomputed: " in lines[1]
    assert lines[2].startswith("peak step memory: p recomputed ")
