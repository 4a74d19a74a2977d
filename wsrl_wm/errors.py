"""Errors the CLI prints as one line instead of a traceback: the message says what to do."""


class WsrlError(Exception):
    """A problem the user can fix (bad file, bad name, bad option); the message says how."""


class DivergenceError(WsrlError):
    """Training hit a non-finite loss or model prediction; no step was taken on it."""
