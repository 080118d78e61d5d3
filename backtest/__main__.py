"""`python -m backtest`: the backtest stage's subcommands alone."""
import sys

from backtest.console import main

sys.exit(main(stages=("backtest.cli", "backtest.cli_sweep")))
