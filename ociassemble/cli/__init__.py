"""The command line: thin commands over the library, one error line per failure.

Each command (a module of this package: build, push, verify, pull, inspect, run, cache,
make_base, init, login, completion) parses its flags, calls the library and prints its
result (``--json``: one JSON document on stdout, nothing else there). Progress goes to
stderr: bars on a terminal, one line per step otherwise (``cli.progress``). The flags
become one ``settings.Settings`` (``Settings.from_argparse``), which a job of
``ociassemble.jobs`` runs on; what is printed is ``output``'s.

Exit codes (``ociassemble.errors``): 0 ok; 1 the user's input or environment (bad flags
included: argparse's own 2 is remapped); 2 a registry or the network; 3 a bug (the
traceback is printed, with one line saying so); 130 interrupted (Ctrl-C or SIGTERM, whatever the
interrupted code raised then).
Errors of the ``OciAssembleError`` family print as one line.

Everything printed (results, steps, error lines, log records, ``--debug`` and bug
tracebacks) is cleaned of the credentials the run sent and of terminal control bytes
(``redact.clean``), whoever wrote the text: a registry's error, an image's labels.
"""

from __future__ import annotations

import errno
import logging
import os
import sys
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

from .. import __version__
from ..errors import EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_USER, OciAssembleError
from .progress import PROG
from ..redact import Secrets, clean
from .completion import completion_script as _completion_script
from .interrupts import Interrupts
from .output import Out, error_line
from .parser import build_parser

__all__ = ["build_parser", "completion_script", "entry", "main"]


def completion_script(shell: str) -> str:
    """The bash or zsh completion script of this command line (``ociassemble completion SHELL``)."""
    return _completion_script(shell, build_parser())


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns its exit code (see the module docstring)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USER
    out = Out(args.quiet or args.json, args.json)  # its secrets: the run's credentials, which the output is cleaned of
    # SIGTERM behaves like Ctrl-C: the same cleanup paths (temp files removed) run, in bounded time.
    interrupts = Interrupts()
    interrupts.install()
    try:
        with _clean_log_records(out.secrets):
            return args.func(args, out)
    except KeyboardInterrupt:
        return _interrupted(out)
    except Exception as exc:  # noqa: BLE001 - each kind is reported in _failed; a bug keeps its traceback
        if interrupts.count or _caused_by_interrupt(exc):
            # after Ctrl-C, whatever the interrupted code raised is the interrupt's doing; and Python
            # wraps an exception raised in some places (a descriptor's __set_name__ while a module
            # is imported: RuntimeError) in its own, so a Ctrl-C landing there surfaces as one
            return _interrupted(out)
        return _failed(exc, args.debug, out)
    finally:
        out.reporter.close()
        interrupts.uninstall()


def _failed(exc: Exception, debug: bool, out: Out) -> int:
    """One error line (a bug: its traceback, and a line saying so) and the exit code."""
    if isinstance(exc, BrokenPipeError):
        # the reader went away (e.g. `inspect --layer 0 --list | head`): not an error of ours
        try:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silence the flush at exit
        except OSError:
            pass
        return EXIT_USER
    out.reporter.close()
    known = isinstance(exc, (OciAssembleError, OSError))
    if debug or not known:
        _print_traceback(out.secrets)
    if isinstance(exc, OciAssembleError):
        print(f"{PROG}: error: {error_line(exc, out.secrets)}", file=sys.stderr)
        return exc.exit_code
    if isinstance(exc, OSError):
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            where = exc.filename or "the output or the cache"  # (the cache and outputs name theirs: errors.DiskFullError)
            print(out.clean(f"{PROG}: error: no space left on device writing {where}: free space there, or write it "
                            "elsewhere (the output's path, --cache-dir)"), file=sys.stderr)
        else:
            print(out.clean(f"{PROG}: error: {exc.filename or ''}: {exc.strerror}"), file=sys.stderr)
        return EXIT_USER
    print(f"{PROG}: this is a bug in ociassemble {__version__}: please report it with the traceback above",
          file=sys.stderr)
    return EXIT_INTERNAL


def _interrupted(out: Out) -> int:
    out.reporter.close()
    print(f"{PROG}: interrupted; nothing was left half-written", file=sys.stderr)
    return EXIT_INTERRUPTED


def _caused_by_interrupt(exc: BaseException) -> bool:
    seen: set[int] = set()
    link: BaseException | None = exc
    while link is not None and id(link) not in seen:
        if isinstance(link, KeyboardInterrupt):
            return True
        seen.add(id(link))
        link = link.__cause__ or link.__context__
    return False


def _print_traceback(secrets: Secrets) -> None:
    """The current exception's traceback on stderr, cleaned like every other output."""
    print(clean(traceback.format_exc(), secrets), end="", file=sys.stderr)


@contextmanager
def _clean_log_records(secrets: Secrets) -> Iterator[None]:
    """Every log record made while a command runs (ours, requests', urllib3's, whatever handler
    prints it) carries its message cleaned: formatted now, with the credentials and control
    bytes taken out. The record factory is the process's, so it is put back afterwards."""
    previous: Callable[..., logging.LogRecord] = logging.getLogRecordFactory()

    def factory(*a: object, **kw: object) -> logging.LogRecord:
        record = previous(*a, **kw)
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed record is logging's to report, as it would be
            return record
        record.msg, record.args = clean(message, secrets), None
        return record

    logging.setLogRecordFactory(factory)
    try:
        yield
    finally:
        logging.setLogRecordFactory(previous)


def entry() -> None:
    """The console script: ``main``, then leave with its exit code.

    After an interrupt (exit 130) the cleanup has already run, and the process leaves at
    once: the interpreter's own exit (joining worker threads) is where a signal that came
    in during the cleanup was seen to surface as a second KeyboardInterrupt, ending the
    process by SIGINT (exit -2, about one run in 100 with SIGTERM at a random early point).
    """
    code = main()
    if code == EXIT_INTERRUPTED:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    entry()
