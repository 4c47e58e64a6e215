"""The one exception type for mistakes a user can fix.

Its message is a single line naming the file, key or thing at fault and the fix; the CLI
prints it without a traceback and exits non-zero.
"""


import functools
import os


class UserError(Exception):
    """A problem the user can fix (bad input, missing data, unreachable mirrors...)."""


def user_errors(fn):
    """For the Python API's entry points: what the CLI turns into one line is a UserError
    here too. A file-system error names its path; a path that is not one names the
    argument."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError:
            raise
        except OSError as exc:
            where = f"{exc.filename}: " if exc.filename else ""
            raise UserError(f"{where}{exc.strerror or exc}; check the path") from None
    return wrapper


def check_path(value, what: str, optional: bool = False):
    """`value` if it is a path (str or os.PathLike), else a UserError naming `what`."""
    if value is None and optional:
        return None
    if isinstance(value, (str, os.PathLike)) and str(os.fspath(value)).strip():
        return value
    raise UserError(f"{what} must be a path (a string or a pathlib.Path), not "
                    f"{type(value).__name__} {str(value)[:60]!r}")


def check_bool(value, what: str) -> bool:
    if not isinstance(value, bool):
        raise UserError(f"{what} must be True or False, not {str(value)[:60]!r}")
    return value
