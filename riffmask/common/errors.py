"""The base of the errors users are meant to read; the CLI prints them as one line, exit status 2."""


class RiffmaskError(ValueError):
    """Bad input or configuration, with a message that names the file or key and what to do."""
