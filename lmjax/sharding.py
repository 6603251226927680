"""Mesh vocabulary shared by the model and the train step: the mesh's axes and device counts.

The bottom layer: the model (which constrains its activations' shardings) and `lmjax.train`
(which builds meshes and shardings) both read it, and it imports nothing of lmjax.
"""

from __future__ import annotations

import math
from typing import Any

MESH_AXES = ("data", "fsdp", "tensor")  # config.mesh's keys, in the mesh's order


def mesh_axes_size(mesh: Any, axes: str | tuple[str, ...] | None) -> int:
    """Number of devices along mesh axes `axes` (None, one name, or a tuple of names), as a
    PartitionSpec entry names them; `mesh` a Mesh or an AbstractMesh."""
    if axes is None:
        return 1
    return math.prod(mesh.shape[a] for a in (axes if isinstance(axes, tuple) else (axes,)))
