"""The project's own error type."""


class UsageError(ValueError):
    """Bad input the user can fix (a setting, a file, a record). The message names the problem and
    the fix; entry points print it as one line and exit with status 2. A ValueError, so callers
    that catch ValueError keep working."""
