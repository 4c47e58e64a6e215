"""The one exception type for mistakes a user can fix.

Its message is a single line naming the file, key or thing at fault and the fix; the CLI
prints it without a traceback and exits non-zero.
"""


class UserError(Exception):
    """A problem the user can fix (bad input, missing data, unreachable mirrors...)."""
