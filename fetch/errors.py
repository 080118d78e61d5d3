"""Errors every stage may raise and the console turns into one line and an exit status.

This is the bottom layer (it imports nothing of the project), so fetch/, backtest/ and
reports/ all raise these without importing upward. The console (backtest/console.py) maps
them to exit codes; nothing else needs to know the numbers.

- `UserError`: the user can fix it (bad option, bad file, missing data): exit 2.
- `EnvironmentFault`: the machine is at fault (disk full, permission, corrupt lake that a
  command can repair): exit 1, "needs a person".
- `TemporaryFailure`: retry later (network down, rate limit, lock held): exit 75
  (EX_TEMPFAIL, what cron wrappers and systemd's RestartPreventExitStatus expect).
"""
from __future__ import annotations

EXIT_OK = 0
EXIT_ENVIRONMENT = 1
EXIT_USER = 2
EXIT_TEMPFAIL = 75


class LiqreplayError(Exception):
    """Base of the errors printed as one line; `exit_code` is the process status."""

    exit_code = EXIT_ENVIRONMENT


class UserError(LiqreplayError):
    """An error the user can fix: printed as one line, exit status 2."""

    exit_code = EXIT_USER


class EnvironmentFault(LiqreplayError):
    """The environment is at fault (permissions, disk, a damaged lake): one line, exit 1."""

    exit_code = EXIT_ENVIRONMENT


class TemporaryFailure(LiqreplayError):
    """Try again later (network unreachable, rate limited, lock held): one line, exit 75."""

    exit_code = EXIT_TEMPFAIL


def os_error_message(exc: OSError, what: str) -> str:
    """'cannot write X: Permission denied' style text for an OSError about `what`."""
    reason = exc.strerror or str(exc)
    return f"{what}: {reason}"
