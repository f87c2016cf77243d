"""A character-level text data set: any UTF-8 file, cut into context windows of ``block_size`` characters.

The text is split by position (train the first part, val and test the last parts, so no window straddles
two splits), each character is a token of a vocabulary made of the characters the whole text uses (sorted,
saved with the run), and each split is sampled as random windows: x = text[i : i + T], y = text[i+1 : i+T+1].
Without ``path``, the corpus is the Python standard library's own source (``stdlib_corpus``), which every
machine with Python has: a run needs no download.
"""

import json
import math
import sysconfig
from pathlib import Path

import torch

from manualnet.data.base import DATASETS, Arrays
from manualnet.errors import DataError
from manualnet.files import write_text
from manualnet.names import COMMON_KEYS
from manualnet.registry import expect, is_count, is_size, refuse

# A fixed list of standard-library modules present from Python 3.10 on, about 2 MB of code and docstrings.
STDLIB_FILES = (
    "argparse.py", "ast.py", "bisect.py", "calendar.py", "collections/__init__.py", "configparser.py",
    "contextlib.py", "copy.py", "csv.py", "dataclasses.py", "datetime.py", "difflib.py", "enum.py",
    "fractions.py", "ftplib.py", "functools.py", "gettext.py", "heapq.py", "imaplib.py", "inspect.py",
    "ipaddress.py", "json/decoder.py", "json/encoder.py", "logging/__init__.py", "mailbox.py", "os.py",
    "pickle.py", "pprint.py", "random.py", "shutil.py", "smtplib.py", "statistics.py", "string.py",
    "subprocess.py", "tarfile.py", "textwrap.py", "threading.py", "tokenize.py", "traceback.py", "typing.py",
    "unittest/case.py", "uuid.py", "warnings.py",
)
VOCAB_FILE = "vocab.json"


@DATASETS.register("text")
def text(path: str | None = None, block_size: int = 128, windows: int = 20000, val_windows: int = 512,
         val_fraction: float = COMMON_KEYS["val_fraction"], test_fraction: float = COMMON_KEYS["test_fraction"], *,
         generator: torch.Generator | None = None) -> Arrays:
    """x, y: (windows, block_size) token ids, y the next character of each x; val and test: (val_windows,
    block_size) each, from the text's last val_fraction and test_fraction. ``classes`` is the vocabulary."""
    counts = {"block_size": block_size, "windows": windows, "val_windows": val_windows}
    refuse(text, counts, _problems(counts), DataError)
    corpus = read_text(path) if path else stdlib_corpus()
    vocab = sorted(set(corpus))
    ids = encode(corpus, {ch: i for i, ch in enumerate(vocab)})
    n_val, n_test = math.floor(val_fraction * len(ids)), math.floor(test_fraction * len(ids))
    parts = {"train": ids[:len(ids) - n_val - n_test], "val": ids[len(ids) - n_val - n_test:len(ids) - n_test],
             "test": ids[len(ids) - n_test:]}
    for name, part in parts.items():
        wanted = {"train": windows, "val": val_windows * bool(n_val), "test": val_windows * bool(n_test)}[name]
        if wanted and len(part) <= block_size:
            raise DataError(f"text: the {name} part holds {len(part)} characters, too few for one window of "
                            f"block_size {block_size} (and its next character); use a longer text or a smaller "
                            "block_size")
    train_x, train_y = sample_windows(parts["train"], block_size, windows, generator)
    return Arrays(train_x, train_y, "classification", len(vocab), classes=vocab,
                  baseline={"unigram_entropy": unigram_entropy(ids, len(vocab))},
                  val=sample_windows(parts["val"], block_size, val_windows if n_val else 0, generator),
                  test=sample_windows(parts["test"], block_size, val_windows if n_test else 0, generator))


def _problems(args):
    """The ranges of ``text``'s counts (see ``registry.refuse``)."""
    return (expect(args, "block_size", is_count, "a whole number >= 1") + expect(args, "windows", is_count,
            "a whole number >= 1") + expect(args, "val_windows", is_size, "a whole number >= 0"))


text.problems = _problems


def sample_windows(ids, block_size, count, generator):
    """(x, y), each (count, block_size): windows at random starts i, x = ids[i:i+T], y = ids[i+1:i+T+1]."""
    starts = torch.randint(0, max(len(ids) - block_size, 1), (count,), generator=generator)
    rows = starts.unsqueeze(1) + torch.arange(block_size + 1)     # (count, T + 1) positions
    windows = ids[rows] if count else torch.zeros(0, block_size + 1, dtype=torch.long)
    return windows[:, :-1].contiguous(), windows[:, 1:].contiguous()


def read_text(path):
    file = Path(path)
    try:
        if file.exists() and not (file.is_file() or file.is_dir()):  # /dev/zero never ends
            raise DataError(f"data.path: {path} is not a regular file (a device or a pipe); expected a UTF-8 text file")
        return file.read_text(encoding="utf-8")
    except MemoryError:
        raise DataError(f"data.path: {path} does not fit in memory ({file.stat().st_size / 2**20:.0f} MB); "
                        "a text data set is read whole") from None
    except FileNotFoundError:
        raise DataError(f"data.path: {path} does not exist") from None
    except UnicodeDecodeError as e:
        raise DataError(f"data.path: {path} is not UTF-8 text ({e.reason} at byte {e.start})") from None
    except IsADirectoryError:
        raise DataError(f"data.path: {path} is a directory; expected a UTF-8 text file") from None
    except OSError as e:
        raise DataError(f"data.path: {path} cannot be read: {e.strerror or e}") from None


def stdlib_corpus():
    """The files of STDLIB_FILES this Python has, in that order, joined by blank lines."""
    root = Path(sysconfig.get_paths()["stdlib"])
    found = [root / name for name in STDLIB_FILES if (root / name).is_file()]
    if not found:
        raise DataError(f"text: none of the standard library files the default corpus reads are under {root}; "
                        "give data.path")
    return "\n\n".join(p.read_text(encoding="utf-8") for p in found)


def encode(text, index):
    """Token ids (a long tensor) of ``text``; ``index`` maps character -> id."""
    try:
        return torch.tensor([index[ch] for ch in text], dtype=torch.long)
    except KeyError as e:
        raise DataError(f"the character {e.args[0]!r} is not in the vocabulary") from None


def unigram_entropy(ids, vocab_size):
    """The entropy (nats) of the characters' frequencies: the loss of a model that ignores all context."""
    p = torch.bincount(ids.reshape(-1), minlength=vocab_size).double()
    p = p[p > 0] / p.sum()
    return -(p * p.log()).sum().item()


def save_vocabulary(run_dir, vocab):
    write_text(Path(run_dir) / VOCAB_FILE, json.dumps(vocab, ensure_ascii=False) + "\n")  # a full disk names it


def check_vocabulary(run_dir, vocab):
    """Refuse a text whose vocabulary is not the run's ``vocab.json``: its token ids would stand for other
    characters than the ones the run's embeddings learned."""
    saved = load_vocabulary(run_dir)
    if saved != list(vocab):
        changed = sorted(set(saved) ^ set(vocab))
        raise DataError(f"data: the text's vocabulary ({len(vocab)} characters) is not the run's {VOCAB_FILE} "
                        f"({len(saved)}){'; differing: ' + ', '.join(map(repr, changed[:10])) if changed else ''}: "
                        "the text changed since the run trained on it; restore it, or train a new run")


def load_vocabulary(run_dir):
    path = Path(run_dir) / VOCAB_FILE
    if not path.is_file():
        raise DataError(f"{run_dir}: no {VOCAB_FILE} (was the run trained on a text data set?)")
    try:
        vocab = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, OSError) as e:  # not UTF-8, not JSON, unreadable
        raise DataError(f"{path}: not a vocabulary the run wrote ({e})") from None
    if not (isinstance(vocab, list) and vocab and all(isinstance(c, str) and len(c) == 1 for c in vocab)):
        raise DataError(f"{path}: not a vocabulary the run wrote (a JSON list of single characters)")
    return vocab
