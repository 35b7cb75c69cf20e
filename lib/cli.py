"""How every command line ends on bad input: one or two lines and exit code 2, no traceback.

A person who typed ``learning_rate=abc`` needs the parameter, what was expected and the fix, not
forty lines of stack. ``run_cli`` calls a module's ``main(argv)``; an error of the kinds that
describe bad input (``ValueError`` and its subclasses such as ``DataError`` and ``GridError``,
missing or unreadable files, and the module's own error classes) is printed as
``<prog>: error: <message>`` and exits with 2, argparse's code for bad usage. ``--debug``
anywhere on the command line shows the full traceback instead. Other exceptions (bugs) keep
their traceback. SIGTERM is turned into ``KeyboardInterrupt`` as Ctrl-C is, so that a stopped
command cleans up (a grid stops its notebook jobs, a notebook job its kernel); it ends with
``<prog>: interrupted`` and exit code 128 + the signal's number (130 for Ctrl-C, 143 for SIGTERM).

    if __name__ == "__main__":
        run_cli(main, "python -m lib.train", input_errors=(TrainError, BackboneError))
"""

from __future__ import annotations

import errno
import signal
import sys
import threading
from typing import Any, Callable, Sequence

import yaml

INPUT_ERRORS: tuple[type[BaseException], ...] = (ValueError, OSError, yaml.YAMLError)
BAD_INPUT = 2
DEBUG_FLAG = "--debug"


def without_flag(argv: Sequence[str] | None, flag: str) -> tuple[list[str], bool]:
    """``argv`` (``sys.argv[1:]`` when None) without ``flag``, and whether it was there."""
    argv = list(sys.argv[1:] if argv is None else argv)
    return [arg for arg in argv if arg != flag], flag in argv


def check_cli_arguments(run: str | None, batch_size: int) -> None:
    """The ``--run`` and ``--batch-size`` of an evaluation command (lib.tatoeba, lib.miracl), before
    a model is loaded."""
    from lib.validation import check_range, check_run_name

    if run is not None:
        check_run_name(run, "--run")
    check_range("--batch-size", batch_size, low=1)


def error_message(error: BaseException) -> str:
    """The message of an input error, with the fix for the errors Python words without one."""
    if isinstance(error, PermissionError):
        return (f"no permission to write {error.filename or 'a file'} ({error.strerror}); make the folder "
                "writable or point HBT_OUTPUTS at a writable folder")
    if isinstance(error, FileNotFoundError) and error.filename:
        return f"{error.filename} not found ({error.strerror}); check the path"
    if isinstance(error, OSError) and error.errno == errno.ENOSPC or "No space left on device" in str(error):
        return (f"no space left on the device while writing {getattr(error, 'filename', None) or 'a file'}; free "
                "space, or point HBT_OUTPUTS (runs) and HBT_CACHE (downloads, embeddings) at a larger disk")
    if isinstance(error, OSError) and error.errno == errno.EROFS:
        return (f"{error.filename or 'a file'} is on a read-only file system; point HBT_OUTPUTS (runs) and "
                "HBT_CACHE (downloads, embeddings) at a writable folder")
    text = str(error).strip() or type(error).__name__
    return text


class Interrupted(KeyboardInterrupt):
    """A signal (SIGTERM) asked the command to stop, as Ctrl-C does."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _interrupt(signum: int, frame: Any) -> None:
    raise Interrupted(signum)


def stop_on_sigterm() -> None:
    """SIGTERM raises :class:`Interrupted` (a KeyboardInterrupt) in the main thread."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)


def run_cli(main: Callable[[Sequence[str] | None], Any], prog: str,
            input_errors: tuple[type[BaseException], ...] = (), argv: Sequence[str] | None = None) -> int:
    """Run ``main(argv)`` (``sys.argv[1:]`` by default, ``--debug`` removed); 0 on success, 2 on
    bad input (one message on stderr), a traceback for anything else or with ``--debug``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = DEBUG_FLAG in argv
    argv = [arg for arg in argv if arg != DEBUG_FLAG]
    stop_on_sigterm()
    try:
        main(argv)
    except KeyboardInterrupt as error:
        if debug:
            raise
        signum = getattr(error, "signum", signal.SIGINT)
        print(f"{prog}: interrupted ({signal.Signals(signum).name})", file=sys.stderr, flush=True)
        return 128 + signum
    except INPUT_ERRORS + tuple(input_errors) as error:
        if debug:
            raise
        print(f"{prog}: error: {error_message(error)}\n(run again with {DEBUG_FLAG} for the traceback)",
              file=sys.stderr)
        return BAD_INPUT
    return 0
