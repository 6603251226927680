"""Loading a trained model from its workdir for sampling and evaluation."""

import flax.linen as nn
import jax

from lmjax import workdir as workdir_lib
from lmjax.train import build, checkpoint, parallel


def load_model(
    workdir: str, step: int | None = None, task: str | None = None
) -> tuple[nn.Module, dict, object]:
    """Returns (model, params, tokenizer) from WORKDIR's config, tokenizer and checkpoint (the
    latest step unless `step`), on one device. `task`: the task the workdir must have trained
    (e.g. "clm" for sampling); None takes any."""
    config = workdir_lib.load_config(workdir)
    if task is not None and config.task != task:
        raise ValueError(f"{workdir} trained task {config.task!r}; this needs task {task!r}")
    tokenizer = workdir_lib.load_tokenizer(workdir)
    s = build.setup(config, mesh=parallel.single_device_mesh())
    model = s.task.make_model(tokenizer.vocab_size)
    with jax.set_mesh(s.mesh):
        abstract_params = build.build(s, model).abstract_state["params"]
        # Parameters only: the optimizer state (and its structure) does not matter here.
        params, _, missing = checkpoint.load_pretrained_params(workdir, abstract_params, step)
    if missing:
        raise ValueError(f"the checkpoint in {workdir} lacks {missing[0]}, which its config needs")
    return model, params, tokenizer
