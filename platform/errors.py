"""What a failure tells the user: one line and an exit code, whether the input, the machine or somna is at fault.

Input problems (a bad config, bad data, a bad run directory: `ConfigError`, an
unknown name, `RunDirectoryError`) exit 2; problems of the machine
(`EnvironmentProblem`: a full disk, a read-only folder, no network) exit 1.
Anything else is a bug: one line naming the file that holds the full traceback,
exit 1. `--debug` prints the traceback in every case.

The CLI reports through `report_failure`; the launch path (platform/launch.py)
turns an `OSError` into an `EnvironmentProblem` with `environment_problem`, so
the Python API raises the same types with the same messages.
"""

from __future__ import annotations

import errno
import sys
import tempfile
import traceback

from somna.evals.rundir import RunDirectoryError
from somna.platform.config import ConfigError, EnvironmentProblem
from somna.platform.registry import UnknownNameError

EXIT_ENVIRONMENT = 1
EXIT_UNEXPECTED = 1
EXIT_INPUT = 2
EXIT_INTERRUPTED = 130
INPUT_ERRORS = (ConfigError, UnknownNameError, RunDirectoryError)

_FREE_SPACE = "free some space"
_WRITABLE = "choose a location you can write to, or fix its permissions"
ADVICE = {
    errno.ENOSPC: _FREE_SPACE,
    errno.EDQUOT: _FREE_SPACE,
    errno.EACCES: _WRITABLE,
    errno.EPERM: _WRITABLE,
    errno.EROFS: _WRITABLE,
}


def environment_problem(error: OSError, doing: str, then: str) -> EnvironmentProblem:
    """An OSError as one line: what was being done, the file, the reason, and what to do before `then`."""
    if isinstance(error, (ConnectionError, TimeoutError)) or error.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH):
        return EnvironmentProblem(f"{doing}: network unreachable ({one_line(error)}); check the connection, then {then}")
    reason = (error.strerror or one_line(error)).lower()
    where = f" ({error.filename})" if error.filename else ""
    advice = ADVICE.get(error.errno, "check that location")
    return EnvironmentProblem(f"{doing}{where}: {reason}; {advice}, then {then}")


def one_line(error: BaseException) -> str:
    """The error's message squeezed onto one line (libraries often spread theirs over several)."""
    return " ".join(str(error).split()) or type(error).__name__


def exit_code(error: BaseException) -> int:
    """1 for the machine, 2 for the input, 1 for a bug (the machine is asked first, whatever the class hierarchy)."""
    if isinstance(error, EnvironmentProblem):
        return EXIT_ENVIRONMENT
    return EXIT_INPUT if isinstance(error, INPUT_ERRORS) else EXIT_UNEXPECTED


def report_failure(error: Exception, command: str, debug: bool) -> int:
    """Print one line on stderr (plus the traceback with --debug) and return the exit code.

    An OSError nothing translated on the way (a report or table that cannot be written) is the machine's."""
    if debug:
        traceback.print_exception(error, file=sys.stderr)
    if isinstance(error, OSError):
        error = environment_problem(error, f"somna {command}", "run it again")
    if isinstance(error, (*INPUT_ERRORS, EnvironmentProblem)):
        print(f"somna: error: {one_line(error)}", file=sys.stderr)
    else:
        where = "above" if debug else f"in {write_traceback(error)}"
        print(f"somna: error: unexpected {type(error).__name__}: {one_line(error)} (full traceback {where}; please report it)",
              file=sys.stderr)
    return exit_code(error)


def write_traceback(error: BaseException) -> str:
    """Write the full traceback to a new file in the temp folder (never into the user's folders) and name it."""
    with tempfile.NamedTemporaryFile("w", prefix="somna-traceback-", suffix=".txt", delete=False) as file:
        traceback.print_exception(error, file=file)
    return file.name
