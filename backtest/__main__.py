"""`python -m backtest`: the backtest stage's subcommands alone."""
import sys

from backtest import cli, cli_sweep
from fetch import cmdline

sys.exit(cmdline.main(None, (cli, cli_sweep), prog="python -m backtest"))
