"""The character-level language model end to end: the text data set, the run's vocabulary, the summary's
perplexity and baseline, TensorBoard's attention entropies and samples, and ``manualnet sample``."""

import math

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from manualnet.cli.main import main
from manualnet.data import load_dataset
from manualnet.data.text import stdlib_corpus, unigram_entropy
from manualnet.errors import DataError
from tests.helpers import config_path, run_cli, start_cli, summary

TEXT = "the cat sat on the mat. " * 40 + "a dog ran far. " * 20


def text_file(tmp_path, content=TEXT):
    path = tmp_path / "corpus.txt"
    path.write_text(content, encoding="utf-8")
    return path


def text_data(tmp_path, seed=0, **keys):
    spec = {"dataset": "text", "path": str(text_file(tmp_path)), "block_size": 8, "windows": 50, "val_windows": 10,
            "val_fraction": 0.25, "test_fraction": 0.0, **keys}
    return load_dataset(spec, seed=seed)


def decode(data, ids):
    return "".join(data.classes[i] for i in ids.tolist())


def test_text_windows_are_token_ids_whose_targets_are_the_next_characters(tmp_path):
    data = text_data(tmp_path)
    assert data.x_train.dtype == torch.long and data.x_train.shape == (50, 8) and data.x_val.shape == (10, 8)
    assert data.classes == sorted(set(TEXT)) and data.num_classes == len(set(TEXT))
    assert torch.equal(data.x_train[:, 1:], data.y_train[:, :-1])
    for x, y in zip(data.x_train[:5], data.y_train[:5], strict=True):
        assert decode(data, x) + decode(data, y)[-1] in TEXT
    assert data.inferred_sizes() == {"vocab_size": len(set(TEXT)), "block_size": 8}


def test_text_splits_by_position_so_val_comes_from_the_end(tmp_path):
    data = text_data(tmp_path)   # the last quarter of TEXT is 'a dog ran far. ' repeated
    assert all(decode(data, x) in "a dog ran far. " * 3 for x in data.x_val)
    assert not any("cat" in decode(data, x) for x in data.x_val)


def test_text_windows_are_seeded(tmp_path):
    assert torch.equal(text_data(tmp_path, seed=3).x_train, text_data(tmp_path, seed=3).x_train)
    assert not torch.equal(text_data(tmp_path, seed=3).x_train, text_data(tmp_path, seed=4).x_train)


def test_text_too_short_for_a_window_names_the_part_and_the_sizes(tmp_path):
    with pytest.raises(DataError, match=r"the val part holds 9 characters, too few for one window of block_size 16"):
        load_dataset({"dataset": "text", "path": str(text_file(tmp_path, "x" * 90)), "block_size": 16,
                      "val_fraction": 0.1, "test_fraction": 0.0})


def test_unigram_entropy_of_two_equally_common_characters_is_log_2():
    assert unigram_entropy(torch.tensor([0, 1, 1, 0, 0, 1]), 3) == pytest.approx(math.log(2), abs=1e-12)


def test_default_corpus_is_the_standard_librarys_source_read_the_same_every_time():
    corpus = stdlib_corpus()
    assert len(corpus) > 1_000_000 and "def " in corpus and corpus == stdlib_corpus()


def train_tiny(tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text(f"""name: tiny-lm
seed: 0
data: {{dataset: text, path: {text_file(tmp_path)}, block_size: 16, windows: 256, val_windows: 16,
        val_fraction: 0.2, test_fraction: 0.0}}
model: [{{type: GPT, n_layer: 1, n_head: 2, n_embd: 16}}]
loss: {{type: CrossEntropyLoss}}
optim: {{type: AdamW, lr: 1.0e-2}}
train: {{epochs: 2, batch_size: 32}}
log: {{every: 4, histograms_every: 0}}
""")
    run_dir = tmp_path / "run"
    result = run_cli("train", "--config", config, "--run-dir", run_dir, "--quiet")
    assert result.returncode == 0, result.stderr
    return run_dir


def test_a_language_model_run_keeps_its_vocabulary_and_reports_perplexity_and_the_unigram_baseline(tmp_path, capsys):
    run_dir = train_tiny(tmp_path)
    result = summary(run_dir)
    assert result["val/perplexity"] == pytest.approx(math.exp(result["val/loss"]), rel=1e-9)
    assert main(["eval", "--run", str(run_dir)]) == 0
    shown = dict(line.split() for line in capsys.readouterr().out.splitlines())
    assert float(shown["val/perplexity"]) == pytest.approx(math.exp(float(shown["val/loss"])), rel=1e-3)
    freq = torch.tensor([TEXT.count(c) for c in sorted(set(TEXT))], dtype=torch.float64) / len(TEXT)
    assert result["unigram_entropy"] == pytest.approx(-(freq * freq.log()).sum().item())
    assert (run_dir / "vocab.json").read_text(encoding="utf-8").strip() == str(sorted(set(TEXT))).replace("'", '"')
    events = EventAccumulator(str(run_dir), size_guidance={"tensors": 0})
    events.Reload()
    entropies = events.Scalars("attention_entropy/0.blocks.0.attn")
    assert [e.step for e in entropies] == [8, 16]                  # each evaluation: 256 / 32 = 8 steps an epoch
    assert all(0 < e.value <= math.log(16) for e in entropies)     # at most a row spread over all 16 positions
    assert [e.step for e in events.Tensors("sample/text_summary")] == [8, 16]

    sampled = run_cli("sample", "--run", run_dir, "--prompt", "the ", "--tokens", 30, "--top-k", 3, "--seed", 1)
    again = run_cli("sample", "--run", run_dir, "--prompt", "the ", "--tokens", 30, "--top-k", 3, "--seed", 1)
    assert sampled.returncode == 0, sampled.stderr
    text = sampled.stdout.rstrip("\n")
    assert text.startswith("the ") and len(text) == 34 and set(text) <= set(TEXT) and sampled.stdout == again.stdout
    (tmp_path / "corpus.txt").rename(tmp_path / "moved.txt")  # the run dir alone is enough: its data may be gone
    moved = run_cli("sample", "--run", run_dir, "--prompt", "the ", "--tokens", 30, "--top-k", 3, "--seed", 1)
    assert moved.returncode == 0 and moved.stdout == sampled.stdout, moved.stderr
    streamed = start_cli("sample", "--run", run_dir, "--prompt", "the ", "--tokens", 10**6)  # hours if drawn whole
    assert streamed.stdout.read(8).startswith("the ")  # the text shows as it is drawn
    streamed.stdout.close()  # as `| head` does: the next character finds no reader
    assert streamed.wait(timeout=60) == 0 and "Traceback" not in streamed.stderr.read()

    bad = run_cli("sample", "--run", run_dir, "--prompt", "THE")
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [
        f"manualnet: error: --prompt: 'E', 'H', 'T' not in the run's vocabulary of {len(set(TEXT))} characters "
        f"({run_dir / 'vocab.json'})"]
    for option, value, line in (("--tokens", "-5", "--tokens must be >= 0, got -5"),
                                ("--temperature", "0", "--temperature must be a finite number >= 0.001 (for the "
                                 "likeliest character every time, use --top-k 1), got 0.0"),
                                ("--temperature", "nan", "--temperature must be a finite number >= 0.001 (for the "
                                 "likeliest character every time, use --top-k 1), got nan"),
                                ("--seed", str(2**70), f"--seed must be from -2**63 to 2**64 - 1, got {2**70}"),
                                ("--seed", str(-2**63 - 1), f"--seed must be from -2**63 to 2**64 - 1, got "
                                 f"{-2**63 - 1}"),
                                ("--top-k", "0", "--top-k must be >= 1, got 0")):
        assert main(["sample", "--run", str(run_dir), option, value]) == 2
        assert capsys.readouterr().err.splitlines() == [f"manualnet: error: {line}"]
    assert main(["sample", "--run", str(run_dir), "--tokens", "5", "--seed", "-3"]) == 0  # as a config's seed may be
    capsys.readouterr()
    for garbage in ("garbage", "[1, 2]"):  # a vocab.json the run did not write
        (run_dir / "vocab.json").write_text(garbage, encoding="utf-8")
        assert main(["sample", "--run", str(run_dir)]) == 2
        assert "vocab.json: not a vocabulary the run wrote" in capsys.readouterr().err


@pytest.mark.slow
def test_charlm_config_ends_at_least_40_percent_below_the_unigram_baseline(tmp_path):
    result = run_cli("train", "--config", config_path("charlm"), "--run-dir", tmp_path / "run", "--quiet",
                     timeout=3600)
    assert result.returncode == 0, result.stderr
    final = summary(tmp_path / "run")
    assert final["val/loss"] <= 0.6 * final["unigram_entropy"], final


def test_a_resume_or_eval_on_a_text_whose_vocabulary_changed_is_refused(tmp_path):
    run_dir = train_tiny(tmp_path)
    vocab = (run_dir / "vocab.json").read_text(encoding="utf-8")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(TEXT.replace("e", "\u00c6"), encoding="utf-8")  # as many characters, one of them another
    for command in (["train", "--resume", run_dir, "--set", "train.epochs=3", "--quiet"], ["eval", "--run", run_dir]):
        refused = run_cli(*command)
        assert refused.returncode == 2, refused.stderr
        assert "the text changed since the run trained on it" in refused.stderr and "'e'" in refused.stderr
    assert (run_dir / "vocab.json").read_text(encoding="utf-8") == vocab  # not rewritten
    assert "epochs: 2" in (run_dir / "config.yaml").read_text()  # nor the --set of the refused resume
    corpus.write_text(TEXT, encoding="utf-8")
    resumed = run_cli("train", "--resume", run_dir, "--set", "train.epochs=3", "--quiet")
    assert resumed.returncode == 0, resumed.stderr
