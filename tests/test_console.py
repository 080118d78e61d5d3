import pytest

from backtest import console


def test_help_lists_every_stage(capsys):
    with pytest.raises(SystemExit) as exc:
        console.main(["--help"])
    assert exc.value.code == 0


def test_no_command_prints_help_and_fails(capsys):
    assert console.main([]) == 2
    assert "usage: liqreplay" in capsys.readouterr().out


def test_user_error_is_one_line(capsys):
    def register(sub):
        p = sub.add_parser("boom")

        def fail(args):
            raise console.UserError("bad date 2022-13-01: use YYYYMMDD")

        p.set_defaults(func=fail)

    import types, sys
    mod = types.ModuleType("fake_stage_cli")
    mod.register = register
    sys.modules["fake_stage_cli"] = mod
    try:
        assert console.main(["boom"], stages=("fake_stage_cli",)) == 2
    finally:
        del sys.modules["fake_stage_cli"]
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["liqreplay boom: bad date 2022-13-01: use YYYYMMDD"]
