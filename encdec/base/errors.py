"""The project's own error type."""


class UsageError(ValueError):
    """Bad input the user can fix (a setting, a file, a record). The message names the problem and
    the fix; entry points print it as one line and exit with status 2. A ValueError, so callers
    that catch ValueError keep working."""


def not_text(column: str, value: object) -> str | None:
    """What is wrong with a text column's value that is neither a string nor None, for messages."""
    if value is None or isinstance(value, str):
        return None
    return f"column {column!r} holds a {type(value).__name__} ({str(value)[:40]}), not text"
