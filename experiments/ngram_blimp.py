"""BLiMP zero-shot for a modified Kneser-Ney n-gram model trained on the first words of the books.

  python experiments/ngram_blimp.py --order=3 [--max_words=10000000] \
      [--books=../shared/data/gutenberg/books] [--limit=100] [--output=/tmp/ngram_pairs.jsonl] \
      [--data=path/to/blimp]

The model counts the lowercased WordPiece tokens (gutenberg_vocab_16k) of the first --max_words
words of the manifest's `train` books, in manifest order (`lmjax.data.books.first_words`), each
sentence between start and end symbols; a sentence's score is its log-probability. Prints the
table of experiments/blimp.py; with --output, writes one JSON line per pair and blimp.json and
blimp.png beside it. See docs/experiments/blimp_10m.md.
"""

import os

from absl import flags

from lmjax import cli
from lmjax.evals import blimp, ngram

_ORDER = flags.DEFINE_integer("order", 3, "The n of the n-gram model (1: unigram).")
_MAX_WORDS = flags.DEFINE_integer("max_words", 10_000_000, "Words of the training books kept.")
_BOOKS = flags.DEFINE_string(
    "books", "../shared/data/gutenberg/books", "A folder, glob or manifest of the books."
)
_DATA = flags.DEFINE_string(
    "data", None, "A BLiMP folder (data/*.jsonl) or a .jsonl file (default: the shipped pairs)."
)
_OUTPUT = flags.DEFINE_string("output", None, "A JSON-lines file of per-pair log-probabilities.")
_LIMIT = flags.DEFINE_integer("limit", None, "Only the first N pairs of each paradigm.")


def main(argv):
    del argv
    summary = ngram.evaluate(
        _BOOKS.value,
        order=_ORDER.value,
        max_words=_MAX_WORDS.value,
        data=_DATA.value,
        limit=_LIMIT.value,
        output=_OUTPUT.value,
    )
    print(blimp.format_table(summary))
    corpus = summary["corpus"]
    print(
        f"corpus: {corpus['words']:,} words, {corpus['tokens']:,} tokens, "
        f"{corpus['sentences']:,} sentences of {corpus['books']} books "
        f"(last {os.path.basename(corpus['last_book'] or '-')}); "
        f"trained in {summary['train_seconds']} s"
    )
    if _OUTPUT.value:
        for path in blimp.save_summary(summary, os.path.dirname(os.path.abspath(_OUTPUT.value))):
            print(f"wrote {path}")
        print(f"wrote {_OUTPUT.value}")


if __name__ == "__main__":
    cli.run(main)
