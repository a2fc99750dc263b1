"""The run's errors: each is reported by main.py as one line (`error: ...`) with exit code 2.

  ConfigError           a configuration that cannot run; raised before anything is compiled or
                        written
  DataError             bad input data; the message names the file and the record or line
  NonFiniteLoss         a diverging run; the last checkpoint is the last good state
  CorruptCheckpoint     a checkpoint that cannot be read, or whose arrays differ from their digests
  CheckpointWriteError  a checkpoint that could not be written (full or unwritable storage)
  WorkdirInUse          a start on a workdir another run holds (a ConfigError)
  RUN_ERRORS            all of the above, the tuple main.py and the lost-peer watch catch
"""


class ConfigError(ValueError):
  """A configuration that cannot run; raised before anything is compiled or written."""


class WorkdirInUse(ConfigError):
  """Another run holds the workdir's lock (train/workdir_lock.py)."""


class DataError(ValueError):
  """Bad input data; the message names the file and the record or line."""


class NonFiniteLoss(FloatingPointError):
  """A non-finite training loss; the run stops and keeps its last good checkpoint."""


class CorruptCheckpoint(ValueError):
  """A checkpoint that cannot be read, or whose arrays differ from its recorded digests."""


class CheckpointWriteError(OSError):
  """A checkpoint that could not be written (full or unwritable storage); earlier ones are
  intact."""


RUN_ERRORS = (ConfigError, NonFiniteLoss, CorruptCheckpoint, CheckpointWriteError, DataError)
