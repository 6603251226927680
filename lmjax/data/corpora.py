"""Text corpora: the ones embedded in the package (no network) and local files."""

import os

ASSETS = os.path.join(os.path.dirname(__file__), "assets")
EMBEDDED = {
    # name: path inside lmjax/data/assets (provenance in assets/README.md)
    "tinyshakespeare": os.path.join(ASSETS, "tinyshakespeare", "input.txt"),
    "wikitext2_valid": os.path.join(ASSETS, "wikitext-2", "valid.txt"),
    "wikitext2_test": os.path.join(ASSETS, "wikitext-2", "test.txt"),
    "sst2_train": os.path.join(ASSETS, "sst2", "train.tsv"),
    "sst2_dev": os.path.join(ASSETS, "sst2", "dev.tsv"),
}


def read_text(name_or_path):
    """Returns the text of an embedded corpus (by name) or of a local file (by path)."""
    path = EMBEDDED.get(name_or_path, name_or_path)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"data file {path!r} not found: set config.data.path to an existing text file "
            f"or to one of the embedded corpora {sorted(EMBEDDED)}"
        )
    with open(path, encoding="utf-8") as f:
        return f.read()
