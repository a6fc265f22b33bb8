"""The one base class of failures a user can fix.

Anything raised as a :class:`StreamskewError` is shown by the command line as one line,
``Error: <message>``, with no traceback (``--debug`` shows it). The message names what is
wrong (the file and line, the key, the address) and the fix. Configuration, baseline and
input-file errors, and the Kafka adapter's connection, authentication and topic errors, all
derive from it.
"""

from __future__ import annotations

__all__ = ["StreamskewError"]


class StreamskewError(Exception):
    """A failure the user can fix; ``str()`` is one line that says what to do."""
