"""Config files by path, as the command line names them (`configs/x.py[:arg]`, relative to the
working directory or the repository), and the config a `--config=... --config.KEY=VALUE`
command line gives: parsed by ml_collections' own flag parser, so types and checks are those
of `experiments/train.py`. The sweeps, the benchmark suite, the GLUE runner and the converter
all load configs through here."""

from __future__ import annotations

import importlib.util
import os
import types
import warnings

import ml_collections
from absl import flags
from ml_collections import config_flags

from lmjax import errors

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def resolve_config_path(config_arg: str) -> str:
    """`path[:arg]` as given, else with the path relative to the repository."""
    file, _, arg = config_arg.partition(":")
    if not os.path.exists(file) and os.path.exists(os.path.join(REPO, file)):
        file = os.path.join(REPO, file)
    return file + (f":{arg}" if arg else "")


def absolute_config_path(config_arg: str) -> str:
    """`path[:arg]` with the path made absolute."""
    file, _, arg = config_arg.partition(":")
    return os.path.abspath(file) + (f":{arg}" if arg else "")


def load_module(path: str, name: str = "lmjax_config_file") -> types.ModuleType:
    """The Python file at `path` as a module (configs and sweep files are loaded by path)."""
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or not os.path.isfile(path):
        raise errors.MissingInput(f"no file {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def config_flag(key: str, value: bool | int | float | str | tuple | list) -> str:
    """`--config.KEY=VALUE` with VALUE written so that ml_collections parses it back."""
    if isinstance(value, bool | int | float):
        text = repr(value)
    elif isinstance(value, str):
        text = value
    elif isinstance(value, tuple | list):
        text = repr(tuple(value))
    else:
        raise TypeError(f"{key}: a {type(value).__name__} cannot be passed as --config.{key}")
    return f"--config.{key}={text}"


def load_config(config_arg: str, overrides: dict | None = None) -> ml_collections.ConfigDict:
    """The config `train.py --config=config_arg --config.KEY=VALUE...` would run with."""
    argv = ["train.py", f"--config={resolve_config_path(config_arg)}"]
    argv += [config_flag(k, v) for k, v in (overrides or {}).items()]
    flag_values = flags.FlagValues()
    holder = config_flags.DEFINE_config_file("config", flag_values=flag_values, sys_argv=argv)
    with warnings.catch_warnings():  # ml_collections loads the file with load_module()
        warnings.simplefilter("ignore", DeprecationWarning)
        flag_values(argv)
    return holder.value
