"""The architecture holds: imports flow one way (lint-imports checks the contracts in pyproject.toml), the
model's math loads alone, no file grows past what a reader takes in at once, and the README stays short."""

import subprocess
import sys
from pathlib import Path

from tests.helpers import ROOT

PACKAGE = ROOT / "manualnet"
MAX_LINES = 300  # the layout issue's limit: a file past it has two concepts in it


def test_importing_the_models_math_loads_no_optimizer_config_training_logging_or_cli():
    code = ("import sys, manualnet.nn; print(sorted(m for m in sys.modules if m.startswith('manualnet.') and "
            "m.split('.')[1] not in ('nn', 'errors', 'names', 'files', 'registry')), 'pydantic' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                            env={"PYTHONPATH": str(ROOT), "PATH": ""}, check=True)
    assert result.stdout.strip() == "[] False"  # not even the config's type checks


def test_the_import_contracts_hold():
    lint = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(lint)], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_no_file_in_the_package_is_over_about_300_lines():
    long = {str(p.relative_to(ROOT)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, long


def test_the_readme_is_a_newcomers_page_in_the_order_they_need_it():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 250  # the rest lives in docs/
    assert [line[3:] for line in lines if line.startswith("## ")] == [
        "Install and test", "Quickstart", "The layer API", "Verifying gradients", "Configs",
        "Documentation ([docs/README.md](docs/README.md))"]
