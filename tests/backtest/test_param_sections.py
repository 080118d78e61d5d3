"""Typed frozen parameter sections (backtest/param_sections.py) read the same values as Params.get."""
from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import pickle

import pytest

from backtest.param_sections import Dated, Table, build_sections, uncovered_keys
from backtest.params import Params, ParamsError, load_params


def _lookup(sections, key: str):
    """The section value a dotted key maps to (a Table entry, a nested field, by_symbol)."""
    node = sections
    for part in key.split("."):
        if isinstance(node, Table):
            node = node[part]
        elif hasattr(node, part):
            node = getattr(node, part)
        else:  # the `rest` table of a section (binance.brackets.<SYMBOL>)
            node = node.by_symbol[part]
    return node


def test_every_params_toml_key_has_a_section_field():
    assert uncovered_keys(load_params()) == []


def test_sections_read_the_same_values_as_get():
    p = load_params()
    s = p.sections
    for key in p.keys():
        got = _lookup(s, key)
        rows = p.dated(key)
        if rows is None:
            assert not isinstance(got, Dated), key
            assert got == p.get(key) and type(got) is not type(None), key
        else:
            assert isinstance(got, Dated), key
            for d, _ in rows:
                for day in (d - dt.timedelta(days=1), d, d + dt.timedelta(days=1)):
                    assert got.at(day) == p.get(key, day), (key, day)
            assert got.latest == p.get(key) == got.at(None)


def test_types_are_the_declared_ones():
    p = load_params()
    assert isinstance(p.population.n_accounts, int) and isinstance(p.population.entry_lookback_days, float)
    assert isinstance(p.ftx.overflow_top_n, int) and isinstance(p.impact.feedback, bool)
    assert isinstance(p.path_model.mode, str) and p.path_model.mode == p.get("path.mode")


def test_tables_fall_back_to_default_and_name_missing_keys():
    p = load_params()
    assert p.ftx.imf_factor.of("BTC-PERP") == p.get("ftx.imf_factor.BTC-PERP")
    assert p.ftx.imf_factor.of("DOGE-PERP") == p.get("ftx.imf_factor.default")
    assert p.ftx.collateral["SOL"].weight_total == p.get("ftx.collateral.SOL.weight_total")
    with pytest.raises(KeyError, match="ftx.collateral.DOGE"):
        p.ftx.collateral["DOGE"]
    with pytest.raises(KeyError, match="execution.taker_fee.default"):
        p.execution.taker_fee.of("okx")  # no default entry there


def test_sections_are_frozen_and_slotted():
    p = load_params()
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.ftx.mmf_floor = 0.5
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.ftx.blp.hedge_ratio = 0.5
    assert not hasattr(p.ftx, "__dict__") and not hasattr(p.ftx.blp, "__dict__")
    with pytest.raises(TypeError):
        p.ftx.imf_factor["BTC-PERP"] = 1.0


def test_overrides_reach_the_sections_and_leave_the_original():
    p = load_params()
    q = p.with_overrides({"ftx.blp.hedge_latency_s": 7.0, "population.n_accounts": 500})
    assert q.ftx.blp.hedge_latency_s == 7.0 and q.population.n_accounts == 500
    assert p.ftx.blp.hedge_latency_s == p.get("ftx.blp.hedge_latency_s") != 7.0
    assert q.section("ftx") is q.ftx  # built once per Params


def test_unknown_section_and_wrong_types_are_errors():
    p = load_params()
    with pytest.raises(ParamsError, match="unknown parameter section 'fxt'"):
        p.section("fxt")
    leaves = copy.deepcopy(p._leaves)
    leaves["population.n_accounts"]["value"] = "many"
    with pytest.raises(ParamsError, match="population.n_accounts: expected int"):
        build_sections(Params(leaves))
    del leaves["population.n_accounts"]
    with pytest.raises(ParamsError, match="population.n_accounts is missing"):
        build_sections(Params(leaves))


def test_pickles_without_the_cache():
    p = load_params()
    _ = p.ftx
    q = pickle.loads(pickle.dumps(p))
    assert "sections" not in q.__dict__ and q.hash() == p.hash()
    assert q.ftx == p.ftx
    assert pickle.loads(pickle.dumps(p.execution)) == p.execution
