"""Storage and input that cannot be used: one line each (exit 2 at the command line), naming
what was expected, what was found and, for a failed save, the step that failed."""

import contextlib
import subprocess

import pytest

from train_helpers import main_command, pretrain_config, run_main, set_fields, small_run_overrides
from unimo_jax.errors import ConfigError, DataError
from unimo_jax.train import driver


@contextlib.contextmanager
def mounted_tmpfs(path, options):
  """A tmpfs mounted at `path` for the block; skips the test where mounting is not permitted."""
  path.mkdir(parents=True, exist_ok=True)
  result = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
                          capture_output=True, text=True)
  if result.returncode != 0:
    pytest.skip(f"cannot mount a tmpfs here ({result.stderr.strip()})")
  try:
    yield path
  finally:
    subprocess.run(["umount", "-l", str(path)], check=True)


def tiny(scenes, **fields):
  return set_fields(pretrain_config(), {"steps": 2, "data.synthetic_dir": str(scenes), **fields})


def test_a_workdir_that_is_a_file(tmp_path, run_scenes):
  (tmp_path / "w").write_text("not a directory")
  with pytest.raises(ConfigError, match=r"--workdir .*/w: expected a directory, found a file"):
    driver.train_and_evaluate(tiny(run_scenes), tmp_path / "w")
  with pytest.raises(ConfigError, match=r"found a file at .*/w$"):
    driver.train_and_evaluate(tiny(run_scenes), tmp_path / "w" / "below")


def test_a_read_only_workdir(tmp_path, run_scenes):
  with mounted_tmpfs(tmp_path / "ro", "ro,size=1m") as ro:
    with pytest.raises(ConfigError, match=r"cannot write in .*/ro \(a read-only file system"):
      driver.train_and_evaluate(tiny(run_scenes), ro / "w")


@pytest.mark.slow
def test_a_full_disk_names_the_step_whose_save_failed(tmp_path, run_scenes):
  """Checkpoints of the tiny preset take about 1.5 MB each: a 4 MB disk holds two."""
  with mounted_tmpfs(tmp_path / "small", "size=4m") as disk:
    workdir = disk / "w"
    args = small_run_overrides(run_scenes, 40) + ["--config.checkpoint_every=2",
                                                  "--config.keep_checkpoints=10"]
    result = run_main(main_command(workdir, *args), check=False)
    saved = sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
  assert result.returncode == 2, result.stderr[-2000:]
  line = result.stderr.strip().splitlines()[-1]
  failed = saved[-1] + 2
  assert line.startswith(f"error: could not write checkpoint step {failed} to "), line
  assert line.endswith(f"step {saved[-1]} in {workdir / 'checkpoints'} is intact"), line
  assert "Traceback" not in result.stderr


@pytest.mark.parametrize("content", [None, b"\x00\x12 not a sentencepiece model \xff"])
def test_a_missing_or_garbled_tokenizer_is_named(tmp_path, run_scenes, content):
  path = tmp_path / "tok.model"
  if content is not None:
    path.write_bytes(content)
  expected = "found no such file" if content is None else "cannot be read as one"
  with pytest.raises(DataError, match=rf"{path}: expected a tokenizer .*{expected}"):
    driver.train_and_evaluate(tiny(run_scenes, **{"data.tokenizer": str(path)}), tmp_path / "w")


def test_an_unknown_tfds_name_names_the_near_ones(tmp_path, run_scenes):
  config = tiny(run_scenes, **{"data.pair_dir": "tfds:coco_captionz", "data.text_dir": "",
                               "data.image_dir": "", "batch.text": 0, "batch.image": 0,
                               "data.tokenizer": str(run_scenes / "tokenizer.model")})
  with pytest.raises(DataError) as error:
    driver.train_and_evaluate(config, tmp_path / "w")
  message = str(error.value)
  assert "the closest: coco_captions" in message and "\n" not in message
  assert len(message) < 400  # the near names, not tfds's catalogue


@pytest.mark.slow
@pytest.mark.parametrize("args,message", [
    (["--config=configs/pretrain.py:huge"],
     "error: configs/pretrain.py: expected a preset from ('tiny', 'base', 'large'), found 'huge'"),
    (["--config.stepz=3"], "error: unknown config field in --config.stepz=3: 'stepz' Did you mean "
                           "\"steps\" instead of \"stepz\"?; see the config file for the fields it "
                           "defines"),
    (["--config=configs/nope.py:tiny"],
     "error: [Errno 2] No such file or directory: 'configs/nope.py'"),
])
def test_config_errors_are_one_plain_line(tmp_path, args, message):
  result = run_main(main_command(tmp_path / "w", *args), check=False)
  assert result.returncode == 2
  assert result.stderr.strip() == message


@pytest.mark.slow
def test_a_corrupt_state_manifest_falls_back_without_pages_of_errors(tmp_path, run_scenes):
  args = small_run_overrides(run_scenes, 4) + ["--config.checkpoint_every=2"]
  run_main(main_command(tmp_path / "w", *args))
  (tmp_path / "w" / "checkpoints" / "4" / "state" / "manifest.ocdbt").write_bytes(bytes(range(100)))
  result = run_main(main_command(tmp_path / "w", *args[1:], "--config.steps=6"))
  assert "resuming from step 2, the newest checkpoint that verifies" in result.stdout
  assert (tmp_path / "w" / "checkpoints" / "4.corrupt").is_dir()
  # no orbax error pages; what stderr may still hold is tensorstore's reader threads calling
  # back into orbax's closed event loop after the restore was named and left behind: those
  # tracebacks are stripped while the checkpoints are read, but some print later, up to the
  # process's exit
  from unimo_jax.train.checkpoint import without_closed_loop_tracebacks
  assert without_closed_loop_tracebacks(result.stderr).strip() == "", result.stderr[:2000]
