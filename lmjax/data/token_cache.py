"""A corpus's token ids, kept so that a resume, a second run on the same text or another host
of the same run reads them in seconds instead of tokenizing the corpus again.

    ids = token_cache.load_or_build(token_cache.key(texts, tokenizer), build)

`CACHE/token_ids/<key>.npy`, CACHE being `$LMJAX_TOKEN_CACHE`, else `$XDG_CACHE_HOME/lmjax`
(default `~/.cache/lmjax`); `LMJAX_TOKEN_CACHE=` (empty) turns it off. The key is a hash of the
texts and of the tokenizer's saved files: a changed corpus or vocabulary builds a new file,
never reads a stale one. In a run of several processes, process 0 builds and writes it and the
others read it once it is there (a cache folder every host sees); where they do not see it, each
builds its own. Written to a temporary name and renamed: a kill leaves no half file. Nothing is
written to the run's workdir. A cache folder that cannot be written is skipped with a warning.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from collections.abc import Callable, Sequence

import jax
import numpy as np
from absl import logging
from etils import epath
from jax.experimental import multihost_utils

from lmjax.data import tokenizers

FOLDER = "token_ids"
VERSION = 1  # of the file's layout; part of the key


def key(texts: Sequence[str], tokenizer: tokenizers.Tokenizer) -> str:
    """A hash of `texts` (in order) and of the files `tokenizer.save` writes."""
    h = hashlib.sha256(f"lmjax token ids v{VERSION}".encode())
    for text in texts:
        h.update(hashlib.sha256(text.encode("utf-8")).digest())
    with tempfile.TemporaryDirectory() as saved:
        tokenizer.save(saved)
        for name in sorted(os.listdir(saved)):
            with open(os.path.join(saved, name), "rb") as f:
                h.update(name.encode() + b"\0" + f.read())
    return h.hexdigest()[:24]


ENV = "LMJAX_TOKEN_CACHE"


def cache_dir() -> str:
    """The cache folder ("" when turned off)."""
    if ENV in os.environ:
        return os.environ[ENV]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "lmjax")


def load_or_build(name: str, build: Callable[[], np.ndarray]) -> np.ndarray:
    """The int32 array cached as CACHE/token_ids/NAME.npy, else `build()`'s (written there by
    process 0)."""
    folder = cache_dir()
    if not folder:
        return _timed(build)
    path = epath.Path(folder) / FOLDER / f"{name}.npy"
    exists = path.exists()
    ids = None
    if jax.process_index() == 0 and not exists:
        ids = _timed(build)
        try:
            _write(path, ids)
        except OSError as e:
            logging.warning("token ids not cached (%s): set %s to a writable folder", e, ENV)
    if jax.process_count() > 1:  # every process, whatever it sees: no one waits alone
        multihost_utils.sync_global_devices(f"token ids {name}")
        exists = path.exists()
    if ids is not None:
        return ids
    return _read(path) if exists else _timed(build)


def _timed(build: Callable[[], np.ndarray]) -> np.ndarray:
    start = time.perf_counter()
    ids = np.asarray(build(), np.int32)
    seconds = time.perf_counter() - start
    logging.info("tokenized: %s tokens in %.1f s (%s tokens/s)", f"{ids.size:,}", seconds,
                 f"{ids.size / max(seconds, 1e-9):,.0f}")  # fmt: skip
    return ids


def _read(path: epath.Path) -> np.ndarray:
    with path.open("rb") as f:
        ids = np.load(f)
    logging.info("token ids read from %s (%s tokens)", path, f"{ids.size:,}")
    return ids


def _write(path: epath.Path, ids: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{os.getpid()}.tmp"
    with tmp.open("wb") as f:
        np.save(f, ids)
    tmp.rename(path)
