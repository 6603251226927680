"""The unigram baseline of a BERT pretraining config's held-out MLM numbers: each masked token
predicted from the training text's token frequencies alone (add-one smoothed), scored on the
same masked positions as `eval/mlm_loss` and `eval/mlm_accuracy` (the eval set the run builds).
What an encoder must beat to have learned more than word frequencies.

  python experiments/mlm_baseline.py --config=configs/bert_books.py \
      --config.data.path=../shared/data/gutenberg/books
"""

from lmjax import host_malloc

host_malloc.restart_tuned(__name__)  # first: on a CPU host, glibc's malloc for XLA (see there)

import json

import numpy as np
from absl import flags
from ml_collections import config_flags

from lmjax import cli, tasks
from lmjax.data import books, pipeline, pretraining
from lmjax.tasks import mlm_nsp

_CONFIG = config_flags.DEFINE_config_file("config", None, "A BERT pretraining config.")
flags.mark_flags_as_required(["config"])


def training_documents(config):
    """The training documents (sentences) the run's instances come from."""
    if config.data.path:
        train_files, _ = books.train_and_eval_books(
            config.data.path, config.data.num_eval_documents
        )
        return (books.read_book(f) for f in train_files)
    return mlm_nsp.read_corpus_documents(config)[: -config.data.num_eval_documents]


def main(argv):
    del argv
    config = tasks.resolve_config(_CONFIG.value)
    data = tasks.get_task(config).make_data()
    counts = np.ones(data.vocab_size)  # add-one
    for document in pretraining.tokenize_documents(training_documents(config), data.tokenizer):
        for sentence in document:
            counts += np.bincount(sentence, minlength=data.vocab_size)
    log_p = np.log(counts / counts.sum())
    top = int(np.argmax(counts))
    loss = correct = n = 0.0
    for batch in pipeline.eval_batches(data.eval_ds, config.batch_size, config.eval_steps):
        weights = batch["masked_lm_weights"] * batch["eval_weight"][:, None]
        ids = batch["masked_lm_ids"]
        loss -= float(np.sum(log_p[ids] * weights))
        correct += float(np.sum((ids == top) * weights))
        n += float(np.sum(weights))
    result = {
        "unigram/mlm_loss": loss / n,
        "unigram/mlm_accuracy": correct / n,
        "most_frequent_token": data.tokenizer.decode([top]),
        "masked_positions": int(n),
        "training_tokens": int(counts.sum() - data.vocab_size),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    cli.run(main)
