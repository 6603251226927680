"""Loading a trained model from its workdir for sampling and evaluation."""

import jax

from lmjax.data import tokenizers
from lmjax.train import checkpoint, loop


def load_model(workdir, step=None, task=None):
    """Returns (model, params, tokenizer) from WORKDIR's config, tokenizer and checkpoint (the
    latest step unless `step`), on one device. `task`: the task the workdir must have trained
    (e.g. "clm" for sampling); None takes any."""
    config = loop.load_config(workdir)
    if task is not None and config.task != task:
        raise ValueError(f"{workdir} trained task {config.task!r}; this needs task {task!r}")
    tokenizer = tokenizers.load_tokenizer(workdir)
    config.mesh.data, config.mesh.fsdp, config.mesh.tensor = 1, 1, 1
    task, mesh, rules = loop.setup(config, devices=jax.devices()[:1])
    model = task.make_model(config, tokenizer.vocab_size)
    with jax.set_mesh(mesh):
        _, abstract_state, _, _ = loop.build_state(config, task, model, mesh, rules)
        # Parameters only: the optimizer state (and its structure) does not matter here.
        params, _, missing = checkpoint.load_pretrained_params(
            workdir, abstract_state["params"], step
        )
    if missing:
        raise ValueError(f"the checkpoint in {workdir} lacks {missing[0]}, which its config needs")
    return model, params, tokenizer
