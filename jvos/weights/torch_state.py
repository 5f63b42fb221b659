"""torch state_dict files -> numpy, shared by the torchvision importers (VGG16, ResNet, DeepLab).

`read_torch_state_dict` reads the file (torch is imported only here, and only for .pth/.pt).
`fold_batch_norms` turns each conv + BatchNorm pair of a torchvision state_dict into one conv
with a bias, in Flax layout, for the frozen-BN models (see jvos/models/resnet.py for why).
"""

import pathlib
import pickle
from typing import Mapping

import numpy as np

from jvos.errors import InputError

# torch's BatchNorm2d default, which every torchvision ResNet and DeepLab layer uses.
BATCH_NORM_EPS = 1e-5
BATCH_NORM_STATS = ('weight', 'bias', 'running_mean', 'running_var')
# A counter of training steps, which inference-mode BN does not use.
BATCH_NORM_COUNTER = 'num_batches_tracked'


def read_torch_state_dict(path: pathlib.Path) -> dict[str, np.ndarray]:
  """The tensors of a torch state_dict file, as float32 numpy arrays in torch layout."""
  try:
    import torch  # pylint: disable=g-import-not-at-top  Only needed for .pth files.
  except ImportError:
    raise InputError(f'{path} is a PyTorch file and reading it needs torch: '
                     '`pip install torch` (the CPU build is enough).') from None
  try:
    state = torch.load(path, map_location='cpu', weights_only=True)
  except (RuntimeError, pickle.UnpicklingError, EOFError, OSError, ValueError) as e:
    raise InputError(f'{path} is not a readable torch state_dict ({e}); save it with '
                     '`torch.save(model.state_dict(), path)`.') from None
  if not isinstance(state, Mapping) or not all(torch.is_tensor(v) for v in state.values()):
    raise InputError(f'{path} holds a {type(state).__name__}, not a state_dict of tensors; save '
                     'it with `torch.save(model.state_dict(), path)`.')
  return {name: value.detach().to(torch.float32).numpy() for name, value in state.items()}


def flax_layout(tensors: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """The same tensors with conv kernels OIHW -> HWIO (Flax's); others unchanged."""
  return {name: value.transpose(2, 3, 1, 0) if value.ndim == 4 else value
          for name, value in tensors.items()}


def batch_norm_of(conv: str) -> str | None:
  """The name torchvision gives the BatchNorm after conv `conv` (a module path, no '.weight').

  Its modules either pair `convN` with `bnN` (ResNet blocks, the stem) or put the BN next in a
  Sequential (`downsample.0` -> `downsample.1`, DeepLab's `classifier.1` -> `classifier.2`).
  None for a conv named neither way.
  """
  parent, _, leaf = conv.rpartition('.')
  prefix = f'{parent}.' if parent else ''
  if leaf.isdigit():
    return f'{prefix}{int(leaf) + 1}'
  if leaf.startswith('conv'):
    return f'{prefix}bn{leaf.removeprefix("conv")}'
  return None


def fold_batch_norms(tensors: Mapping[str, np.ndarray],
                     path: pathlib.Path) -> dict[str, np.ndarray]:
  """Every conv followed by a BatchNorm as one conv, in Flax layout (kernels HWIO).

  For conv weight W (and bias b, 0 if none) and BN (gamma, beta, mean, var), inference-mode
  BN(conv(x)) = conv(x) with W * s and bias (b - mean) * s + beta, s = gamma / sqrt(var + eps).
  The folded kernel keeps the conv's name ('{conv}.weight'); the folded bias is named after the
  BN ('{bn}', e.g. 'layer1.0.bn1'), so a missing BN is reported under its own name. Convs
  without a BN, and every other tensor, pass through (kernels transposed); BN counters are
  dropped. Computed in float64, returned as float32.

  Raises:
    InputError: naming the file and the tensors, if a BN lacks some of its four tensors or
      does not have its conv's channels.
  """
  folded, consumed = {}, set()
  for name, weight in tensors.items():
    if weight.ndim != 4 or not name.endswith('.weight'):
      continue
    conv = name.removesuffix('.weight')
    bn = batch_norm_of(conv)
    present = [f'{bn}.{stat}' in tensors for stat in BATCH_NORM_STATS]
    if bn is None or not any(present):
      continue
    if not all(present):
      absent = [f'{bn}.{stat}' for stat, there in zip(BATCH_NORM_STATS, present) if not there]
      raise InputError(f'{path}: BatchNorm {bn} (after conv {conv}) lacks {", ".join(absent)}; '
                       'pass a complete torchvision state_dict.')
    gamma, beta, mean, var = (tensors[f'{bn}.{stat}'].astype(np.float64)
                              for stat in BATCH_NORM_STATS)
    if not gamma.shape == beta.shape == mean.shape == var.shape == weight.shape[:1]:
      shapes = ', '.join(str(t.shape) for t in (gamma, beta, mean, var))
      raise InputError(f'{path}: BatchNorm {bn} has shapes {shapes}, but its conv {conv} has '
                       f'{weight.shape[0]} output channels; pass an unmodified torchvision '
                       'state_dict.')
    scale = gamma / np.sqrt(var + BATCH_NORM_EPS)
    bias = tensors.get(f'{conv}.bias', np.zeros_like(mean)).astype(np.float64)
    folded[name] = (weight.astype(np.float64) * scale[:, None, None, None]).astype(np.float32)
    folded[bn] = ((bias - mean) * scale + beta).astype(np.float32)
    consumed.update({f'{conv}.bias'} | {f'{bn}.{stat}' for stat in BATCH_NORM_STATS})
  rest = {name: value for name, value in tensors.items()
          if name not in consumed and name not in folded
          and not name.endswith(f'.{BATCH_NORM_COUNTER}')}
  return flax_layout({**rest, **folded})
