"""Generate text from a trained workdir (its config, tokenizer and latest checkpoint).

  python experiments/sample.py --workdir=/tmp/shakespeare --prompt="ROMEO:" --max_new_tokens=200 \
      --temperature=0.8 --top_k=40 --top_p=0.95 --seed=0
"""

from lmjax import host_malloc

host_malloc.restart_tuned(__name__)  # first: on a CPU host, glibc's malloc for XLA (see there)

import jax
from absl import flags

from lmjax import cli, sampling
from lmjax.train import inference

_WORKDIR = flags.DEFINE_string("workdir", None, "A training workdir.")
_PROMPT = flags.DEFINE_string("prompt", "\n", "Text to continue.")
_MAX_NEW = flags.DEFINE_integer("max_new_tokens", 200, "Number of tokens to generate.")
_TEMPERATURE = flags.DEFINE_float("temperature", 0.8, "Softmax temperature; 0 is greedy.")
_TOP_K = flags.DEFINE_integer("top_k", 0, "Keep only the k most likely tokens (0: all).")
_TOP_P = flags.DEFINE_float("top_p", 1.0, "Nucleus sampling: smallest set with this mass.")
_SEED = flags.DEFINE_integer("seed", 0, "Sampling seed.")
_NUM_SAMPLES = flags.DEFINE_integer("num_samples", 1, "Independent samples of the prompt.")
flags.mark_flags_as_required(["workdir"])


def main(argv):
    del argv
    sampling.check_options(
        _MAX_NEW.value, _TEMPERATURE.value, _TOP_K.value, _TOP_P.value, _NUM_SAMPLES.value
    )
    # The workdir and the prompt are checked before the model loads.
    tokenizer = inference.load_tokenizer(_WORKDIR.value, task="clm")
    prompt = inference.encode_prompt(tokenizer, _PROMPT.value)[None].repeat(_NUM_SAMPLES.value, 0)
    model, params, _ = inference.load_model(_WORKDIR.value, task="clm")
    tokens = sampling.generate(
        model,
        params,
        prompt,
        _MAX_NEW.value,
        jax.random.PRNGKey(_SEED.value),
        temperature=_TEMPERATURE.value,
        top_k=_TOP_K.value,
        top_p=_TOP_P.value,
    )
    for row in tokens:
        print(_PROMPT.value + tokenizer.decode(row))
        print("-" * 40)


if __name__ == "__main__":
    cli.run(main)
