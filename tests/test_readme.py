"""The README's "Verifying gradients" section is run, so it cannot rot: its Python blocks in order in one
namespace, each one's printed output against the ``text`` block under it; its ``console`` blocks through the
CLI, each output against the lines shown ("..." stands for lines left out); its Swish is examples/swish.py.

Measured numbers (a max diff such as 1.39e-17, a finite difference) may differ from one machine to another,
so they are compared by size: both at float64's rounding level (1e-12 or less), or of the same sign within a
factor of 100; every other word, number and column must be as shown.
"""

import contextlib
import io
import json
import re
import shlex
from pathlib import Path

import pytest

from manualnet.cli.main import main
from tests.helpers import ROOT

MEASURED = re.compile(r"-?(\d\.\d+e[-+]\d+|0)")   # how the tables print a difference or an error


def section():
    text = (ROOT / "README.md").read_text()
    start = text.index("\n## Verifying gradients\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end != -1 else len(text)]


def blocks():
    """(language, body) of each fenced block of the section, in order."""
    fence = re.compile(r"^```(\w*)\n(.*?)^```$", re.MULTILINE | re.DOTALL)
    return [(m[1], m[2]) for m in fence.finditer(section())]


def console_commands():
    """(command, the output lines shown, the block after it) for each ``$ manualnet`` line."""
    found, shown = [], blocks()
    for i, (language, body) in enumerate(shown):
        if language != "console":
            continue
        following = shown[i + 1] if i + 1 < len(shown) else ("", "")
        for chunk in body.split("$ ")[1:]:
            command, *output = chunk.rstrip("\n").split("\n")
            found.append((command, output, following))
    return found


def same_line(shown, actual):
    want, got = shown.replace("|", " ").split(), actual.replace("|", " ").split()
    return len(want) == len(got) and all(same_word(w, g) for w, g in zip(want, got, strict=True))


def same_word(shown, actual):
    if shown == actual:
        return True
    if not (MEASURED.fullmatch(shown) and MEASURED.fullmatch(actual)):
        return False
    want, got = float(shown), float(actual)
    if max(abs(want), abs(got)) <= ROUNDING:
        return True
    return want * got > 0 and max(abs(want), abs(got)) <= 100 * min(abs(want), abs(got))


ROUNDING = 1e-12  # float64 arithmetic's errors at this size differ with the machine's BLAS and threads


def test_measured_numbers_are_compared_by_size():
    assert same_word("1.39e-17", "0") and same_word("8.25e-11", "9.10e-11")
    assert not same_word("3.47e-18", "9.00e-09") and not same_word("-1.74e-10", "1.74e-10")
    assert not same_word("8.25e-11", "8.25e-08") and not same_word("0.5", "0.6")


def assert_shown(shown, actual):
    """Every line of ``shown`` matches ``actual`` in order; "..." skips any number of lines."""
    at, skipping = 0, False
    for line in shown:
        if line == "...":
            skipping = True
            continue
        while skipping and at < len(actual) and not same_line(line, actual[at]):
            at += 1
        assert at < len(actual) and same_line(line, actual[at]), f"README shows\n{line}\nbut the output is\n" + \
            "\n".join(actual)
        at, skipping = at + 1, False
    assert skipping or at == len(actual), "the output goes on after what the README shows:\n" + "\n".join(actual)


def test_the_sections_python_runs_and_prints_what_the_readme_shows():
    namespace, shown = {}, blocks()
    ran = 0
    for i, (language, code) in enumerate(shown):
        if language != "python":
            continue
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            exec(compile(code, f"README.md python block {i}", "exec"), namespace)
        ran += 1
        language_after, expected = shown[i + 1] if i + 1 < len(shown) else ("", "")
        if language_after == "text":
            assert_shown(expected.rstrip("\n").split("\n"), printed.getvalue().rstrip("\n").split("\n"))
        else:
            assert printed.getvalue() == "", f"block {i} prints output the README does not show"
    assert ran >= 7
    assert f"{namespace['dx']:.4f}, {namespace['dy']:.4f}" == "0.8485, 0.1192"


@pytest.mark.parametrize("command, output, following", [pytest.param(*case, id=case[0]) for case in console_commands()])
def test_the_sections_commands_print_what_the_readme_shows(command, output, following, tmp_path, monkeypatch,
                                                            capsys):
    program, *args = shlex.split(command)
    assert program == "manualnet"
    json_path = None
    if "--json" in args:
        at = args.index("--json") + 1
        args[at] = json_path = str(tmp_path / args[at])
    monkeypatch.chdir(ROOT)
    code = main(args)
    actual = capsys.readouterr().out.rstrip("\n").split("\n")
    assert_shown(output, actual)
    assert code == (0 if actual[-1].startswith("PASS") else 1)
    if json_path and following[0] == "json":
        assert json.loads(following[1]) == json.loads(Path(json_path).read_text())["rows"][0]


def test_the_readmes_swish_is_the_example_file():
    example = (ROOT / "examples" / "swish.py").read_text()
    swish = [code for language, code in blocks() if language == "python" and 'register_layer("Swish")' in code]
    assert len(swish) == 1 and swish[0] in example
    config = (ROOT / "examples" / "swish.yaml").read_text().splitlines()
    shown = next(code for language, code in blocks() if language == "yaml").splitlines()
    assert all(line in config for line in shown), shown


def test_assert_shown_refuses_a_changed_word_or_a_missing_line():
    actual = ["a | 1.39e-17 | True", "b | 0 | False", "PASS: all 2 checks passed"]
    assert_shown(["a | 0 | True", "...", "PASS: all 2 checks passed"], actual)
    for shown in (["a | 0 | False", "..."], ["a | 0 | True", "PASS: all 2 checks passed"],
                  ["...", "PASS: all 3 checks passed"], ["a | 0.5 | True", "..."]):
        with pytest.raises(AssertionError):
            assert_shown(shown, actual)


def test_the_swish_with_a_slipped_sign_fails_as_the_readme_says(tmp_path):
    from tests.helpers import run_cli

    right = "return dy * (s + self.params[\"beta\"] * x * ds)"
    example = (ROOT / "examples" / "swish.py").read_text()
    assert right in example
    (tmp_path / "swish.py").write_text(example.replace(right, "return -dy * (s + self.params[\"beta\"] * x * ds)"))
    (tmp_path / "swish.yaml").write_text((ROOT / "examples" / "swish.yaml").read_text())
    result = run_cli("verify", "--config", tmp_path / "swish.yaml")
    lines = result.stdout.strip().splitlines()
    assert result.returncode == 1, result.stderr
    said = section()
    assert "`FAIL: 4 of 25 checks failed: ...`" in said and "`first failure: layer 1 (Swish), tensor dx`" in said
    assert lines[-2].startswith("FAIL: 4 of 25 checks failed: ")
    assert lines[-1] == "first failure: layer 1 (Swish), tensor dx"
    failing = {tuple(line.split()[:2]) for line in lines if line.rstrip().endswith("FAIL")}
    assert failing == {("1:Swish", "dx"), ("Sequential+CrossEntropyLoss", "dx"),
                       ("Sequential+CrossEntropyLoss", "d0.weight"), ("Sequential+CrossEntropyLoss", "d0.bias")}
