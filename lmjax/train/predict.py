"""Predictions of a fine-tuned GLUE workdir on a task file, in GLUE's submission format.

The task is the workdir's `data.glue_task`; the file is a train/dev file or GLUE's unlabelled
test layout of that task (lmjax.data.glue.read_tsv). The examples are encoded as in training
(`classify.encode_examples`, the run's `seq_len`) and scored with the model applied as in eval:
class ids (argmax of the logits), or the regression output for STS-B. The submission file is
`index<TAB>prediction` then one line per example in file order, the prediction being the label
string (`FORMATS[task].labels[id]`, e.g. `entailment`) or the STS-B score with 3 decimals.
"""

from __future__ import annotations

import jax
import numpy as np

from lmjax import errors, tasks
from lmjax import workdir as workdir_lib
from lmjax.data import glue
from lmjax.tasks import classify
from lmjax.train import inference


def glue_task(workdir: str) -> str:
    """The GLUE task a workdir fine-tuned (its `data.glue_task`); ValueError for another run."""
    config = workdir_lib.load_config(workdir)
    if config.task != "classify":
        raise errors.InputError(f"{workdir} trained task {config.task!r}, not a GLUE fine-tune")
    return config.data.glue_task


def predict(workdir: str, path: str, step: int | None = None, batch_size: int = 64) -> np.ndarray:
    """The workdir's predictions for every example of `path` (a file of its task, labelled or
    not), in file order: int class ids, or float scores for STS-B. `step`: the checkpoint
    (default the latest). The file is read before the model loads: a bad file fails fast."""
    task_name = glue_task(workdir)
    examples = glue.read_tsv(path, task_name)
    if batch_size < 1:
        raise errors.InputError(f"batch_size={batch_size} must be >= 1")
    config = workdir_lib.load_config(workdir)
    task = tasks.get_task(config)
    model, params, tokenizer = inference.load_model(workdir, step, task="classify")
    arrays = classify.encode_examples(examples, tokenizer, config.seq_len)
    inputs = {k: arrays[k] for k in task.INPUTS}
    apply = jax.jit(lambda params, batch: task.apply(model, params, batch)["logits"])
    n = len(examples)
    outputs = []
    for start in range(0, n, batch_size):
        batch = {k: v[start : start + batch_size] for k, v in inputs.items()}
        real = len(batch["input_ids"])
        if real < batch_size:  # one compiled shape: repeat the last example, drop it after
            pad = batch_size - real
            batch = {k: np.pad(v, [(0, pad), (0, 0)], mode="edge") for k, v in batch.items()}
        logits_BxC = np.asarray(apply(params, batch))[:real]
        outputs.append(logits_BxC[:, 0] if glue.is_regression(task_name) else logits_BxC.argmax(-1))
    return np.concatenate(outputs)


def format_predictions(task: str, predictions: np.ndarray) -> list[str]:
    """GLUE's submission lines: `index<TAB>prediction`, then `i<TAB>label` (the label string
    of the class id) or `i<TAB>score` (STS-B, 3 decimals)."""
    labels = glue.get_format(task).labels
    if labels is None:
        shown = [f"{float(p):.3f}" for p in predictions]
    else:
        shown = [labels[int(p)] for p in predictions]
    return ["index\tprediction", *[f"{i}\t{p}" for i, p in enumerate(shown)]]


def check_output(output: str) -> None:
    """InputError unless `output` can be a new or replaced file: not a folder, in one that
    exists."""
    file = workdir_lib.path(output)
    if file.is_dir():
        raise errors.InputError(
            f"--output={output} is a folder: give a file name, e.g. {file / 'predictions.tsv'}"
        )
    if not file.parent.is_dir():
        raise errors.MissingInput(
            f"--output={output}: the folder {file.parent} does not exist: make it "
            f"(mkdir -p {file.parent}) or give another path"
        )


def write_predictions(
    workdir: str, path: str, output: str, step: int | None = None, batch_size: int = 64
) -> int:
    """Predicts every example of `path` (`predict`) and writes them to `output` in GLUE's
    submission format; `output` is checked first. Returns the number of examples."""
    check_output(output)
    predictions = predict(workdir, path, step, batch_size)
    lines = format_predictions(glue_task(workdir), predictions)
    with workdir_lib.path(output).open("w") as f:
        f.write("\n".join(lines) + "\n")
    return len(predictions)
