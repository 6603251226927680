"""Runs the tiny config under several meshes in one process; prints JSON for test_parallel.py.

  python tests/parallel_worker.py OUT_DIR [CASE ...]    # XLA_FLAGS: 8 host platform devices

Each case is a name, dotted overrides and how many of the devices it uses. Without CASE names
it runs them all; fsdp8 also runs the RESUMED cases, which start from its checkpoint.
"""

import json
import os
import shutil
import sys

import jax

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from lmjax import workdir as workdir_lib  # noqa: E402
from lmjax.train import build, loop  # noqa: E402
from tests.conftest import override, tiny_config  # noqa: E402

STEPS = 10
BASE = {
    "num_train_steps": STEPS,
    "log_every_steps": 1,
    "eval_every_steps": STEPS,
    "checkpoint_every_steps": STEPS // 2,
    "model.num_heads": 4,
    "model.emb_dim": 32,
    "model.mlp_dim": 64,
}
CASES = {
    "one_device": ({"mesh.data": 1}, 1),
    "data8": ({"mesh.data": 8}, 8),
    "fsdp8": ({"mesh.data": 1, "mesh.fsdp": 8}, 8),
    "data2_tensor4": ({"mesh.data": 2, "mesh.tensor": 4}, 8),
    "data2_fsdp2_tensor2": ({"mesh.data": 2, "mesh.fsdp": 2, "mesh.tensor": 2}, 8),
    "pmap8": ({"mesh.data": 8, "use_pmap": True}, 8),
    "pmap4_grad_accum2": ({"mesh.data": 4, "use_pmap": True, "grad_accum_steps": 2}, 4),
    "grad_accum4": ({"mesh.data": 1, "grad_accum_steps": 4}, 1),
    "data2_grad_accum2": ({"mesh.data": 2, "grad_accum_steps": 2}, 2),
    "remat": ({"mesh.data": 1, "model.remat": True}, 1),
    "bfloat16": ({"mesh.data": 1, "model.dtype": "bfloat16"}, 1),
    "remat_dots": ({"mesh.data": 1, "model.remat": True, "model.remat_policy": "dots_saveable"}, 1),
}
# The cases whose parameter shardings the tests read (an init per case, 2-4 s each).
SHARDS = ("one_device", "data8", "fsdp8", "data2_tensor4", "data2_fsdp2_tensor2", "bfloat16")
RESUMED = {
    "fsdp8_resumed_on_one_device": ({"mesh.data": 1}, 1),
    "fsdp8_resumed_on_data2_tensor4": ({"mesh.data": 2, "mesh.tensor": 4}, 8),
}


def param_shards(config, devices):
    """Each parameter's sharding, as the shape of the piece device 0 holds, in the state the
    loop creates."""
    s = build.setup(config, devices)
    with jax.set_mesh(s.mesh):
        params = build.build(s, s.task.make_model(65)).init(jax.random.PRNGKey(0))["params"]
    flat = {
        jax.tree_util.keystr(p, simple=True, separator="/"): x
        for p, x in jax.tree_util.tree_flatten_with_path(params)[0]
    }
    return {name: [x.sharding.shard_shape(x.shape), str(x.dtype)] for name, x in flat.items()}


def main(out_dir, names):
    results = {}
    for name in names:
        overrides, n = CASES[name]
        config = override(tiny_config(**BASE), **overrides)
        workdir = os.path.join(out_dir, name)
        loop.train_and_evaluate(config, workdir, devices=jax.devices()[:n])
        losses = [r["train/loss"] for r in workdir_lib.read_metrics(workdir) if "train/loss" in r]
        results[name] = {"losses": losses}
        if name in SHARDS:
            results[name]["shards"] = param_shards(config, jax.devices()[:n])
    # Resharding restore: fsdp=8's step-5 checkpoint resumed under other meshes.
    for name, (overrides, n) in RESUMED.items() if "fsdp8" in names else ():
        workdir = os.path.join(out_dir, name)
        shutil.copytree(os.path.join(out_dir, "fsdp8"), workdir)
        shutil.rmtree(os.path.join(workdir, "checkpoints", str(STEPS)))
        config = override(tiny_config(**BASE), **overrides)
        loop.train_and_evaluate(config, workdir, devices=jax.devices()[:n])
        losses = [r["train/loss"] for r in workdir_lib.read_metrics(workdir) if "train/loss" in r]
        results[name] = {"losses": losses}
    print("RESULTS " + json.dumps(results))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:] or list(CASES))
