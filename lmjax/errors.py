"""Errors that are the user's to fix, and how the entry points report them.

An `InputError` is bad input: a config value, a flag, a data file, a workdir that does not fit
the run. Its message is one line that names the value and the fix. The entry points
(`lmjax.cli.run`) print it as `lmjax: error: MESSAGE` and exit with status 2, before anything is
written or trained; any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations


class InputError(ValueError):
    """Bad input: one line naming the value and the fix (exit status 2 at the command line)."""


class MissingInput(InputError, FileNotFoundError):
    """A file or directory that the input names does not exist."""


class RunStopped(Exception):
    """The run cannot go on, for a reason that is not a bug (it diverged, the disk is full): one
    line naming the reason and the last good checkpoint (exit status 1 at the command line)."""


class Diverged(RunStopped, FloatingPointError):
    """A loss, gradient norm or parameter is not finite; nothing non-finite was saved."""


class SaveFailed(RunStopped, OSError):
    """A checkpoint or the metrics could not be written (no space left, no permission): the run
    stops at once."""


class Interrupted(Exception):
    """The user stopped the run (Ctrl-C) and what it had done is saved: one line saying how to
    resume (exit status 130 at the command line, as for any process stopped by SIGINT)."""

    EXIT_STATUS = 130  # 128 + SIGINT, as a shell reports it
