"""SIGTERM handled as Ctrl-C by long-running work (``scan``, ``autopilot``), so both end the same way."""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Callable, Iterator


@contextmanager
def sigterm_raises(interrupt: Callable[[int], BaseException]) -> Iterator[None]:
    """Inside the block, SIGTERM raises ``interrupt(signum)`` (a ``KeyboardInterrupt``), so the caller's Ctrl-C
    path commits what is done and stops its workers; the previous handler is back once the block is left.
    Only the main thread may set handlers: elsewhere (a server thread, a test runner's) the block runs as is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_sigterm(signum: int, frame: object) -> None:
        raise interrupt(signum)

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def signal_number(exc: BaseException) -> int | None:
    """The signal behind a KeyboardInterrupt: ``sigterm_raises`` passes it as the first argument (or an exception
    carries it as ``signum``), Ctrl-C none."""
    signum = getattr(exc, "signum", None)
    if signum is None and exc.args and isinstance(exc.args[0], int):
        signum = exc.args[0]
    return signum


def interrupt_signal(exc: BaseException) -> int:
    """:func:`signal_number`, SIGINT for a plain Ctrl-C: what ``128 + signum`` exit codes are made of."""
    signum = signal_number(exc)
    return int(signal.SIGINT) if signum is None else int(signum)
