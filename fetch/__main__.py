"""`python -m fetch`: the fetch stage's subcommands alone."""
import sys

from fetch import cli, cmdline

sys.exit(cmdline.main(None, (cli,), prog="python -m fetch"))
