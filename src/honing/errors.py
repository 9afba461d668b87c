"""The one base class of errors meant for people.

A `HoningError` carries a message that says what was expected, what was found
and where (file, row id, column). Callers print it as one line, without a
traceback: stage scripts and the `honing` command both do.
"""


class HoningError(Exception):
    """A failure the user can act on; its message is complete on its own."""
