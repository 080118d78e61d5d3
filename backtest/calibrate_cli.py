"""`liqreplay calibrate` (the library is backtest/calibrate.py).

    liqreplay calibrate [--lake DIR] [--params FILE] [--params-out FILE | --no-write]
                        [--accounts N] [--seed N] [--method powell|de] [--max-evals N]
                        [--ftx-evals N] [--out DIR] [--oct25-out FILE]
"""
from __future__ import annotations

from pathlib import Path

from backtest.calibrate_options import CalibrateOptions
from fetch.cmdline import add_lake_option, non_negative_int, positive_int
from fetch.errors import UserError


def register(subparsers) -> None:
    d = CalibrateOptions()
    p = subparsers.add_parser(
        "calibrate", help="fit the population to Coinalyze's daily liquidations and FTX's published totals",
        description="Stage 1 fits the shared population parameters to Coinalyze's Binance BTC/ETH daily long and "
                    "short liquidations on the 2022 days outside the windows; stage 2 fits FTX's own parameters "
                    "to FTX's published 24 h totals; validates on the window days and writes the fitted values "
                    "with their provenance into the parameter file.")
    add_lake_option(p)
    p.add_argument("--params", metavar="FILE", help="parameter file to start from (default backtest/params.toml)")
    p.add_argument("--params-out", metavar="FILE",
                   help="write the fitted values to this file instead of into the parameter file read")
    p.add_argument("--no-write", action="store_true", help="fit and report only; write no parameter file")
    p.add_argument("--scenarios", metavar="FILE", help="scenario file (default backtest/scenarios.toml)")
    p.add_argument("--accounts", type=positive_int, default=d.accounts,
                   help=f"simulated accounts per series (default {d.accounts})")
    p.add_argument("--seed", type=non_negative_int, default=d.seed,
                   help=f"seed of the simulator and optimiser (default {d.seed})")
    p.add_argument("--method", choices=("powell", "de"), default=d.method,
                   help="scipy optimiser: bounded Powell (default) or seeded differential evolution")
    p.add_argument("--max-evals", type=positive_int, default=d.max_evals,
                   help=f"stage 1 budget (default {d.max_evals})")
    p.add_argument("--ftx-evals", type=non_negative_int, default=d.ftx_evals,
                   help=f"stage 2 budget (default {d.ftx_evals})")
    p.add_argument("--long-share-weight", type=float, default=d.long_share_weight,
                   help="add this x the monthly long-share MAE to the training objective "
                        f"(default {d.long_share_weight:g})")
    p.add_argument("--book", choices=("run", "v2"), default=d.book,
                   help="population the simulator builds: 'run' = what `liqreplay run` uses (default); 'v2' = the "
                        "OI-driven cohort book (build_population) with Binance's throttle on the real account count")
    p.add_argument("--out", metavar="DIR", default=str(d.out), help=f"output directory (default {d.out})")
    p.add_argument("--oct25-out", metavar="FILE", default=d.oct25_out,
                   help=f"where to write the Oct 25-26 scenario parameter file (default {d.oct25_out})")
    p.set_defaults(func=cmd_calibrate)


def cmd_calibrate(args) -> int:
    # pandas, pyarrow, numba, scipy: paid by `calibrate` only, not by `liqreplay --help`
    from backtest.calibrate import calibrate
    from backtest.catalog import Catalog
    from backtest.params import load_params
    from backtest.scenarios import load_scenarios
    from fetch.lake import resolve_lake

    if args.accounts < 2:
        raise UserError("--accounts must be at least 2")
    if args.max_evals < 1 or args.ftx_evals < 0:
        raise UserError("--max-evals must be at least 1 and --ftx-evals at least 0")
    if args.params_out and args.no_write:
        raise UserError("give --params-out FILE or --no-write, not both")
    params = load_params(args.params)
    try:
        sc = load_scenarios(args.scenarios)
    except FileNotFoundError:
        raise UserError(f"scenario file not found: {args.scenarios}") from None
    lake = resolve_lake(args.lake)
    if not Path(lake).exists():
        raise UserError(f"no lake at {lake}: run `liqreplay import ../shared/data` (or pass --lake DIR)")
    opts = CalibrateOptions(out=Path(args.out), params_path=args.params, params_out=args.params_out,
                            write_params=not args.no_write, oct25_out=args.oct25_out or None,
                            accounts=args.accounts, seed=args.seed, method=args.method, max_evals=args.max_evals,
                            ftx_evals=args.ftx_evals, long_share_weight=args.long_share_weight, book=args.book)
    calibrate(Catalog(lake), sc, params, opts)
    return 0
