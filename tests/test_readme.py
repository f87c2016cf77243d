"""README.md and docs/*.md are run, so they cannot rot.

Each document runs in a fresh working directory holding a copy of configs/ and examples/, its blocks in order:
a ``python`` block in one namespace per document, its printed output against the ``text`` block under it (no
``text`` block: it must print nothing); a ``console`` block's ``$ manualnet ...`` lines through the CLI, each
output (stderr, then stdout) against the lines shown under it ("..." stands for lines left out; a command shown
without output must only succeed). An HTML comment on the line before a block says what else it is:

- ``<!-- file: NAME -->``: written to NAME in the working directory, for the commands after it;
- ``<!-- from: PATH -->``: an excerpt of the repository's file PATH (Python: verbatim; YAML: each line is one
  of the file's), checked to be one and not run again;
- ``<!-- not run: WHY -->``: skipped, for a reason the reader sees too (it installs, trains for minutes, needs
  files or hardware the tests do not have). Kept few: ``MOST_NOT_RUN``.

Other blocks: ``yaml`` must parse, ``json`` under a command is the first row of its ``--json`` file, ``text``
and ``json`` elsewhere must be marked. Measured numbers in a verify table (a max diff such as 1.39e-17) may
differ from one machine to another, so they are compared by size: both at float64's rounding level (1e-12 or
less), or of the same sign within a factor of 100. A ``train`` or ``eval`` command's numbers (losses, times,
rates) may be any number, and a run directory ``runs/NAME/YYYYMMDD-HHMMSS`` any of that name; in a command,
such a directory stands for the newest run of that name. Every other word must be as shown.
"""

import contextlib
import io
import json
import re
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from manualnet.cli.main import main
from tests.helpers import ROOT

DOCUMENTS = ["README.md", *sorted(f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md"))]
RUN = ("python", "console")
MOST_NOT_RUN = 12  # across all documents
MEASURED = re.compile(r"-?(\d\.\d+e[-+]\d+|0)")   # how the verify tables print a difference or an error
NUMBER = re.compile(r"-?\d+(\.\d+)?(e[-+]\d+)?%?")
RUN_DIR = re.compile(r"(.*runs/[\w.-]+/)\d{8}-\d{6}")
ROUNDING = 1e-12  # float64 arithmetic's errors at this size differ with the machine's BLAS and threads


@dataclass
class Block:
    document: str
    line: int
    language: str
    body: str
    marker: str = ""   # "not run: why", "file: NAME", "from: PATH" or ""

    @property
    def name(self):
        return f"{self.document}:{self.line}"


def blocks(document):
    """The fenced blocks of ``document``, in order, each with the HTML comment on the line before it."""
    text = (ROOT / document).read_text()
    fence = re.compile(r"(?:^<!-- (?P<marker>.*?) -->\n)?^```(?P<language>\w*)\n(?P<body>.*?)^```$",
                       re.MULTILINE | re.DOTALL)
    return [Block(document, text.count("\n", 0, m.start("language")) + 1, m["language"], m["body"],
                  m["marker"] or "") for m in fence.finditer(text)]


def every_block():
    return [block for document in DOCUMENTS for block in blocks(document)]


def runs(block):
    return block.language in RUN and not block.marker.startswith(("not run:", "from:"))


# -- what counts as the same output ------------------------------------------------------------------------------

def same_line(shown, actual, loose=False):
    want, got = shown.replace("|", " ").split(), actual.replace("|", " ").split()
    return len(want) == len(got) and all(same_word(w, g, loose) for w, g in zip(want, got, strict=True))


def same_word(shown, actual, loose=False):
    if shown == actual:
        return True
    run_dirs = RUN_DIR.fullmatch(shown), RUN_DIR.fullmatch(actual)
    if all(run_dirs):
        return run_dirs[0][1] == run_dirs[1][1]
    if loose:
        return bool(NUMBER.fullmatch(shown) and NUMBER.fullmatch(actual))
    if not (MEASURED.fullmatch(shown) and MEASURED.fullmatch(actual)):
        return False
    want, got = float(shown), float(actual)
    if max(abs(want), abs(got)) <= ROUNDING:
        return True
    return want * got > 0 and max(abs(want), abs(got)) <= 100 * min(abs(want), abs(got))


def test_measured_numbers_are_compared_by_size():
    assert same_word("1.39e-17", "0") and same_word("8.25e-11", "9.10e-11")
    assert not same_word("3.47e-18", "9.00e-09") and not same_word("-1.74e-10", "1.74e-10")
    assert not same_word("8.25e-11", "8.25e-08") and not same_word("0.5", "0.6")


def test_a_training_runs_numbers_and_run_directory_may_differ():
    assert same_line("test/accuracy   0.9721", "test/accuracy   0.9666", loose=True)
    assert same_word("runs/mlp-digits/20261122-101500", "runs/mlp-digits/20261130-060252")
    assert not same_word("runs/mlp-digits/20261122-101500", "runs/spirals/20261130-060252")
    assert not same_line("test/accuracy   0.9721", "test/loss   0.9721", loose=True)
    assert not same_line("epoch 3/30", "epoch 4/30", loose=True)


def assert_shown(shown, actual, loose=False):
    """Every line of ``shown`` matches ``actual`` in order; "..." skips any number of lines."""
    at, skipping = 0, False
    for line in shown:
        if line == "...":
            skipping = True
            continue
        while skipping and at < len(actual) and not same_line(line, actual[at], loose):
            at += 1
        assert at < len(actual) and same_line(line, actual[at], loose), \
            f"the document shows\n{line}\nbut the output is\n" + "\n".join(actual)
        at, skipping = at + 1, False
    assert skipping or at == len(actual), "the output goes on after what the document shows:\n" + "\n".join(actual)


def test_assert_shown_refuses_a_changed_word_or_a_missing_line():
    actual = ["a | 1.39e-17 | True", "b | 0 | False", "PASS: all 2 checks passed"]
    assert_shown(["a | 0 | True", "...", "PASS: all 2 checks passed"], actual)
    for shown in (["a | 0 | False", "..."], ["a | 0 | True", "PASS: all 2 checks passed"],
                  ["...", "PASS: all 3 checks passed"], ["a | 0.5 | True", "..."]):
        with pytest.raises(AssertionError):
            assert_shown(shown, actual)


# -- running a document ------------------------------------------------------------------------------------------

def console_commands(body):
    """(command, the output lines shown) for each ``$ `` line of a console block."""
    found = []
    for chunk in ("\n" + body).split("\n$ ")[1:]:
        command, *output = chunk.rstrip("\n").split("\n")
        found.append((command, output))
    return found


def newest_run(word):
    """A ``runs/NAME/YYYYMMDD-HHMMSS`` argument as the newest run of NAME in the working directory."""
    match = RUN_DIR.fullmatch(word)
    if not match:
        return word
    made = sorted(Path(match[1]).glob("*"))
    assert made, f"{word}: the document runs no {match[1]} before this command"
    return str(made[-1])


def run_command(command, output, following, capsys):
    program, *args = shlex.split(command)
    if program == "python" and args[:2] == ["-m", "manualnet"]:
        program, args = "manualnet", args[2:]
    assert program == "manualnet", f"{command!r}: only manualnet commands are run; mark it <!-- not run: why -->"
    args = [newest_run(a) for a in args]
    capsys.readouterr()
    try:
        code = main(args)
    except SystemExit as stop:   # argparse's usage errors and --version
        code = stop.code or 0
    captured = capsys.readouterr()
    actual = (captured.err + captured.out).rstrip("\n").split("\n")
    if not output:
        assert code == 0, f"{command} failed:\n" + "\n".join(actual)
        return
    assert_shown(output, actual, loose=bool(args) and args[0] in ("train", "eval"))
    expected = 1 if output[-1].startswith(("FAIL", "first failure")) else \
        2 if any(" error: " in line or line.startswith("manualnet: error") for line in output) else 0
    assert code == expected, f"{command} exited with {code}:\n" + "\n".join(actual)
    if "--json" in args and following.language == "json":
        written = json.loads(Path(args[args.index("--json") + 1]).read_text())
        assert json.loads(following.body) == written["rows"][0]


def run_python(block, namespace, following):
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(block.body, block.name, "exec"), namespace)
    if following.language == "text" and not following.marker:
        assert_shown(following.body.rstrip("\n").split("\n"), printed.getvalue().rstrip("\n").split("\n"))
    else:
        assert printed.getvalue() == "", f"{block.name} prints output the document does not show"


@pytest.mark.parametrize("document", DOCUMENTS)
def test_the_documents_blocks_run_and_print_what_they_show(document, tmp_path, monkeypatch, capsys):
    for folder in ("configs", "examples"):
        shutil.copytree(ROOT / folder, tmp_path / folder)
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "__main__"}
    shown = blocks(document)
    for i, block in enumerate(shown):
        following = shown[i + 1] if i + 1 < len(shown) else Block(document, 0, "", "")
        if block.marker.startswith("file:"):
            (tmp_path / block.marker[len("file:"):].strip()).write_text(block.body)
        if not runs(block):
            continue
        if block.language == "python":
            run_python(block, namespace, following)
        else:
            for command, output in console_commands(block.body):
                run_command(command, output, following, capsys)


# -- what every block must be ------------------------------------------------------------------------------------

def test_every_block_is_run_checked_or_marked_with_why_not():
    after = dict.fromkeys(("text", "json"))
    problems, not_run = [], []
    for document in DOCUMENTS:
        previous = None
        for block in blocks(document):
            if block.marker.startswith("not run:"):
                not_run.append(block.name)
                assert block.marker[len("not run:"):].strip(), f"{block.name}: say why it is not run"
            elif block.marker and not block.marker.startswith(("file:", "from:")):
                problems.append(f"{block.name}: unknown marker <!-- {block.marker} -->")
            elif block.language in after and not block.marker and (previous is None or not runs(previous)):
                problems.append(f"{block.name}: a {block.language} block that is not the output of the block "
                                "before; mark it <!-- not run: why -->")
            elif block.language not in (*RUN, "text", "json", "yaml"):
                problems.append(f"{block.name}: a {block.language or 'plain'} block is not run; show commands "
                                "as console blocks ($ command), code as python, output as text")
            if block.language == "yaml":
                yaml.safe_load(block.body)
            previous = block
    assert not problems, "\n".join(problems)
    assert len(not_run) <= MOST_NOT_RUN, f"{len(not_run)} blocks are not run: {', '.join(not_run)}"


def test_excerpts_are_the_files_they_quote():
    quoted = [block for block in every_block() if block.marker.startswith("from:")]
    assert quoted
    for block in quoted:
        source = (ROOT / block.marker[len("from:"):].strip()).read_text()
        if block.language == "yaml":
            assert all(line in source.splitlines() for line in block.body.splitlines()), block.name
        else:
            assert block.body in source, f"{block.name} is not the text of {block.marker}"


def test_the_readmes_sigmoid_is_the_library_file_whole():
    readme = (ROOT / "README.md").read_text()
    at = readme.index("Here is Sigmoid, whole")
    sigmoid = next(b for b in blocks("README.md") if readme.index(b.body) > at)
    assert sigmoid.marker == "from: manualnet/nn/layers/sigmoid.py"
    source = (ROOT / "manualnet/nn/layers/sigmoid.py").read_text()
    whole = source[source.index('@register_layer("Sigmoid")'):source.index('\n\n\n@register_layer("Tanh")')]
    assert sigmoid.body.rstrip("\n") == whole.rstrip("\n")


def test_the_docs_swish_is_the_example_file():
    swish = [b for b in every_block() if b.language == "python" and 'register_layer("Swish")' in b.body]
    assert len(swish) == 1 and swish[0].marker == "from: examples/swish.py"
    assert swish[0].body in (ROOT / "examples" / "swish.py").read_text()


def test_the_swish_with_a_slipped_sign_fails_as_the_docs_say(tmp_path):
    from tests.helpers import run_cli

    right = "return dy * (s + self.beta * x * ds)"
    example = (ROOT / "examples" / "swish.py").read_text()
    assert right in example
    (tmp_path / "swish.py").write_text(example.replace(right, "return -dy * (s + self.beta * x * ds)"))
    (tmp_path / "swish.yaml").write_text((ROOT / "examples" / "swish.yaml").read_text())
    result = run_cli("verify", "--config", tmp_path / "swish.yaml")
    lines = result.stdout.strip().splitlines()
    assert result.returncode == 1, result.stderr
    said = (ROOT / "docs" / "verify.md").read_text()
    assert "`FAIL: 4 of 25 checks failed: ...`" in said and "`first failure: layer 1 (Swish), tensor dx`" in said
    assert lines[-2].startswith("FAIL: 4 of 25 checks failed: ")
    assert lines[-1] == "first failure: layer 1 (Swish), tensor dx"
    failing = {tuple(line.split()[:2]) for line in lines if line.rstrip().endswith("FAIL")}
    assert failing == {("1:Swish", "dx"), ("Sequential+CrossEntropyLoss", "dx"),
                       ("Sequential+CrossEntropyLoss", "d0.weight"), ("Sequential+CrossEntropyLoss", "d0.bias")}
