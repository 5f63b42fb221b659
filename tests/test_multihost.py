"""Multi-process training for real, on one machine: two processes on localhost.

Each process runs tests/train_helper.py with two CPU devices and joins the other through
`jax.distributed.initialize('localhost:<port>', 2, i)`; jax 0.10's CPU client then runs the
cross-process all-reduce through gloo (its default `jax_cpu_collectives_implementation`), so no
flag is needed. The reference is one process taking the same global batches (process 0's local
batch, then process 1's) through the trainer's own `init_state` and `train_step`.
"""

import functools
import json
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import time

import grain
import jax
import numpy as np
import pytest

from jvos import input_pipeline
from jvos import train
from jvos.data import build_dataset
import train_helper
from test_train import DEVICE_COUNT_ATOL, DEVICE_COUNT_RTOL, REPO
from test_train import assert_trees_equal, finished_steps
# A fixture: importing it is what lets pytest use it here.
from test_train import tiny_davis  # pylint: disable=unused-import

NUM_PROCESSES = 2
DEVICES_PER_PROCESS = 2
NUM_STEPS = 6  # Checkpoints at steps 3 and 6 (train_helper's checkpoint_every=3).
# 2 processes x 2 devices vs 1 device: the same batches and maths, but the gradient is summed
# over 4 devices in another order, as in test_train.py's 1 vs 4 devices, whose tolerance
# applies. After 6 Adam steps the parameters (|p| < 0.5) were seen to differ by at most 6e-8,
# the losses by at most 2e-7 relative.
RTOL, ATOL = DEVICE_COUNT_RTOL, DEVICE_COUNT_ATOL
# Files are created with mode 0o666 & ~umask: process 0 writes 0o644 files, the others 0o600
# ones, so the files in the shared workdir tell which process created them.
UMASKS = (0o022, 0o077)


def free_port() -> int:
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def start(args: list[str], log: pathlib.Path, env: dict[str, str],
          umask: int = -1) -> subprocess.Popen:
  """`python *args` in the repository, its output to `log`. Not to a pipe: a process blocked on
  a full pipe that nobody reads yet would stall its peers at their next collective."""
  with log.open('w') as output:
    return subprocess.Popen([sys.executable, *args], env=dict(os.environ, **env), cwd=REPO,
                            stdout=output, stderr=subprocess.STDOUT, umask=umask)


def wait_for_all(processes: list[subprocess.Popen], logs: list[pathlib.Path],
                 timeout_s: float = 300) -> list[str]:
  """The processes' outputs, once every one has exited 0."""
  deadline = time.monotonic() + timeout_s
  try:
    # Stop at the first failure: its peers would wait minutes for it before timing out.
    while None in (codes := [process.poll() for process in processes]) and not any(codes):
      assert time.monotonic() < deadline, f'still running after {timeout_s} s'
      time.sleep(0.1)
  finally:
    for process in processes:
      process.kill()  # Nothing to do for those that exited.
      process.wait()
  outputs = [log.read_text() for log in logs]
  failed = {i: output[-3000:] for i, (process, output) in enumerate(zip(processes, outputs))
            if process.returncode != 0}
  assert not failed, failed
  return outputs


def run_processes(workdir: pathlib.Path, data: pathlib.Path,
                  logs: pathlib.Path) -> tuple[list[str], list[list[list[int]]]]:
  """A `NUM_STEPS`-step run of train_helper.py in `NUM_PROCESSES` processes: their outputs and,
  per process, the example ids of each step's local batch."""
  port = free_port()
  env = {'PYTHONPATH': str(REPO),
         'XLA_FLAGS': f'--xla_force_host_platform_device_count={DEVICES_PER_PROCESS}'}
  examples_logs = [logs / f'examples_{i}.jsonl' for i in range(NUM_PROCESSES)]
  output_logs = [logs / f'output_{i}.txt' for i in range(NUM_PROCESSES)]
  processes = [
      start([str(REPO / 'tests' / 'train_helper.py'), '--workdir', str(workdir),
             '--data', str(data), '--steps', str(NUM_STEPS),
             '--examples_log', str(examples_logs[i]),
             '--coordinator_address', f'localhost:{port}',
             '--num_processes', str(NUM_PROCESSES), '--process_id', str(i)],
            output_logs[i], env, UMASKS[i])
      for i in range(NUM_PROCESSES)]
  outputs = wait_for_all(processes, output_logs)
  for output in outputs:
    assert f'devices={NUM_PROCESSES * DEVICES_PER_PROCESS} done' in output
  examples = [[json.loads(line) for line in path.read_text().splitlines()]
              for path in examples_logs]
  return outputs, examples


@pytest.fixture(scope='module')
def two_process_run(tmp_path_factory, tiny_davis):
  """The workdir of a 2-process run and the example ids each process loaded at each step."""
  workdir = tmp_path_factory.mktemp('two_processes')
  _, examples = run_processes(workdir / 'run', tiny_davis, workdir)
  return workdir / 'run', examples


@pytest.fixture(scope='module')
def one_process_reference(tiny_davis, tmp_path_factory):
  """Final params, per-step losses and per-shard example ids of one process over the same
  global batches."""
  config = train_helper.make_config(tiny_davis, NUM_STEPS)
  schedule = train.make_schedule(config.train, NUM_STEPS)
  optimizer = train.make_optimizer(config.train, schedule)
  state = jax.jit(functools.partial(train.init_state, optimizer, config.seed))(
      train_helper.initial_params())
  step_fn = jax.jit(functools.partial(train.train_step, loss_fn=train_helper.tiny_loss,
                                      optimizer=optimizer, schedule=schedule))
  dataset = build_dataset(config.data, tmp_path_factory.mktemp('reference'))
  local_batch_size = config.train.batch_size // NUM_PROCESSES
  iterators = [input_pipeline.train_iterator(
      dataset, config.train, config.seed, local_batch_size,
      grain.sharding.ShardOptions(shard_index=i, shard_count=NUM_PROCESSES), train_helper.CLIP)
               for i in range(NUM_PROCESSES)]
  losses, examples = [], [[] for _ in iterators]
  for _ in range(NUM_STEPS):
    local_batches = [next(iterator) for iterator in iterators]
    for shard_examples, batch in zip(examples, local_batches):
      shard_examples.append(batch['example'].tolist())
    state, metrics = step_fn(state, {key: np.concatenate([b[key] for b in local_batches])
                                     for key in batch if key not in train.HOST_KEYS})
    losses.append(float(metrics['loss']))
  return train.to_host(state.params), losses, examples


def test_two_processes_end_with_the_params_of_one_process(two_process_run,
                                                          one_process_reference):
  workdir, _ = two_process_run
  expected_params, expected_losses, _ = one_process_reference
  params = train.load_params(workdir / train.PARAMS_FILE)
  initial = train_helper.initial_params()
  # The runs moved every parameter far beyond the tolerance, and agree within it.
  moved = jax.tree.map(lambda a, b: np.abs(a - b).max(), params, initial)
  assert min(jax.tree.leaves(moved)) > 1e-3
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=RTOL, atol=ATOL),
               params, expected_params)
  rows = [json.loads(line)
          for line in (workdir / train.METRICS_FILE).read_text().splitlines()]
  assert [row['step'] for row in rows] == list(range(1, NUM_STEPS + 1))
  np.testing.assert_allclose([row['loss'] for row in rows], expected_losses, rtol=RTOL)


def test_each_process_reads_its_own_disjoint_shard(two_process_run, one_process_reference):
  _, examples = two_process_run
  _, _, expected_examples = one_process_reference
  assert examples == expected_examples  # Shard i of 2, batch by batch.
  frames = [set(np.ravel(process_examples)) for process_examples in examples]
  assert frames[0].isdisjoint(frames[1])
  num_frames = len(train_helper.SEQUENCES) * train_helper.FRAMES_PER_SEQUENCE
  assert frames[0] | frames[1] == set(range(num_frames))


def test_only_process_0_writes_logs_and_params(two_process_run):
  workdir, _ = two_process_run
  outputs = {path.relative_to(workdir).as_posix(): path.stat().st_mode & 0o777
             for path in workdir.rglob('*')
             if path.is_file() and 'checkpoints' not in path.parts}
  events = [name for name in outputs if name.startswith('tensorboard/events.out.tfevents.')]
  assert len(events) == 1
  assert outputs == {name: 0o644 for name in (
      train.PARAMS_FILE, train.MODEL_CONFIG_FILE, train.METRICS_FILE, 'loss_curve.png',
      *events)}
  # Checkpoints are collective: process 1 saved its own data-iterator position.
  assert finished_steps(workdir) == [3, NUM_STEPS]
  data_states = workdir / 'checkpoints' / str(NUM_STEPS) / 'data'
  assert (data_states / 'process_0-of-2.json').stat().st_mode & 0o777 == 0o644
  assert (data_states / 'process_1-of-2.json').stat().st_mode & 0o777 == 0o600


def test_rerun_resumes_every_process_from_the_last_checkpoint(two_process_run, tiny_davis,
                                                              tmp_path):
  workdir, examples = two_process_run
  # A run preempted after its step-3 checkpoint.
  preempted = tmp_path / 'run'
  shutil.copytree(workdir, preempted)
  shutil.rmtree(preempted / 'checkpoints' / str(NUM_STEPS))
  (preempted / train.PARAMS_FILE).unlink()

  outputs, resumed_examples = run_processes(preempted, tiny_davis, tmp_path)
  for output in outputs:
    assert 'Resuming from the checkpoint of step 3 ' in output
  # Each process went on from its own position in its shard, to the same parameters.
  assert resumed_examples == [process_examples[3:] for process_examples in examples]
  assert_trees_equal(train.load_params(preempted / train.PARAMS_FILE),
                     train.load_params(workdir / train.PARAMS_FILE))


def test_launch_flags_and_their_environment_defaults_reach_jax_distributed(tmp_path):
  """Process 0 joins through launch.py's flags, process 1 through the JAX_* variables."""
  port = free_port()
  script = ('import sys, jax, launch; from absl import flags; flags.FLAGS(sys.argv); '
            'launch.init_distributed(); '
            'print(f"process {jax.process_index()} of {jax.process_count()}")')
  flag_args = [f'--coordinator_address=localhost:{port}', f'--num_processes={NUM_PROCESSES}',
               '--process_id=0']
  env_vars = {'JAX_COORDINATOR_ADDRESS': f'localhost:{port}',
              'JAX_NUM_PROCESSES': str(NUM_PROCESSES), 'JAX_PROCESS_ID': '1'}
  logs = [tmp_path / f'output_{i}.txt' for i in range(NUM_PROCESSES)]
  processes = [start(['-c', script, *flag_args], logs[0], {}),
               start(['-c', script], logs[1], env_vars)]
  for process_id, output in enumerate(wait_for_all(processes, logs)):
    assert f'process {process_id} of {NUM_PROCESSES}' in output
