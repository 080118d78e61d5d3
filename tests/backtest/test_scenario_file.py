"""Scenario files are validated like params.toml (issue 11 item 9): one line, exit 2."""

import pytest

from backtest.console import main
from backtest.scenarios import SCENARIOS_FILE, load_scenarios

GOOD = SCENARIOS_FILE.read_text()


@pytest.mark.parametrize("old, new, expect", [
    ('label = "Oct 25 short squeeze (Oct 24-27)"\n', "", "window 2022-10: missing key(s) label"),
    ('id = "2022-10"', 'id = "2022-10"\nlable = "typo"', "window 2022-10: unknown key(s) lable"),
    ('end = "2022-10-28T00:00:00Z"', 'end = "2022-10-20T00:00:00Z"',
     "window 2022-10: end 2022-10-20 00:00 is not after start"),
    ('start = "2022-10-24T00:00:00Z"', 'start = "2022-02-30T00:00:00Z"',
     "window 2022-10.start: '2022-02-30T00:00:00Z' is not a date that exists"),
    ('start = "2022-10-24T00:00:00Z"', 'start = ""', "window 2022-10.start: '' is empty or not a date"),
    ('[venue.binance]\nlake_market = "perp"', '[venue.binance]\nlake_market = "perp"\nsymbol = "x"',
     "venue.binance: unknown key(s) symbol"),
    ('ftx_adv_usd = 3.21e9', 'ftx_adv_usd = -3.21e9',
     "market.BTC.ftx_adv_usd: -3210000000.0 should be a positive number"),
    ('[[window]]\nid = "2022-01"', '[[window]\nid = "2022-01"', "is not valid TOML"),
    ('"2022-11" = 147895.399', '"2022-12" = 147895.399', "market.BTC.binance_oi_coin: window '2022-12' is not defined"),
])
def test_bad_scenario_files_are_one_line(tmp_path, capsys, old, new, expect):
    assert old in GOOD
    f = tmp_path / "sc.toml"
    f.write_text(GOOD.replace(old, new, 1))
    assert main(["run", "--window", "2022-10", "--scenarios", str(f), "--lake", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and expect in err[0] and str(f) in err[0], err


def test_the_shipped_scenario_file_is_valid():
    sc = load_scenarios()
    assert [w.id for w in sc.windows][:2] == ["2022-01", "2022-05"]
