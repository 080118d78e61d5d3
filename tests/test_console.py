import pytest

from backtest import console

# every subcommand of the three stages (fetch, backtest, reports), in data-flow order
STAGE_COMMANDS = ["import", "data", "fetch", "refresh", "run", "bench", "sweep", "calibrate", "report"]


def test_help_lists_every_stage(capsys):
    with pytest.raises(SystemExit) as exc:
        console.main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    # argparse's command lines: four spaces, the name (help text wraps onto deeper-indented lines)
    listed = [line.split()[0] for line in out.splitlines() if line.startswith("    ") and line[4:5].strip()]
    assert listed == STAGE_COMMANDS


def test_no_command_prints_help_and_fails(capsys):
    assert console.main([]) == 2
    assert "usage: liqreplay" in capsys.readouterr().out


def test_user_error_is_one_line(capsys):
    def register(sub):
        p = sub.add_parser("boom")

        def fail(args):
            raise console.UserError("bad date 2022-13-01: use YYYYMMDD")

        p.set_defaults(func=fail)

    import sys
    import types
    mod = types.ModuleType("fake_stage_cli")
    mod.register = register
    sys.modules["fake_stage_cli"] = mod
    try:
        assert console.main(["boom"], stages=("fake_stage_cli",)) == 2
    finally:
        del sys.modules["fake_stage_cli"]
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["liqreplay boom: bad date 2022-13-01: use YYYYMMDD"]


def test_broken_pipe_exits_quietly(tmp_path):
    """`liqreplay data status | head` must not print a traceback when head exits."""
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parent.parent
    code = (
        "import sys, types\n"
        "from backtest import console\n"
        "def register(sub):\n"
        "    p = sub.add_parser('spew')\n"
        "    def spew(args):\n"
        "        for i in range(200000):\n"
        "            print('row', i)\n"
        "    p.set_defaults(func=spew)\n"
        "m = types.ModuleType('spew_cli'); m.register = register; sys.modules['spew_cli'] = m\n"
        "sys.exit(console.main(['spew'], stages=('spew_cli',)))\n"
    )
    proc = subprocess.run(
        f"{sys.executable} -c \"$CODE\" | head -n 1",
        shell=True, cwd=repo, capture_output=True, text=True,
        env={"CODE": code, "PATH": "/usr/bin:/bin", "PYTHONPATH": str(repo)},
    )
    assert proc.stdout == "row 0\n"
    assert "Traceback" not in proc.stderr, proc.stderr
