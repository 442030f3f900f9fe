"""Device mesh and shardings (docs/design.md §3): mesh ('data', 'fsdp'), batch over both axes,
parameters replicated or FSDP-sharded by name rules read from `config.mesh`.

The mesh uses Auto axis types (jax 0.10's `jax.make_mesh` defaults to Explicit): only the inputs'
and the parameters' shardings are stated, and XLA propagates them through the step; the model adds no
activation hints. No pmap: everything is `jax.jit` over global arrays.
"""

import re

import jax
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P
import numpy as np


def mesh_shape(mesh_cfg, num_devices):
  """config.mesh.shape with its -1 resolved: (data, fsdp) whose product is num_devices."""
  shape = list(mesh_cfg.shape)
  if shape.count(-1) > 1:
    raise ValueError(f'config.mesh.shape={tuple(shape)}: at most one -1')
  known = int(np.prod([s for s in shape if s != -1]))
  if -1 in shape:
    if num_devices % known:
      raise ValueError(f'config.mesh.shape={tuple(shape)} does not divide {num_devices} devices')
    shape[shape.index(-1)] = num_devices // known
  if int(np.prod(shape)) != num_devices:
    raise ValueError(f'config.mesh.shape={tuple(shape)} needs {int(np.prod(shape))} devices, '
                     f'there are {num_devices}')
  return tuple(shape)


def make_mesh(mesh_cfg, devices=None):
  """A Mesh over `devices` (default: all, every process) with axes config.mesh.axes, Auto types."""
  devices = jax.devices() if devices is None else list(devices)
  shape = mesh_shape(mesh_cfg, len(devices))
  names = tuple(mesh_cfg.axes)
  if len(devices) == len(jax.devices()):
    return jax.make_mesh(shape, names, axis_types=(AxisType.Auto,) * len(names), devices=devices)
  return Mesh(np.asarray(devices).reshape(shape), names, axis_types=(AxisType.Auto,) * len(names))


def batch_spec(mesh_cfg):
  """PartitionSpec of a batch array: leading dimension over every mesh axis."""
  return P(tuple(mesh_cfg.axes))


def batch_sharding(mesh, mesh_cfg):
  return NamedSharding(mesh, batch_spec(mesh_cfg))


def replicated(mesh):
  return NamedSharding(mesh, P())


def _path_name(path):
  """'params/backbone/conv1/kernel' from a tree path."""
  return '/'.join(str(getattr(k, 'key', getattr(k, 'name', getattr(k, 'idx', k)))) for k in path)


def _fsdp_spec(shape, fsdp_size, axis_name):
  """Shard the largest dimension divisible by the fsdp axis; replicate when none is."""
  for dim in sorted(range(len(shape)), key=lambda d: -shape[d]):
    if shape[dim] % fsdp_size == 0:
      spec = [None] * len(shape)
      spec[dim] = axis_name
      return P(*spec)
  return P()


def param_spec(name, shape, mesh_cfg, fsdp_size):
  """PartitionSpec of one parameter from its '/'-joined name and shape.

  The first rule of config.mesh.param_rules whose regex matches the name (re.search) decides:
  'replicate', or 'fsdp' (largest divisible dimension over the fsdp axis, when the parameter has at
  least config.mesh.fsdp_min_size elements and the fsdp axis has more than one device).
  """
  mode = 'replicate'
  for pattern, rule in mesh_cfg.param_rules:
    if re.search(pattern, name):
      mode = rule
      break
  if mode not in ('replicate', 'fsdp'):
    raise ValueError(f'config.mesh.param_rules: unknown rule {mode!r} for {name}')
  if mode == 'replicate' or fsdp_size == 1 or int(np.prod(shape)) < mesh_cfg.fsdp_min_size:
    return P()
  return _fsdp_spec(shape, fsdp_size, mesh_cfg.axes[1])


def tree_specs(tree, mesh_cfg, mesh):
  """PartitionSpecs for every leaf of a tree of arrays or ShapeDtypeStructs, by name rules."""
  fsdp_size = mesh.shape[mesh_cfg.axes[1]]
  return jax.tree_util.tree_map_with_path(
      lambda path, x: param_spec(_path_name(path), tuple(getattr(x, 'shape', ())), mesh_cfg,
                                 fsdp_size), tree)


def tree_shardings(tree, mesh_cfg, mesh):
  """NamedShardings for every leaf of `tree`, by name rules."""
  return jax.tree.map(lambda spec: NamedSharding(mesh, spec), tree_specs(tree, mesh_cfg, mesh),
                      is_leaf=lambda x: isinstance(x, P))
