"""`python -m backtest`: the backtest stage's subcommands alone."""
import sys

from backtest import calibrate_cli, cli, cli_sweep
from fetch import cmdline

sys.exit(cmdline.main(None, (cli, cli_sweep, calibrate_cli), prog="python -m backtest"))
