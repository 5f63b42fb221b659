"""Strict copy of a file's named tensors into the params of a Flax module.

Every importer reduces its file to {tensor name: array, already in Flax layout} and names, for
each Flax param path, the tensor that fills it. `fill_params` does the rest, and never loads a
wrong file silently: it fails, naming the file, if any param's tensor is missing or has the
wrong shape, or if the file holds tensors that no param takes (other than a classifier head the
importer drops on purpose).
"""

import pathlib
from typing import Any, Callable, Mapping, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from jvos.errors import InputError

ParamPath = tuple[str, ...]
# Any input large enough for every stride of the backbones; params do not depend on its size.
_TEMPLATE_INPUT = jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32)
_NAMES_SHOWN = 12


class Pretrained(NamedTuple):
  """What an importer returns: a module configured as the weights need, its params, and the
  `jvos.models.preprocessing.normalize` style of the images they were trained on."""
  module: nn.Module
  params: Any
  style: str


def param_shapes(module: nn.Module) -> dict[ParamPath, tuple[int, ...]]:
  """Shape of every param of `module`, by path, without running or allocating anything."""
  variables = jax.eval_shape(module.init, jax.random.key(0), _TEMPLATE_INPUT)
  flat = traverse_util.flatten_dict(variables['params'])
  return {path: spec.shape for path, spec in flat.items()}


def _listing(kind: str, names: list[str]) -> str:
  shown = ', '.join(names[:_NAMES_SHOWN])
  more = f' ... ({len(names) - _NAMES_SHOWN} more)' if len(names) > _NAMES_SHOWN else ''
  return f'\n  {kind} ({len(names)}): {shown}{more}'


def fill_params(module: nn.Module, tensors: Mapping[str, np.ndarray],
                source_name: Callable[[ParamPath], str], path: pathlib.Path,
                dropped: tuple[str, ...] = (), fix: str = '') -> Any:
  """Params of `module`, each param taken from `tensors[source_name(param path)]`.

  Args:
    module: the Flax module the params are for.
    tensors: the file's tensors by name, in Flax layout (HWIO kernels).
    source_name: param path (e.g. ('block3', 'depthwise', 'kernel')) -> tensor name.
    path: the file, for error messages.
    dropped: prefixes of tensor names that are left out on purpose (a classifier head).
    fix: what to tell the user when the file does not fit.

  Raises:
    InputError: listing missing, wrong-shaped and unexpected tensors.
  """
  filled, missing, wrong_shape, used = {}, [], [], set()
  for param_path, shape in param_shapes(module).items():
    name = source_name(param_path)
    used.add(name)
    if name not in tensors:
      missing.append(name)
    elif tensors[name].shape != shape:
      wrong_shape.append(f'{name} is {tensors[name].shape}, {"/".join(param_path)} needs {shape}')
    else:
      filled[param_path] = jnp.asarray(tensors[name], jnp.float32)
  unexpected = [name for name in tensors if name not in used and not name.startswith(dropped)]
  if missing or wrong_shape or unexpected:
    raise InputError(
        f'{path} does not hold weights for {type(module).__name__}:'
        + (_listing('missing tensors', missing) if missing else '')
        + (_listing('wrong shapes', wrong_shape) if wrong_shape else '')
        + (_listing('unexpected tensors', unexpected) if unexpected else '')
        + (f'\n{fix}' if fix else ''))
  return traverse_util.unflatten_dict(filled)
