"""Files written whole or not at all: through a temporary file beside the target, renamed over it.

Every writer of a file people keep (model cards, reports, explanation pictures, leaderboards) goes through here:
a full disk, an encoder error or Ctrl-C part-way then leaves the earlier file, or none, never a truncated one.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import IO, Callable


def write_atomically(path: str | Path, write: Callable[[IO], None], *, binary: bool = False) -> None:
    """Call ``write`` with a stream on a temporary file in ``path``'s folder, then rename it over ``path``.

    Text is UTF-8 whatever the locale, with newlines as written (csv writes its own).  ``open(..., "x")`` rather
    than mkstemp: the file gets the umask's permissions, not mkstemp's owner-only 0600.  An error names ``path``,
    not the temporary file.
    """
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.part")
    try:
        with (open(temporary, "xb") if binary else open(temporary, "x", encoding="utf-8", newline="")) as stream:
            write(stream)
        os.replace(temporary, path)
    except BaseException as exc:
        temporary.unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.strerror:
            raise OSError(exc.errno, exc.strerror, str(path)) from exc
        raise
