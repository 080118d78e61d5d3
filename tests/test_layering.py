"""Layering (issue 12): errors at the bottom, no module imports a stage above its own, and
the console maps each error class to its exit status."""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

from backtest import console
from fetch import errors

REPO = Path(__file__).resolve().parent.parent
ORDER = {"fetch": 0, "backtest": 1, "reports": 2}
COMPOSITION_ROOT = {"backtest/console.py"}  # names the three stage CLIs; nothing imports it


def _imports(path: Path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield a.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module


def test_no_module_imports_a_stage_above_its_own():
    bad = []
    for stage, level in ORDER.items():
        for path in sorted((REPO / stage).rglob("*.py")):
            rel = str(path.relative_to(REPO))
            if rel in COMPOSITION_ROOT:
                continue
            for mod in _imports(path):
                top = mod.split(".")[0]
                if top in ORDER and ORDER[top] > level:
                    bad.append(f"{rel} imports {mod}")
    assert bad == []


def test_console_reexports_the_neutral_errors():
    assert console.UserError is errors.UserError
    assert issubclass(errors.UserError, errors.LiqreplayError)


@pytest.mark.parametrize("exc, code", [(errors.UserError, 2), (errors.EnvironmentFault, 1),
                                       (errors.TemporaryFailure, 75)])
def test_each_error_class_has_its_exit_status(exc, code, capsys):
    import types

    def register(sub):
        p = sub.add_parser("boom")

        def fail(args):
            raise exc("what went wrong; the fix")
        p.set_defaults(func=fail)

    mod = types.ModuleType("boom_cli")
    mod.register = register
    assert console.main(["boom"], stages=(mod,)) == code
    assert capsys.readouterr().err.strip().splitlines() == ["liqreplay boom: what went wrong; the fix"]


def test_help_lists_every_stages_commands(capsys):
    with pytest.raises(SystemExit):
        console.main(["--help"])
    out = capsys.readouterr().out
    for cmd in ("import", "data", "fetch", "refresh", "run", "bench", "report"):
        assert cmd in out


def test_python_m_reports_takes_the_results_dir_as_the_readme_says(tmp_path):
    """`python -m reports DIR` is `python -m reports report DIR`: it reaches the report
    command (which refuses a missing directory in one line) instead of an argparse error."""
    proc = subprocess.run([sys.executable, "-m", "reports", str(tmp_path / "nope")], cwd=REPO,
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"liqreplay report: results directory {tmp_path / 'nope'} does not exist "
        f"(make one with `liqreplay run --out DIR`)"]
