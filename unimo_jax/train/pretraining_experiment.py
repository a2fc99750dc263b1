"""Pretraining as an Experiment (train/experiment.py): every objective over one mixed batch of
text, images and image-text pairs per step (objectives/pretraining_loss.py), fed by the grain mixture
of the three streams (data/pipeline/streams.py), evaluated on held-out pairs (train/heldout_eval.py).

Data: config.data.{text,image,pair}_dir (and eval_dir, tokenizer), or, when none is given, the
synthetic scenes generated into data.synthetic_dir (default <workdir>/synthetic_scenes).
"""

import functools

from unimo_jax.data.formats.tfds_source import open_records
from unimo_jax.data.pipeline.caption_lengths import report_longer_captions
from unimo_jax.data.pipeline.streams import STREAMS, batch_spec, make_pretraining_iterator
from unimo_jax.data.synthetic.random_batch import random_pretraining_batch
from unimo_jax.data.synthetic.scene_dataset import ensure_synthetic_scenes
from unimo_jax.data.formats.tokenizers import load_tokenizer
from unimo_jax.model.params import init_boxed_params
from unimo_jax.objectives.pretraining_loss import pretraining_loss
from unimo_jax.paths import as_path, local_dir
from unimo_jax.train.checks import check_data_against_model
from unimo_jax.errors import ConfigError


class PretrainingExperiment:
  pretrained_key = None  # init_from (e.g. converted RoBERTa) fills the whole tree
  per_device_loss = True  # loss(..., batch_axes=...) in a shard_map (gradient_sum once, scatter)

  def __init__(self, config, workdir, mesh=None, *, data_paths: dict | None = None,
               tokenizer=None):
    self.config, self.workdir, self.mesh = config, as_path(workdir), mesh
    self._data_paths, self._tokenizer = data_paths, tokenizer
    self.skipped = {}

  @staticmethod
  def batch_sizes(config) -> dict:
    return {f"batch.{s}": int(config.batch[s]) for s in STREAMS}

  @staticmethod
  def check_mode(mode: str) -> None:
    if mode == "predict":
      raise ConfigError("--mode=predict needs a task config (configs/<task>.py); pretraining "
                        "writes held-out metrics with --mode=train or --mode=eval")

  # ---- data ------------------------------------------------------------------------------------
  @functools.cached_property
  def data_paths(self) -> dict:
    """{'text', 'image', 'pair', 'eval', 'tokenizer'}: the configured directories, or the
    synthetic scenes' (generated on first use) when no stream directory is configured."""
    if self._data_paths is not None:
      return dict(self._data_paths)
    d = self.config.data
    if d.text_dir or d.image_dir or d.pair_dir:
      return {"text": d.text_dir, "image": d.image_dir, "pair": d.pair_dir, "eval": d.eval_dir,
              "tokenizer": d.tokenizer}
    root = ensure_synthetic_scenes(d.synthetic_dir or local_dir(self.workdir, "synthetic_scenes"),
                                   pairs=int(d.synthetic_pairs),
                                   feature_dim=self.config.model.region_feature_dim,
                                   seed=self.config.seed,
                                   twin_scenes=bool(d.synthetic_twin_scenes))
    return {"text": str(root / "train" / "text"), "image": str(root / "train" / "image"),
            "pair": str(root / "train" / "pair"), "eval": d.eval_dir or str(root / "eval" / "pair"),
            "tokenizer": d.tokenizer or str(root / "tokenizer.model")}

  @functools.cached_property
  def tokenizer(self):
    if self._tokenizer is not None:
      return self._tokenizer
    if not self.data_paths["tokenizer"]:
      raise ConfigError("data.tokenizer: expected the tokenizer of the configured datasets, "
                        "found ''")
    return load_tokenizer(self.data_paths["tokenizer"])

  def check_data(self) -> None:
    paths = self.data_paths
    check_data_against_model(self.config.model, self.tokenizer, paths["tokenizer"],
                             {"data.text_dir": paths["text"], "data.image_dir": paths["image"],
                              "data.eval_dir": paths["eval"],
                              "data.pair_dir": paths["pair"]},
                             self.config.data)
    if paths["pair"]:
      source = open_records(paths["pair"], "pair", self.config.data, tokenizer=self.tokenizer)
      report_longer_captions(source, int(self.config.data.max_caption_length),
                             f"data.pair_dir {paths['pair']}")

  def train_batches(self):
    tok = self.tokenizer
    return make_pretraining_iterator(
        self.config.data, {s: self.config.batch[s] for s in STREAMS}, tok.special_ids,
        tok.vocab_size, dirs={s: self.data_paths[s] for s in STREAMS}, tokenizer=tok,
        image_size=self.config.model.get("image_size"))

  def batch_spec(self) -> dict:
    """The global mixed batch's shapes and dtypes (no data read)."""
    tok = self.tokenizer
    return batch_spec(self.config.data, self.config.model,
                      {s: self.config.batch[s] for s in STREAMS}, tok.special_ids, tok.vocab_size)

  def eval_programs(self) -> dict:
    return {}  # held-out evaluation: small forward passes, compiled on the run's own devices

  def random_batch(self, seed: int) -> dict:
    """A random mixed batch of the config's shapes (for --mode=check; no data read)."""
    return random_pretraining_batch(self.config, seed=seed)

  # ---- model -----------------------------------------------------------------------------------
  def boxed_params(self, key):
    return init_boxed_params(self.config.model, key)

  def loss(self, params, batch, rng, batch_axes=None):
    return pretraining_loss({"params": params}, batch, self.config, rng=rng, mesh=self.mesh,
                            deterministic=False, batch_axes=batch_axes)

  # ---- evaluation ------------------------------------------------------------------------------
  @functools.cached_property
  def _evaluator(self):
    from unimo_jax.train.heldout_eval import Evaluator
    return Evaluator(self.config, self.data_paths["eval"], self.tokenizer)

  def evaluate(self, params):
    """Held-out retrieval, twin and MLM metrics (no predictions); None without data.eval_dir."""
    if not self.data_paths["eval"]:
      return None
    return self._evaluator({"params": params}), None

  def predict(self, params):
    self.check_mode("predict")
