"""One line from an exception, for verdict errors, notes and leaderboards.

Library messages (c2pa's, ONNX Runtime's, transformers') run over many lines
or are empty (``KeyError()``); a one-line error must still say something.
"""

from __future__ import annotations


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The message's first non-blank line, cut at ``limit`` characters; empty when the message is blank."""
    return next((line.strip() for line in str(exc).splitlines() if line.strip()), "")[:limit]


#: Why an empty path ("") is refused wherever a path is read: ``Path("")`` and ``os.path.normpath("")`` are the
#: working folder, so ``scan "$DIR"`` with DIR unset walked it (a home folder: every photo in it) instead of saying
#: the variable was empty.
EMPTY_PATH_HINT = " (is a shell variable unset?); name the folder, or . for the working folder"
