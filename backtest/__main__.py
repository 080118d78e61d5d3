"""`python -m backtest`: the backtest stage's subcommands alone."""
import sys

from backtest import cli
from fetch import cmdline

sys.exit(cmdline.main(None, (cli,), prog="python -m backtest"))
