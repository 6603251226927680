"""Convert between a Hugging Face checkpoint directory and an lmjax workdir.

  # GPT2LMHeadModel, BertForPreTraining / BertModel / BertForMaskedLM or
  # BertForSequenceClassification (config.json, model.safetensors or pytorch_model.bin and the
  # tokenizer files) → a workdir that sample.py and `--config.init_from` read:
  python experiments/convert.py import --hf_dir=/path/to/gpt2 --workdir=/tmp/lmjax/gpt2
  # Any lmjax workdir (GPT, BERT pretraining, classifier) → a directory transformers loads:
  python experiments/convert.py export --workdir=/tmp/lmjax/sst2_ft --hf_dir=/tmp/sst2_hf

The imported workdir's config.json is the project config of its task (`BASE_CONFIGS`) with the
imported architecture, positions and vocabulary; its checkpoint is step 0.
"""

import os

from absl import flags, logging

from lmjax import cli, config_files, errors
from lmjax.convert import hf

_HF_DIR = flags.DEFINE_string("hf_dir", None, "Hugging Face model directory (read or written).")
_WORKDIR = flags.DEFINE_string("workdir", None, "lmjax workdir (written or read).")
_STEP = flags.DEFINE_integer("step", None, "export: the checkpoint step (default: the latest).")
flags.mark_flags_as_required(["hf_dir", "workdir"])

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")
# The config an imported workdir's config.json starts from, by task.
BASE_CONFIGS = {
    "clm": "gpt_shakespeare_char.py",
    "mlm_nsp": "bert_tiny_wikitext.py",
    "classify": "sst2_finetune.py",
}


def base_config(task):
    config = config_files.load_config(os.path.join(CONFIGS, BASE_CONFIGS[task]))
    config.unlock()  # the import adds the checkpoint's own model keys
    return config


def main(argv):
    if len(argv) != 2 or argv[1] not in ("import", "export"):
        raise errors.InputError("usage: convert.py import|export --hf_dir=DIR --workdir=DIR")
    logging.set_verbosity(logging.INFO)
    if argv[1] == "import":
        task = hf.import_to_workdir(_HF_DIR.value, _WORKDIR.value, base_config)
        logging.info("%s → %s (task %s)", _HF_DIR.value, _WORKDIR.value, task)
    else:
        hf.export_workdir(_WORKDIR.value, _HF_DIR.value, _STEP.value)
        logging.info("%s → %s", _WORKDIR.value, _HF_DIR.value)


if __name__ == "__main__":
    cli.run(main)
