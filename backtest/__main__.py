"""`python -m backtest`: the backtest stage's subcommands alone."""
import sys

from backtest import calibrate_cli, cli
from fetch import cmdline

sys.exit(cmdline.main(None, (cli, calibrate_cli), prog="python -m backtest"))
