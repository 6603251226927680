"""From a config to what runs: the task, mesh and rules (`setup`), then the sharded train state
and the compiled steps (`build`), on the jit-over-a-mesh path or the pmap path.

    s = build.setup(config)                       # checks the mesh, batch and model first
    data = s.task.make_data(workdir)
    b = build.build(s, s.task.make_model(data.vocab_size))
    with s.activate():
        state = b.steps.place(b.init(jax.random.PRNGKey(0)))
        state, metrics = b.steps.train(state, next(batches))

The loop, the benchmark, inference and Hugging Face import all build their state here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
from collections.abc import Callable, Iterator, Sequence

import flax.linen as nn
import jax
import ml_collections
import numpy as np
import optax
from jax.sharding import Mesh

from lmjax import errors, tasks
from lmjax.models import attention
from lmjax.train import parallel, step


@dataclasses.dataclass(frozen=True)
class Setup:
    """What a run needs first: its resolved config, its task, the device mesh and axis rules,
    and the kernels `auto` took on the mesh's devices (the task's config holds them)."""

    config: ml_collections.ConfigDict
    task: tasks.Task
    mesh: Mesh
    rules: tuple
    kernels: dict[str, attention.Choice]  # {"attention_impl": Choice, "matmul_impl": Choice}

    @contextlib.contextmanager
    def activate(self) -> Iterator[None]:
        """The context steps run in: the mesh and the logical-axis rules (which turn the model's
        `with_logical_constraint`s into sharding constraints); none of it on the pmap path,
        where the constraints would name mesh axes that pmap does not have."""
        if self.config.use_pmap:
            yield
        else:
            with jax.set_mesh(self.mesh), nn.logical_axis_rules(self.rules):
                yield


def setup(
    config: ml_collections.ConfigDict,
    devices: Sequence[jax.Device] | None = None,
    mesh: Mesh | None = None,
    workdir: str | None = None,
) -> Setup:
    """Resolves `config` (`tasks.resolve_config`, for a run in `workdir`: its values are checked
    there), makes its mesh (over `devices`, default all; or `mesh` as given), checks that the
    batch and the model divide over it and picks the kernels (`resolve_kernels`)."""
    config = tasks.resolve_config(config, workdir)
    mesh = parallel.make_mesh(config.mesh, devices) if mesh is None else mesh
    kernels = resolve_kernels(config, mesh)
    _check_offload(config, mesh)
    rules = tuple(tuple(r) for r in config.logical_axis_rules)
    parallel.check_batch_size(config.batch_size, mesh, rules, config.grad_accum_steps)
    parallel.check_model_fits_mesh(config.model, mesh, rules)
    with_kernels = config.copy_and_resolve_references()
    for key, choice in kernels.items():
        with_kernels.model[key] = choice.impl
    return Setup(config, tasks.get_task(with_kernels), mesh, rules, kernels)


def _check_offload(config: ml_collections.ConfigDict, mesh: Mesh) -> None:
    """InputError for a remat policy that offloads to host memory on devices without it."""
    if config.model.get("remat") and config.model.remat_policy.startswith("save_and_offload"):
        platforms = sorted({d.platform for d in mesh.devices.flat})
        if not set(platforms) <= {"gpu", "tpu"}:
            raise errors.InputError(
                f"config.model.remat_policy={config.model.remat_policy!r} offloads to host "
                f"memory, which GPUs and TPUs have and this run's devices ({', '.join(platforms)}) "
                "do not: use save_only_these_names"
            )


def resolve_kernels(config: ml_collections.ConfigDict, mesh: Mesh) -> dict[str, attention.Choice]:
    """The attention and matmul kernels of `config.model` on the mesh's devices (`auto` picks
    the fastest that supports the model: `attention.resolve`); InputError, before any data is
    read, for a named kernel they cannot run. Builds the CPU kernel when it is taken."""
    model, devices = config.model, list(mesh.devices.flat)
    try:
        return {
            "attention_impl": attention.resolve(
                model.attention_impl,
                devices,
                causal=tasks.task_class(config.task).CAUSAL,
                head_dim=model.emb_dim // model.num_heads,
                seq_len=config.seq_len,
                dtype=jax.numpy.dtype(model.get("dtype", "float32")),
                dropout=model.get("attention_dropout_rate", 0.0) > 0,
            ),
            "matmul_impl": attention.resolve_matmul(model.matmul_impl, devices),
        }
    except ValueError as e:
        raise errors.InputError(f"config.model.{e}") from None


@dataclasses.dataclass(frozen=True)
class Steps:
    """The compiled steps, taking this process's numpy batches, and where the state lives."""

    train: Callable  # (state, host_batch) -> (state, metrics)
    eval: Callable  # (state, host_batch) -> ({name: (sum, count)}, {name: [B] outputs})
    place: Callable = lambda state: state  # init/restored state -> the layout `train` takes
    unplace: Callable = lambda state: state  # and back (for checkpoints)


@dataclasses.dataclass(frozen=True)
class Built:
    """A model's train state (abstract, with shardings), its init and its compiled steps."""

    setup: Setup
    model: nn.Module
    tx: optax.GradientTransformation
    abstract_state: dict  # ShapeDtypeStructs carrying the state's shardings
    shardings: dict  # NamedShardings of the state
    init: Callable  # rng -> a fresh state, created already sharded
    steps: Steps


def build(s: Setup, model: nn.Module) -> Built:
    """The state of `model` sharded as the rules say, and its train/eval steps (jit over the
    mesh, or pmap with `config.use_pmap`). Nothing compiles until a step is first called."""
    config, task = s.config, s.task
    tx = step.make_optimizer(config)
    example = task.fake_batch(model.cfg.vocab_size)
    init = functools.partial(step.init_state, task, model, tx, example_batch=example)
    boxed = jax.eval_shape(init, jax.random.PRNGKey(0))
    shardings = parallel.state_shardings(boxed, s.mesh, s.rules)
    abstract = jax.tree.map(
        lambda a, sh: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sh),
        parallel.unbox(boxed),
        shardings,
    )
    init_sharded = jax.jit(lambda rng: parallel.unbox(init(rng)), out_shardings=shardings)
    make_steps = _pmap_steps if config.use_pmap else _jit_steps
    steps = make_steps(s, model, tx, shardings)
    return Built(s, model, tx, abstract, shardings, init_sharded, steps)


def _jit_steps(s: Setup, model, tx, shardings) -> Steps:
    """jit over the mesh: the state sharded as the rules say, batches on the batch axes."""
    batch_sharding = parallel.batch_sharding(s.mesh, s.rules)
    train_step = jax.jit(
        step.make_train_step(s.config, s.task, model, tx),
        in_shardings=(shardings, batch_sharding),
        out_shardings=(shardings, parallel.replicated(s.mesh)),
        donate_argnums=0,
    )
    train_step = _memory_checked(train_step, s)
    eval_step = jax.jit(
        step.make_eval_step(s.task, model),
        in_shardings=(shardings["params"], batch_sharding),
        out_shardings=parallel.replicated(s.mesh),
    )
    return Steps(
        train=lambda state, b: train_step(state, parallel.to_global_batch(b, batch_sharding)),
        eval=lambda state, b: eval_step(
            state["params"], parallel.to_global_batch(b, batch_sharding)
        ),
    )


def _pmap_steps(s: Setup, model, tx, shardings) -> Steps:
    """The `config.use_pmap` path: the state replicated on every local device, each device a
    slice of the batch, gradients and metrics summed with `lax.psum` (see `make_train_step`)."""
    if any(not sh.is_fully_replicated for sh in jax.tree.leaves(shardings)):
        raise errors.InputError(
            "use_pmap=True replicates the state: it needs mesh.fsdp=1 and mesh.tensor=1 "
            "(use the mesh path for FSDP and tensor parallelism)"
        )
    devices = list(s.mesh.devices.flat)
    n = sum(d.process_index == jax.process_index() for d in devices)  # this process's share
    pmap = functools.partial(jax.pmap, axis_name="devices", devices=devices)
    train_step = pmap(
        step.make_train_step(s.config, s.task, model, tx, axis_name="devices"), donate_argnums=0
    )
    eval_metrics = step.make_eval_step(s.task, model)

    def eval_on_device(params, b):
        sums, outputs = eval_metrics(params, b)
        return jax.lax.psum(sums, "devices"), outputs

    eval_step = pmap(eval_on_device)

    def split(batch):  # [B, ...] -> [devices, B / devices, ...]
        return jax.tree.map(lambda x: x.reshape(n, x.shape[0] // n, *x.shape[1:]), batch)

    def first(tree):  # one device's copy of a replicated tree
        return jax.tree.map(lambda x: np.asarray(x.addressable_data(0)), tree)

    def train(state, batch):
        state, metrics = train_step(state, split(batch))
        return state, jax.tree.map(lambda x: x[0], metrics)

    def place(state):
        return pmap(lambda x: x)(jax.tree.map(lambda x: np.stack([x] * n), first(state)))

    def unplace(state):
        return jax.tree.map(
            lambda x, sh: jax.make_array_from_process_local_data(sh, x), first(state), shardings
        )

    def evaluate(state, batch):
        sums, outputs = eval_step(state["params"], split(batch))
        # Sums: every device holds the total; outputs: [devices, B / devices] -> [B].
        sums = jax.tree.map(lambda x: x[0], sums)
        return sums, jax.tree.map(lambda x: x.reshape(-1, *x.shape[2:]), outputs)

    return Steps(train=train, eval=evaluate, place=place, unplace=unplace)


def _memory_checked(train_step: Callable, s: Setup) -> Callable:
    """`train_step` (jitted), whose first call compiles it ahead of time and checks that it fits
    in memory (`check_memory`), so that a batch_size or seq_len too large is a one-line
    `errors.InputError` naming them, not an out-of-memory error from inside XLA (or the OOM
    killer). jit reuses that compilation: nothing compiles twice, and later calls go straight
    to the step."""
    checked = False

    def call(state, batch):
        nonlocal checked
        if checked:
            return train_step(state, batch)
        check_memory(train_step.lower(state, batch).compile(), s)
        checked = True
        try:
            return train_step(state, batch)
        except jax.errors.JaxRuntimeError as e:  # the estimate fitted, the device did not
            if "RESOURCE_EXHAUSTED" not in str(e):
                raise
            reason = str(e).strip().splitlines()[0]
            raise _too_large(s.config, f"ran out of memory ({reason})") from e

    return call


def _too_large(config: ml_collections.ConfigDict, what: str) -> errors.InputError:
    return errors.InputError(
        f"the train step of config.batch_size={config.batch_size}, seq_len={config.seq_len} "
        f"{what}: lower batch_size or seq_len, or raise grad_accum_steps"
    )


def check_memory(compiled: jax.stages.Compiled, s: Setup) -> None:
    """`errors.InputError` when the memory the compiled train step allocates beyond its inputs
    (XLA's `memory_analysis`) exceeds what is free: on an accelerator its memory, on CPU the
    host's (shared by all local devices). Nothing is checked where either figure is unknown."""
    stats = compiled.memory_analysis()
    local = [d for d in s.mesh.devices.flat if d.process_index == jax.process_index()]
    free = _free_memory(local[0])
    if stats is None or free is None:
        return
    need = stats.temp_size_in_bytes + stats.output_size_in_bytes - stats.alias_size_in_bytes
    where = f"on {local[0].device_kind}"
    if local[0].platform == "cpu":
        need, where = need * len(local), "in host memory"
    if need > free:
        raise _too_large(
            s.config,
            f"needs {need / 2**30:,.1f} GiB beyond the state (XLA's estimate), and "
            f"{free / 2**30:,.1f} GiB are free {where}",
        )


def _free_memory(device: jax.Device) -> int | None:
    """Bytes free on `device` (its allocator's limit less what is in use), or for a CPU device
    the host's available memory; None where neither is known."""
    stats = device.memory_stats()
    if stats and "bytes_limit" in stats:
        return stats["bytes_limit"] - stats.get("bytes_in_use", 0)
    if device.platform == "cpu" and os.path.exists("/proc/meminfo"):
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    return None
