"""Loading a trained model from its workdir for sampling and evaluation."""

import flax.linen as nn
import jax
import ml_collections
import numpy as np

from lmjax import errors
from lmjax import workdir as workdir_lib
from lmjax.data import tokenizers
from lmjax.train import build, checkpoint, parallel


def check_workdir(
    workdir: str, step: int | None = None, task: str | None = None
) -> ml_collections.ConfigDict:
    """The config of `workdir` once it is known to be a trained workdir
    (`workdir.check_trained`) with a checkpoint of `step` (when given) that trained `task`
    (None: any); otherwise `errors.MissingInput` or `errors.InputError` naming it, before
    anything is loaded."""
    workdir_lib.check_trained(workdir)
    config = workdir_lib.load_config(workdir)
    if task is not None and config.task != task:
        raise errors.InputError(
            f"workdir {workdir!r} trained task {config.task!r}; this needs task {task!r}"
        )
    steps = workdir_lib.checkpoint_steps(workdir)
    if step is not None and step not in steps:
        raise errors.MissingInput(
            f"workdir {workdir!r} has no checkpoint of step {step}: its steps are {steps}"
        )
    return config


def load_tokenizer(workdir: str, task: str | None = None) -> tokenizers.Tokenizer:
    """The tokenizer of a trained workdir (`check_workdir` first): a prompt can be checked
    before the model loads."""
    check_workdir(workdir, task=task)
    return workdir_lib.load_tokenizer(workdir)


def encode_prompt(tokenizer: tokenizers.Tokenizer, prompt: str) -> np.ndarray:
    """The prompt's token ids [P]; `errors.InputError` when the tokenizer cannot encode it (a
    character outside a character vocabulary) or it encodes to no token."""
    try:
        ids = tokenizer.encode(prompt)
    except errors.InputError as e:
        raise errors.InputError(f"the prompt {prompt!r} does not encode: {e}") from None
    if ids.size == 0:
        raise errors.InputError(f"the prompt {prompt!r} encodes to no token: give some text")
    return ids


def load_model(
    workdir: str, step: int | None = None, task: str | None = None
) -> tuple[nn.Module, dict, object]:
    """Returns (model, params, tokenizer) from WORKDIR's config, tokenizer and checkpoint (the
    latest step unless `step`), on one device. `task`: the task the workdir must have trained
    (e.g. "clm" for sampling); None takes any."""
    config = check_workdir(workdir, step, task)
    tokenizer = workdir_lib.load_tokenizer(workdir)
    s = build.setup(config, mesh=parallel.single_device_mesh())
    model = s.task.make_model(tokenizer.vocab_size)
    with jax.set_mesh(s.mesh):
        abstract_params = build.build(s, model).abstract_state["params"]
        # Parameters only: the optimizer state (and its structure) does not matter here.
        params, _, missing = checkpoint.load_pretrained_params(workdir, abstract_params, step)
    if missing:
        raise errors.InputError(
            f"the checkpoint in {workdir} lacks {missing[0]}, which its config needs"
        )
    if not checkpoint.all_finite(params):  # saved by an lmjax without the NaN guard
        raise errors.InputError(
            f"the checkpoint in {workdir} holds parameters that are not finite (its run "
            "diverged; lmjax since its NaN guard never saves one): retrain it"
        )
    return model, params, tokenizer
