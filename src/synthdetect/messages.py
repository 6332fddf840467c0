"""One line from an exception, for verdict errors, notes and leaderboards.

Library messages (c2pa's, ONNX Runtime's, transformers') run over many lines
or are empty (``KeyError()``); a one-line error must still say something.
"""

from __future__ import annotations


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The message's first non-blank line, cut at ``limit`` characters; empty when the message is blank."""
    return next((line.strip() for line in str(exc).splitlines() if line.strip()), "")[:limit]
