"""The one exception type that the command line turns into a one-line message."""


class UserError(Exception):
    """A mistake the user can fix (bad flag, missing file, wrong checksum, ...).

    The message is a single line that says what is wrong and what to do; the CLI prints it
    without a traceback and exits with status 2.
    """
