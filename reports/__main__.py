"""`python -m reports`: the reports stage's subcommands alone.

`python -m reports RESULTS_DIR [--out FILE]` is short for `python -m reports report ...`
(the stage has one command), as the README says.
"""
import sys

from fetch import cmdline
from reports import cli


def _argv(argv: list[str]) -> list[str]:
    if argv and not argv[0].startswith("-") and argv[0] not in cli.COMMANDS:
        return ["report", *argv]
    return argv


if __name__ == "__main__":
    sys.exit(cmdline.main(_argv(sys.argv[1:]), (cli,), prog="python -m reports"))
