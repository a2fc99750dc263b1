"""A checkpoint must match the config that resumes it, and the tokenizer the data it reads: a
mismatch is one line naming the field, with nothing moved or rewritten."""

import json

import pytest

from train_helpers import pretrain_config, set_fields
from unimo_jax.data.formats.tokenizers import SentencePieceTokenizer, load_tokenizer
from unimo_jax.errors import ConfigError
from unimo_jax.train import driver
from unimo_jax.train.run_identity import IDENTITY_FILE, check_resume_identity, run_identity


def small_config(scenes, **fields):
  config = pretrain_config()
  return set_fields(config, {"steps": 2, "checkpoint_every": 2, "eval_every": 0,
                             "data.synthetic_dir": str(scenes), "data.eval_limit": 16,
                             "log_every": 1, **fields})


def other_tokenizer(path):
  """A sentencepiece model of scene-like words with a smaller vocabulary than the scenes'."""
  lines = ["a red square is left of a blue circle", "a small green triangle above a large ring"]
  SentencePieceTokenizer.train(lines * 50, vocab_size=40, out_path=path)
  return path


@pytest.fixture(scope="module")
def trained(run_scenes, tmp_path_factory):
  """A workdir with a checkpoint at step 2 of the tiny preset (mean pooling)."""
  workdir = tmp_path_factory.mktemp("identity") / "w"
  driver.train_and_evaluate(small_config(run_scenes), workdir)
  assert (workdir / "checkpoints" / "2").is_dir() and (workdir / IDENTITY_FILE).exists()
  return workdir


def _workdir_files(workdir):
  return {p.name: p.read_bytes() for p in workdir.iterdir() if p.is_file()}


@pytest.mark.parametrize("field,value,stored", [("model.pooling", "first", "'mean'"),
                                                ("model.hidden_size", 128, "64"),
                                                ("model.scan_layers", True, "False")])
def test_resume_with_a_changed_model_is_one_line_naming_the_field(trained, run_scenes, field,
                                                                   value, stored):
  before = _workdir_files(trained)
  config = small_config(run_scenes, **{field: value, "steps": 4})
  with pytest.raises(ConfigError) as error:
    driver.train_and_evaluate(config, trained)
  message = str(error.value)
  assert message.startswith(f"{field}: the checkpoints in {trained / 'checkpoints'} were trained "
                            f"with {stored}, this run has {value!r}")
  assert "\n" not in message and "corrupt" not in message.lower()
  assert _workdir_files(trained) == before  # config.json and the rest untouched
  assert sorted(p.name for p in (trained / "checkpoints").iterdir()) == ["2"]
  with pytest.raises(ConfigError, match=field):  # evaluation reads the same checkpoints
    driver.evaluate(config, trained)


def test_resume_with_another_tokenizer_is_refused(trained, run_scenes, tmp_path):
  """A tokenizer of another size fails the start-up check against the dataset's recorded
  vocabulary; one of the same size but other pieces fails the workdir's identity check."""
  small = other_tokenizer(tmp_path / "small.model")
  with pytest.raises(ConfigError, match=r"data.text_dir .* was tokenized with a vocabulary whose "
                                        r"size is \d+, data.tokenizer .*small.model has \d+"):
    driver.train_and_evaluate(small_config(run_scenes, **{"data.tokenizer": str(small)}),
                              trained)
  ours = load_tokenizer(str(run_scenes / "tokenizer.model"))
  identity = run_identity(small_config(run_scenes).model, ours)
  check_resume_identity(trained, identity)  # the same tokenizer passes
  identity["tokenizer"]["sha256"] = "0" * 64  # same size and ids, other pieces
  with pytest.raises(ConfigError, match=r"data.tokenizer: .* whose sha256 is"):
    check_resume_identity(trained, identity)


def test_the_same_config_resumes(trained, run_scenes):
  driver.train_and_evaluate(small_config(run_scenes, steps=4), trained)
  assert (trained / "checkpoints" / "4").is_dir()


def test_a_workdir_from_before_identity_json_is_checked_on_its_config(tmp_path):
  identity = run_identity(pretrain_config().model, None)  # the tiny preset: mean pooling
  stored = {k: v for k, v in identity["model"].items() if k != "pooling"}
  (tmp_path / "config.json").write_text(json.dumps({"model": stored}))
  with pytest.raises(ConfigError, match="model.pooling: .* trained with 'first'"):
    check_resume_identity(tmp_path, identity)  # a config.json without pooling predates it
  identity["model"]["pooling"] = "first"
  check_resume_identity(tmp_path, identity)
