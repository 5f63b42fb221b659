"""The one error type users see.

Anything wrong with what the user gave us (a path, a mask, a config value) raises `InputError`
with a message that names the file and says how to fix it. `launch.py` prints that message and
exits with status 2 instead of a traceback; everything else is a bug and keeps its traceback.
"""


class InputError(Exception):
  """Bad user input: the message names the offending file or value and the fix."""
