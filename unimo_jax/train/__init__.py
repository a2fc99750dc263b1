"""Training: the one driver (train_and_evaluate / evaluate / predict / check), the Experiment
protocol it runs, pretraining as an experiment, and the parts: optimizer, sharded state, the
jitted step, checkpoints, metrics, held-out evaluation, run checks and configs."""


def train_and_evaluate(config, workdir) -> dict:
  """Trains the config's experiment (pretraining or a task) in `workdir`; see train/driver.py."""
  from unimo_jax.train import driver
  return driver.train_and_evaluate(config, workdir)


def evaluate(config, workdir) -> dict:
  from unimo_jax.train import driver
  return driver.evaluate(config, workdir)


def predict(config, workdir) -> list:
  from unimo_jax.train import driver
  return driver.predict(config, workdir)
