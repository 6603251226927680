"""How every entry point (`experiments/*.py`) runs: bad input is one line, a bug a traceback.

    if __name__ == "__main__":
        cli.run(main)

A command line that does not parse (an unknown flag or config key, a config file that does not
load, a value of the wrong type, a missing required flag) and an `errors.InputError` raised by
`main` print `lmjax: error: MESSAGE` on stderr, one line, and exit with status 2; an
`errors.RunStopped` (the run diverged, the disk is full) prints the same and exits with status 1.
Ctrl-C prints `lmjax: interrupted: ...` (how to resume, when the run saved) and exits with 130.
Any other exception is a bug and keeps its traceback. `--verbose` adds the traceback to every
error.
"""

from __future__ import annotations

import difflib
import functools
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any, NoReturn

from absl import app, flags, logging

from lmjax import errors, host_malloc
from lmjax.train import metrics

PROG = "lmjax"
EXIT_INPUT = 2  # bad input: nothing was run
EXIT_STOPPED = 1  # the run stopped (errors.RunStopped)
EXIT_INTERRUPTED = errors.Interrupted.EXIT_STATUS  # Ctrl-C

_VERBOSE = flags.DEFINE_boolean("verbose", False, "On an error, print its full traceback too.")


def run(main: Callable[[list[str]], Any]) -> None:
    """`absl.app.run(main)`, with the command line parsed by `parse_flags` and the errors of
    `main` reported as the module says (an `LMJAX_MALLOC` that is not a setting first)."""
    if message := host_malloc.opt_out_error():
        fail(message, EXIT_INPUT)
    app.run(functools.partial(_call, main), flags_parser=parse_flags)


def parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing (the remaining arguments), any failure one line with exit status 2."""
    try:
        rest = flags.FLAGS(argv)
        for flag in _config_flags():  # a config file that did not load raises when it is read
            hasattr(flag.value, "keys")
        return rest
    except Exception as e:
        message = flag_error(e, argv)
        if message is None:  # not the command line's fault: a bug, with its traceback
            raise
        fail(message, EXIT_INPUT, verbose=_verbose(argv))


def verbose() -> bool:
    """Whether `--verbose` was given (after the command line parsed)."""
    return _VERBOSE.value


def _call(main: Callable[[list[str]], Any], argv: list[str]) -> Any:
    metrics.quiet_library_logs(tracebacks=_VERBOSE.value)  # Orbax logs every file it writes
    if not _VERBOSE.value:  # e.g. TensorStore's callbacks after a failed save: "Event loop is
        sys.unraisablehook = lambda unraisable: None  # closed", 5 lines each, 20 times
    try:
        return main(argv)
    except (errors.InputError, app.UsageError) as e:
        fail(_message(e), EXIT_INPUT, verbose=_verbose(argv))
    except errors.RunStopped as e:
        fail(_message(e), EXIT_STOPPED, verbose=_verbose(argv))
    except errors.Interrupted as e:
        fail(_message(e), EXIT_INTERRUPTED, verbose=_verbose(argv), kind="interrupted")
    except KeyboardInterrupt:  # Ctrl-C outside a train loop, or a second one inside it
        fail("stopped by Ctrl-C", EXIT_INTERRUPTED, verbose=_verbose(argv), kind="interrupted")


def fail(message: str, status: int, verbose: bool = False, kind: str = "error") -> NoReturn:
    """Prints `lmjax: KIND: MESSAGE` (one line; the traceback before it when `verbose`) on
    stderr and exits with `status`."""
    if verbose:
        traceback.print_exc()
    sys.stdout.flush()
    print(f"{PROG}: {kind}: {one_line(message)}", file=sys.stderr, flush=True)
    _exit(status)


def _exit(status: int, grace_s: float = 10.0) -> NoReturn:
    """sys.exit(status), with a watchdog: when the interpreter's shutdown still waits after
    `grace_s` on threads a library left running (Orbax's save threads wait minutes for a step
    folder that a failed save never made), the process ends without them: the run has already
    stopped and said why."""

    def watchdog():
        time.sleep(grace_s)
        logging.flush()
        os._exit(status)

    threading.Thread(target=watchdog, name="lmjax-exit-watchdog", daemon=True).start()
    sys.exit(status)


def one_line(message: str) -> str:
    """`message` with its lines joined by spaces."""
    return " ".join(line.strip() for line in message.splitlines() if line.strip())


def _message(e: BaseException) -> str:
    # args[0], not str(e): str() of a KeyError (errors.InputError subclasses may be one) quotes it
    return e.args[0] if e.args and isinstance(e.args[0], str) else str(e)


def _verbose(argv: list[str]) -> bool:
    try:
        return _VERBOSE.value
    except flags.UnparsedFlagAccessError:  # the command line did not parse
        return any(a in ("--verbose", "--verbose=true", "--verbose=1") for a in argv)


#### What went wrong on the command line


def flag_error(e: Exception, argv: list[str]) -> str | None:
    """The one-line message of a command line that failed to parse with `e`, or None when `e`
    is not the command line's fault."""
    if isinstance(e, flags.Error):
        return _absl_error(str(e))
    if isinstance(e, AttributeError | KeyError):  # ml_collections: a --config.KEY it lacks
        return _unknown_config_key(argv)
    if isinstance(e, OSError):  # ml_collections: a config file that could not be loaded
        return _missing_config_file(argv) or _last_line(str(e))
    return None


def _absl_error(message: str) -> str:
    """absl's message; a config file whose get_config raised carries the traceback: keep the
    flag and the exception's own line (`unknown preset 'x'; known: test`)."""
    first = message.strip().splitlines()[0]
    if "Error whilst parsing config file" not in first:
        return one_line(message)
    flag = first.split(": Error whilst parsing config file")[0]
    return f"{flag}: {_last_line(message).split(': ', 1)[-1]}"


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else text


def _config_flags() -> list[flags.Flag]:
    """The flags defined by `config_flags.DEFINE_config_file`."""
    found = [flags.FLAGS[name] for name in flags.FLAGS]
    return [f for f in found if f.flag_type() == "config object"]  # ConfigFileFlagParser's


def _arguments(argv: list[str], name: str) -> list[tuple[str, str]]:
    """(flag as written, value) of every `--NAME=V`, `--NAME V`, `--NAME.PATH=V`, ... in argv,
    the flag's name without its leading dashes."""
    found = []
    for i, arg in enumerate(argv):
        flag, eq, value = arg.lstrip("-").partition("=")
        if arg.startswith("-") and (flag == name or flag.startswith(name + ".")):
            found.append((flag, value if eq else (argv[i + 1] if i + 1 < len(argv) else "")))
    return found


def _missing_config_file(argv: list[str]) -> str | None:
    for flag in _config_flags():
        for written, value in _arguments(argv, flag.name):
            path = value.split(":", 1)[0]
            if written == flag.name and not os.path.isfile(path):
                return f"config file {path!r} not found (--{flag.name}={value})"
    return None


def _unknown_config_key(argv: list[str]) -> str | None:
    """`unknown config key model.num_layer in --config.model.num_layer=3 (did you mean
    model.num_layers?)` for the first override whose key the loaded config lacks."""
    for flag in _config_flags():
        arguments = _arguments(argv, flag.name)
        files = [value for written, value in arguments if written == flag.name]
        if not files:
            continue
        config = flag.parser.parse(files[-1])
        for written, value in arguments:
            if written != flag.name:
                key = written[len(flag.name) + 1 :]
                unknown, hint = _first_unknown(config, key)
                if unknown is not None:
                    return f"unknown config key {unknown} in --{written}={value} ({hint})"
    return None


def _first_unknown(config: Any, key: str) -> tuple[str | None, str]:
    """(the first prefix of the dotted `key` that `config` lacks, a hint: the close key or the
    keys there); (None, "") when it has the whole key."""
    node, parts = config, key.split(".")
    for i, part in enumerate(parts):
        known = sorted(map(str, node.keys())) if hasattr(node, "keys") else []
        if part not in known:
            parent = ".".join(parts[:i])
            close = difflib.get_close_matches(part, known, n=1)
            if close:
                hint = f"did you mean {'.'.join([*parts[:i], close[0]])}?"
            else:
                hint = f"{parent or 'the config'} has {', '.join(known) or 'no keys'}"
            return ".".join(parts[: i + 1]), hint
        node = node[part]
    return None, ""
