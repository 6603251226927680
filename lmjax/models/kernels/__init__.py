"""Attention kernels, one module each, all with the signature of `lmjax.models.attention`'s
`attention` on one device's shard: `xla` (einsums, runs everywhere), `cudnn` (NVIDIA GPUs),
`tpu_splash` (Pallas splash attention, TPUs), `cpu_ffi` (a C++ kernel for x86 CPUs)."""
