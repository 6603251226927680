"""The per-op profile: FLOPs and model paths read from HLO, times from trace events, and the
entry point end to end on a tiny model."""
# ruff: noqa: E501  (the HLO lines below are long)

import os
import re
import subprocess
import sys

from benchmarks import profile_step as profile

HLO = """\
HloModule jit_train_step, entry_computation_layout={()}

%fused_dot (param_0: f32[8,16], param_1: f32[16,32]) -> f32[8,32] {
  %param_0 = f32[8,16]{1,0} parameter(0)
  %param_1 = f32[16,32]{1,0} parameter(1)
  ROOT %dot.1 = f32[8,32]{1,0} dot(%param_0, %param_1), lhs_contracting_dims={1}, rhs_contracting_dims={0}, metadata={op_name="jit(train_step)/jvp(Transformer)/Transformer.encode/block_0/mlp/fc/dot_general"}
}

%fused_gelu (param_0.1: f32[8,32]) -> f32[8,32] {
  %param_0.1 = f32[8,32]{1,0} parameter(0)
  %tanh.1 = f32[8,32]{1,0} tanh(%param_0.1), metadata={op_name="jit(train_step)/transpose(jvp(Transformer))/Transformer.encode/block_1/mlp/tanh"}
  ROOT %multiply.1 = f32[8,32]{1,0} multiply(%tanh.1, %param_0.1)
}

ENTRY %main (p0: f32[8,16], p1: f32[16,32]) -> f32[8,32] {
  %p0 = f32[8,16]{1,0} parameter(0)
  %p1 = f32[16,32]{1,0} parameter(1)
  %ynn_fusion.3 = f32[8,32]{1,0} fusion(%p0, %p1), kind=kCustom, calls=%fused_dot
  %tanh_fusion = f32[8,32]{1,0} fusion(%ynn_fusion.3), kind=kLoop, calls=%fused_gelu
  ROOT %ffi_call.2 = (f32[8,32]{1,0}, f32[8]{0}) custom-call(%tanh_fusion), custom_call_target="lmjax_causal_attention_fwd", api_version=API_VERSION_TYPED_FFI, metadata={op_name="jit(train_step)/jvp(Transformer)/Transformer.encode/block_0/attn/ffi_call"}
}
"""


def test_parse_hlo_counts_dot_flops_and_names_the_layer():
    ops = profile.parse_hlo(HLO)
    dot, gelu = ops["ynn_fusion.3"], ops["tanh_fusion"]
    assert dot.flops == 2 * 8 * 32 * 16
    assert dot.where == "fwd block_0/mlp/fc"
    assert gelu.flops == 0
    assert gelu.kinds == {"tanh": 1, "multiply": 1}
    assert gelu.where == "bwd block_1/mlp/tanh"
    assert dot.shape == gelu.shape == "f32[8,32]"
    # a custom call with two outputs (the CPU attention kernel's forward) is an op too
    kernel = ops["ffi_call.2"]
    assert kernel.shape == "(f32[8,32], f32[8])" and kernel.kinds == {"custom-call": 1}
    assert kernel.where == "fwd block_0/attn/ffi_call"


def test_op_times_and_report():
    ops = profile.parse_hlo(HLO)
    events = [  # two steps; durations in microseconds
        {"name": "ynn_fusion.3", "dur": 3000, "args": {"hlo_op": "ynn_fusion.3"}},
        {"name": "tanh_fusion", "dur": 1000},
        {"name": "ynn_fusion.3", "dur": 5000, "args": {"hlo_op": "ynn_fusion.3"}},
        {"name": "tanh_fusion", "dur": 1000},
        {"name": "ThunkExecutor::Execute", "dur": 99000},  # not an op of the module
    ]
    ran = profile.op_times(ops, events, steps=2)
    assert [(o.name, o.ms, o.calls) for o in ran] == [
        ("ynn_fusion.3", 4.0, 1),
        ("tanh_fusion", 1.0, 1),
    ]
    text = profile.report(ran, step_ms=5.5)
    assert "matmuls 4.0 ms (80%" in text
    assert "other 1.0 ms (20%)" in text
    assert re.search(r"4\.00\s+1\s+fwd mlp/fc \(matmul\)", text)


def test_profile_entry_point_on_a_tiny_model(tmp_path):
    """Run as users run it (restarted with the malloc tunables on this CPU host): the report,
    its temporary folders removed, and a dump flag of the user's replaced, not doubled."""
    user_dump = tmp_path / "user_dump"
    env = {**os.environ, "TMPDIR": str(tmp_path), "XLA_FLAGS": f"--xla_dump_to={user_dump}"}
    env.pop("LMJAX_MALLOC", None)
    out = subprocess.run(
        [
            sys.executable,
            "benchmarks/profile_step.py",
            "--config=configs/gpt_shakespeare_char.py:test",
            "--steps=2",
            "--top=50",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert os.listdir(tmp_path) == []  # no HLO dump or trace left behind, none in the user's
    first = re.search(r"matmuls ([\d.]+) ms \((\d+)%, ([\d.]+) GFLOP", out.stdout)
    assert first, out.stdout
    assert float(first.group(3)) > 0  # the model's dots were found in the HLO
    assert "fwd mlp/fc (matmul)" in out.stdout
