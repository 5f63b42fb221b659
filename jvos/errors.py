"""The one error type users see, and the config counts every job checks.

Anything wrong with what the user gave us (a path, a mask, a config value) raises `InputError`
with a message that names the file and says how to fix it. `launch.py` prints that message and
exits with status 2 instead of a traceback; everything else is a bug and keeps its traceback.
"""

import math

import ml_collections


class InputError(Exception):
  """Bad user input: the message names the offending file or value and the fix."""


def with_defaults(section, defaults: ml_collections.ConfigDict,
                  name: str) -> ml_collections.ConfigDict:
  """Config section `name` with the fields it lacks taken from `defaults`.

  Fails on a field `defaults` does not have, listing the ones it does: a misspelt field would
  otherwise be ignored in silence.
  """
  unknown = sorted(set(section.keys()) - set(defaults.keys()))
  if unknown:
    raise InputError(f'Unknown field {name}.{unknown[0]}; the fields are '
                     f'{", ".join(sorted(defaults.keys()))}.')
  return ml_collections.ConfigDict(defaults.to_dict() | dict(section.items()))


def number(section: ml_collections.ConfigDict, name: str, field: str,
           defaults: ml_collections.ConfigDict, low: float, high: float = math.inf,
           whole: bool = False, above: bool = False, hint: str = '') -> float | int:
  """section.field, checked to be a number (an int if `whole`) in [low, high] (> low if
  `above`), or an InputError naming `name.field`, the range and the default as a value that
  works (plus `hint`).
  """
  value = section[field]
  ok = (not isinstance(value, bool) and isinstance(value, int if whole else (int, float))
        and math.isfinite(value) and (value > low if above else value >= low) and value <= high)
  if not ok:
    bound = f'{">" if above else ">="} {low}' if high == math.inf else f'in [{low}, {high}]'
    raise InputError(f'{name}.{field}={value!r}: use {"a whole number" if whole else "a number"} '
                     f'{bound}, e.g. --config.{name}.{field}={defaults[field]}{hint}.')
  return value


# Config counts and the least value each may take, wherever a config has them. Checked by the
# code that uses them (the trainer, the fine-tuner) and, for a whole config before any work,
# by launch.py. Counts whose limits depend on a system (model.hidden, segment.references...)
# are checked by that system.
LEAST_VALUES = {
    'train.batch_size': 1, 'train.num_steps': 1, 'train.checkpoint_every': 1,
    'train.keep_checkpoints': 1, 'train.log_every': 1, 'train.warmup_steps': 0,
    'finetune.steps': 0, 'finetune.batch_size': 1, 'finetune.max_rotation': 0,
    'finetune.colour_jitter': 0, 'finetune.crop_size': 0, 'segment.max_height': 0,
}


def check_counts(config, section: str = '') -> None:
  """Fails, naming the field, on a count below its least value (LEAST_VALUES).

  Args:
    config: a whole config, or with `section` only that section of one (e.g. config.train).
    section: the section `config` is ('train', 'finetune'...); empty: a whole config.
  """
  for field, least in LEAST_VALUES.items():
    field_section, _, name = field.partition('.')
    if section:
      if field_section != section:
        continue
      value = config.get(name)
    else:
      value = config.get(field_section, {}).get(name)
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value < least:
      raise InputError(f'{field}={value}: it must be at least {least}; set --config.{field}.')
