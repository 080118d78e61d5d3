"""Parameters: sources, dated values, ranges, overrides, unknown keys."""
from __future__ import annotations

import datetime as dt

import pytest

from backtest.params import ParamsError, load_params

CONTRACT_KEYS = [
    "ftx.tick_s", "ftx.blp.hedge_latency_s", "ftx.blp.hedge_ratio", "ftx.blp.capacity_per_minute_usd",
    "ftx.blp.capacity_per_hour_usd", "ftx.insurance_fund_start_usd", "ftx.negative_equity_blp_share",
    "ftx.overflow_top_n", "binance.liq_fee_rate", "binance.insurance_fund_start_usd",
    "execution.eta.ftx", "execution.eta.binance", "execution.taker_fee.ftx", "execution.taker_fee.binance",
    "population.n_accounts", "population.notional_sigma", "population.entry_lookback_days",
    "population.long_share", "population.leverage_scale",
]


def test_contract_keys_and_model_defaults():
    p = load_params()
    for k in CONTRACT_KEYS:
        assert k in p, k
    assert p.get("ftx.tick_s") == 1.0
    assert p.get("ftx.blp.hedge_latency_s") == 5.0
    assert p.get("ftx.blp.hedge_ratio") == 1.0
    assert p.get("ftx.negative_equity_blp_share") == pytest.approx(2 / 3)
    assert p.get("ftx.overflow_top_n") == 10
    assert p.get("binance.liq_fee_rate") == 0.0125
    assert p.get("population.n_accounts") == 100_000
    # a calibrated default (liqreplay calibrate writes it with its provenance), inside its range
    lo, hi = p.sweep_ranges()["population.notional_sigma"]
    assert lo <= p.get("population.notional_sigma") <= hi
    assert "liqreplay calibrate" in p.sources()["population.notional_sigma"]
    assert p.get("population.entry_lookback_days") == 14
    assert p.get("population.long_share") == 0.5
    assert p.get("ftx.imf_factor.BTC-PERP") == 0.002


def test_every_value_has_a_source_and_ranges_contain_defaults():
    p = load_params()
    srcs = p.sources()
    assert set(srcs) == set(p.keys())
    assert all(isinstance(s, str) and len(s) > 5 for s in srcs.values())
    ranges = p.sweep_ranges()
    for key in ("binance.liq_fee_rate", "ftx.negative_equity_blp_share", "ftx.blp.capacity_per_minute_usd",
                "ftx.insurance_fund_start_usd", "binance.insurance_fund_start_usd", "execution.eta.ftx",
                "population.leverage_scale", "ftx.imf_factor.ETH-PERP"):
        assert key in ranges, key
    for key, (lo, hi) in ranges.items():
        assert lo <= float(p.get(key)) <= hi, key
    assert ranges["binance.liq_fee_rate"] == (0.005, 0.015)


def test_dated_values():
    p = load_params()
    assert p.get("ftx.max_leverage", dt.date(2021, 7, 24)) == 101
    assert p.get("ftx.max_leverage", "2021-07-25") == 20
    assert p.get("binance.max_leverage", dt.date(2021, 7, 26)) == 125
    assert p.get("binance.max_leverage", dt.date(2021, 7, 27)) == 20
    assert p.get("ftx.max_leverage") == 20  # no date: latest
    assert p.dated("ftx.max_leverage")[0] == (dt.date(2019, 5, 1), 101.0)
    assert p.dated("ftx.tick_s") is None


def test_overrides_and_hash(tmp_path):
    p = load_params()
    q = p.with_overrides({"ftx.blp.hedge_latency_s": 30})
    assert q.get("ftx.blp.hedge_latency_s") == 30 and p.get("ftx.blp.hedge_latency_s") == 5.0
    assert q.hash() != p.hash() and p.hash() == load_params().hash()
    assert "override" in q.source("ftx.blp.hedge_latency_s")
    f = tmp_path / "mine.toml"
    f.write_text('[ftx.blp]\nhedge_ratio = 0.5\n[binance.liq_fee_rate]\nvalue = 0.01\nsource = "my guess"\n')
    u = load_params(f, overrides={"population.n_accounts": 500})
    assert u.get("ftx.blp.hedge_ratio") == 0.5
    assert u.get("binance.liq_fee_rate") == 0.01 and u.source("binance.liq_fee_rate") == "my guess"
    assert u.get("population.n_accounts") == 500
    assert u.get("ftx.tick_s") == 1.0  # untouched defaults remain
    d = u.to_dict()
    assert d["ftx.blp.hedge_ratio"] == 0.5 and d["ftx.max_leverage"][1] == ["2021-07-25", 20.0]


def test_unknown_keys_name_the_key(tmp_path):
    with pytest.raises(ParamsError, match="ftx.blp.hedge_latncy_s"):
        load_params(overrides={"ftx.blp.hedge_latncy_s": 3})
    f = tmp_path / "bad.toml"
    f.write_text("[ftx.blp]\ncapacity_per_day_usd = 1\n")
    with pytest.raises(ParamsError, match="ftx.blp.capacity_per_day_usd"):
        load_params(f)
    f.write_text("[nonsense]\nx = 1\n")
    with pytest.raises(ParamsError, match="nonsense"):
        load_params(f)
    with pytest.raises(ParamsError, match="unknown parameter 'foo.bar'"):
        load_params().get("foo.bar")


def test_bad_types_and_files(tmp_path):
    with pytest.raises(ParamsError, match="ftx.blp.hedge_ratio"):
        load_params(overrides={"ftx.blp.hedge_ratio": "half"})
    with pytest.raises(ParamsError, match="population.exempt_account"):
        load_params(overrides={"population.exempt_account": 1})
    with pytest.raises(ParamsError, match="not found"):
        load_params(tmp_path / "missing.toml")
    f = tmp_path / "broken.toml"
    f.write_text("[ftx\n")
    with pytest.raises(ParamsError, match="not valid TOML"):
        load_params(f)
    with pytest.raises(ParamsError, match="range"):
        load_params(overrides={"binance.liq_fee_rate": {"value": 0.01, "range": [0.02, 0.01]}})


# ---------------------------------------------------------------- validity domains (issue 11 item 3)
def test_every_key_of_params_toml_has_a_domain_holding_its_default_and_range():
    from backtest.domains import domain_for

    p = load_params()
    uncovered, outside = [], []
    for key in p.keys():
        leaf = p._leaves[key]
        dom = domain_for(key, leaf)
        if dom is None:
            uncovered.append(key)
            continue
        vals = [leaf["value"]] if "value" in leaf else [r["value"] for r in leaf["dated"]]
        outside += [f"{key}={v!r} not in {dom}" for v in vals if not dom.contains(v)]
        if "range" in leaf and not dom.within(*leaf["range"]):
            outside.append(f"{key} range {leaf['range']} not in {dom}")
    assert uncovered == [], "add a name rule in backtest/domains.py or `domain = [lo, hi]` in params.toml"
    assert outside == []


@pytest.mark.parametrize("key, value, domain_text", [
    ("ftx.insurance_fund_start_usd", -50e6, "[0, inf) (money, USD)"),
    ("ftx.max_leverage", 1000.0, "[1, 200]"),
    ("ftx.max_leverage", 0.5, "[1, 200]"),
    ("population.leverage_scale", -1.0, "(0, 100]"),
    ("population.long_share", 1.7, "[0, 1] (a share)"),
    ("ftx.step1.probability", 1.5, "[0, 1] (a probability)"),
    ("population.n_accounts", 0, "integers in [1, inf)"),
    ("ftx.blp.hedge_latency_s", -5.0, "[0, inf) (seconds)"),
    ("population.exempt_side", 0, "one of -1, 1"),
])
def test_a_value_outside_its_domain_is_one_line_naming_key_value_and_domain(tmp_path, key, value, domain_text):
    f = tmp_path / "mine.toml"
    section, _, leaf = key.rpartition(".")
    f.write_text(f"[{section}]\n\"{leaf}\" = {value!r}\n")
    with pytest.raises(ParamsError) as exc:
        load_params(f)
    msg = str(exc.value)
    assert "\n" not in msg
    assert key in msg and repr(value) in msg and domain_text in msg and str(f) in msg


def test_crossed_low_high_pair_is_refused():
    with pytest.raises(ParamsError, match="leverage_low_min .* above .*leverage_low_max"):
        load_params(overrides={"population.leverage_low_min": 8.0})


def test_valid_value_outside_the_sweep_range_only_warns(caplog):
    p = load_params(overrides={"ftx.blp.hedge_latency_s": 120.0})
    assert p.get("ftx.blp.hedge_latency_s") == 120.0
    assert any("ftx.blp.hedge_latency_s" in r.message and "sweep range" in r.message for r in caplog.records)


def test_a_leaf_may_state_its_own_domain():
    from backtest.domains import domain_for

    leaf = {"value": 3.0, "source": "x", "domain": [2, 4]}
    assert domain_for("impact.anything_new", leaf).contains(3.0)
    assert not domain_for("impact.anything_new", leaf).contains(5.0)
    with pytest.raises(ParamsError, match=r"impact.anything_new = 5.0 is outside its valid domain \[2, 4\]"):
        from backtest.params import _check_leaf
        _check_leaf("impact.anything_new", {"value": 5.0, "source": "x", "domain": [2, 4]})


def test_brackets_are_checked_structurally():
    bad = {"caps": [100, 50], "mmr": [0.01, 0.02]}
    with pytest.raises(ParamsError, match="binance.brackets.generic"):
        load_params(overrides={"binance.brackets.generic": bad})
