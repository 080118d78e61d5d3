"""`python -m reports`: the reports stage's subcommands alone."""
import sys

from backtest.console import main

sys.exit(main(stages=("reports.cli",)))
