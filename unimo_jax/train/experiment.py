"""What a run trains and measures: the Experiment protocol that the one driver (train/driver.py)
runs. Pretraining (train/pretraining_experiment.py) and every fine-tuning task (tasks/base.py, one file per
task) implement it; everything else (mesh, sharded state, the jitted step, checkpoints, metrics,
evaluation output) is the driver's.

Construction reads nothing: data paths, the tokenizer and the data are read on first use, so a
compile-only run (shapes from the config) never touches the data.
"""

from typing import Any, Protocol


class BatchIterator(Protocol):
  """Host batches (numpy dicts, this process's rows), resumable from a JSON-able state."""

  def __next__(self) -> dict: ...
  def get_state(self) -> dict: ...
  def set_state(self, state: dict) -> None: ...
  def close(self) -> None: ...  # releases input worker processes


class Experiment(Protocol):
  config: Any  # the resolved run config
  pretrained_key: str | None  # where init_from's params go: None = the whole tree, or a sub-tree
  skipped: dict  # {reason: count} of records left out, reported with the eval metrics

  @staticmethod
  def batch_sizes(config) -> dict:
    """{config field: global examples per step}; checked against the mesh before anything runs."""

  @staticmethod
  def check_mode(mode: str) -> None:
    """ConfigError for a driver mode this kind of experiment does not run."""

  @property
  def data_paths(self) -> dict:
    """Resolved dataset paths ({split or stream: path}, and 'tokenizer'); synthetic data is
    generated on first use. Written to <workdir>/data_paths.json."""

  @property
  def tokenizer(self): ...

  def check_data(self) -> None:
    """ConfigError when the data cannot feed the model (vocabulary, region sizes)."""

  def boxed_params(self, key) -> dict:
    """Parameters with logical-axis metadata (traced under jax.eval_shape for the abstract
    state, under jit for the real one)."""

  def loss(self, params, batch, rng) -> tuple:
    """(loss, metrics with 'total_loss') of one global batch, dropout on; inside the jitted
    step. An experiment whose class sets `per_device_loss = True` also takes
    `batch_axes=(mesh axes)`: called inside a jax.shard_map over them with this device's rows,
    it returns the global batch's loss and metrics (gradient_sum='once' or 'scatter',
    train/data_parallel.py)."""

  def train_batches(self) -> BatchIterator: ...

  def batch_spec(self) -> dict:
    """The global training batch as jax.ShapeDtypeStructs, from the config alone."""

  def eval_programs(self) -> dict:
    """{name: (fn(params, batch), one batch row)}: what evaluation jits, for --mode=compile."""

  def evaluate(self, params) -> tuple | None:
    """(metrics, prediction rows or None), or None when there is nothing to evaluate."""

  def predict(self, params) -> list: ...


def experiment_class(config):
  """The Experiment class of a config: its task's (config.task.name) or pretraining's."""
  if "task" in config:
    from unimo_jax.tasks.registry import task_class
    return task_class(config.task.name)
  from unimo_jax.train.pretraining_experiment import PretrainingExperiment
  return PretrainingExperiment

