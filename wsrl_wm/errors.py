"""One exception type for bad user input, so the CLI can print one line instead of a traceback."""


class WsrlError(Exception):
    """A problem the user can fix (bad file, bad name, bad option); the message says how."""
