"""`python -m fetch`: the fetch stage's subcommands alone."""
import sys

from backtest.console import main

sys.exit(main(stages=("fetch.cli",)))
