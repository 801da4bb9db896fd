"""The project's own error type, and how entry points print an error: one line."""

USAGE_EXIT_STATUS = 2  # what entry points exit with for bad input (argparse's status for a usage error)


class UsageError(ValueError):
    """Bad input the user can fix (a setting, a file, a record). The message names the problem and
    the fix; entry points print it as one line and exit with status 2. A ValueError, so callers
    that catch ValueError keep working."""


def not_text(column: str, value: object) -> str | None:
    """What is wrong with a text column's value that is neither a string nor None, for messages."""
    if value is None or isinstance(value, str):
        return None
    return f"column {column!r} holds a {type(value).__name__} ({str(value)[:40]}), not text"


def one_line(exc: BaseException) -> str:
    """The error's message on one line (what entry points print before exiting with status 2)."""
    return " ".join(str(exc).split())
