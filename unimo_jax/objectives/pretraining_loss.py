"""The UNIMO pretraining loss over one mixed batch: every objective, weighted and reported.

A mixed batch is a dict of sub-batches, each optional (config.loss_weights names the terms):
  text_mlm      text, span-masked              -> bidirectional MLM
  text_seq2seq  text source + target spans     -> seq2seq LM
  image_mrm     image, masked regions          -> masked region prediction
  pair_mlm      image + masked caption         -> MLM conditioned on the image
  pair_mrm      masked image + caption         -> MRM conditioned on the text
  pair_caption  image (+ tags) + caption       -> image-to-text seq2seq (caption mask)
  cmcl          image alone, caption alone and per-pair extras -> CMCL over the global batch
The cmcl sub-batch holds model batches under 'image' and 'text', optional 'extra_text' and
'extra_image' whose arrays carry an extra leading [batch, extras] pair of dimensions, and the
masks 'extra_text_positive', 'extra_text_valid', 'extra_image_valid' ([batch, extras]).
"""

import jax

from unimo_jax.model import Unimo
from unimo_jax.objectives import (cmcl_loss, cmcl_loss_chunked, cmcl_loss_local, global_means,
                                  mlm_loss, mrm_loss, seq2seq_loss, weighted_total)

# term -> (mask kind, heads, objective(outputs, batch, config), the metric its means are over)
_TERMS = {
    "text_mlm": ("bidirectional", {"lm"}, lambda o, b, c: mlm_loss(o, b), "tokens"),
    "text_seq2seq": ("seq2seq", {"lm"},
                     lambda o, b, c: seq2seq_loss(o, b, c.objectives.label_smoothing), "tokens"),
    "image_mrm": ("bidirectional", {"region"}, lambda o, b, c: _mrm(o, b, c), "regions"),
    "pair_mlm": ("bidirectional", {"lm"}, lambda o, b, c: mlm_loss(o, b), "tokens"),
    "pair_mrm": ("bidirectional", {"region"}, lambda o, b, c: _mrm(o, b, c), "regions"),
    "pair_caption": ("caption", {"lm"},
                     lambda o, b, c: seq2seq_loss(o, b, c.objectives.label_smoothing), "tokens"),
}
TERMS = tuple(_TERMS) + ("cmcl",)
# One dropout stream per forward pass of the step.
_RNG_STREAMS = tuple(_TERMS) + ("cmcl_image", "cmcl_text", "extra_text", "extra_image")

_MODEL_FIELDS = ("input_ids", "position_ids", "target_mask", "lm_positions", "region_features",
                 "region_locations", "region_mask", "pixels")


def _mrm(outputs, batch, config):
  return mrm_loss(outputs, batch, config.objectives.mrm_regression_weight,
                  config.objectives.mrm_classification_weight)


def _model_inputs(batch):
  return {k: v for k, v in batch.items() if k in _MODEL_FIELDS}


def _flatten_extras(sub):
  """[batch, extras, ...] arrays -> [batch * extras, ...]."""
  return {k: v.reshape((-1,) + v.shape[2:]) for k, v in sub.items()}


def _cmcl_term(model, params, cmcl, config, mesh, rngs, deterministic, batch_axes):
  def embed(sub, key, name):
    out = model.apply(params, _model_inputs(sub), heads={"contrastive"},
                      deterministic=deterministic, rngs=rngs(name))
    return out[key], out["temperature"]

  image, temperature = embed(cmcl["image"], "image_embedding", "cmcl_image")
  text, _ = embed(cmcl["text"], "text_embedding", "cmcl_text")
  emb = {"image": image, "text": text}  # [batch, dim]
  batch_size = image.shape[0]
  for kind, key in (("extra_text", "text_embedding"), ("extra_image", "image_embedding")):
    if kind in cmcl:
      flat, _ = embed(_flatten_extras(cmcl[kind]), key, kind)
      emb[kind] = flat.reshape(batch_size, -1, flat.shape[-1])  # [batch, extras, dim]
      emb[f"{kind}_valid"] = cmcl[f"{kind}_valid"]
  if "extra_text" in cmcl:
    emb["extra_text_positive"] = cmcl["extra_text_positive"]
  form = config.objectives.get("cmcl_positive_form", "mean_log")
  if batch_axes is not None:
    return cmcl_loss_local(emb, temperature, batch_axes=batch_axes,
                           chunk_size=config.objectives.cmcl_chunk_size or None,
                           positive_form=form)
  if config.objectives.cmcl_chunk_size and mesh is not None:
    return cmcl_loss_chunked(emb, temperature, mesh=mesh,
                             chunk_size=config.objectives.cmcl_chunk_size, positive_form=form)
  return cmcl_loss(emb, temperature, mesh=mesh, positive_form=form)


def pretraining_loss(params, batch, config, *, rng=None, mesh=None, deterministic=True,
                     batch_axes=None):
  """(total, metrics) for one mixed batch; metrics hold '<term>/<metric>' and 'total_loss'.

  params: {'params': ...} variables of Unimo(config.model). rng: dropout key (needed when
  deterministic=False). mesh: the device mesh (CMCL logits are then row-sharded).
  batch_axes: None for the global batch under jax.jit; mesh axis names when called inside a
  jax.shard_map over them with this device's rows (train/data_parallel.py): every term is then
  reduced over the axes to the global batch's, the same on every device.
  """
  unknown = sorted(set(batch) - set(TERMS))
  if unknown:
    raise ValueError(f"batch: expected sub-batches from {TERMS}, found unknown {unknown}")
  model = Unimo(config.model)

  def rngs(name):
    if deterministic:
      return {}
    return {"dropout": jax.random.fold_in(rng, _RNG_STREAMS.index(name))}

  terms = {}
  for name, (kind, heads, objective, count_key) in _TERMS.items():
    if name in batch:
      sub = batch[name]
      outputs = model.apply(params, _model_inputs(sub), mask_kind=kind, heads=heads,
                            deterministic=deterministic, rngs=rngs(name))
      terms[name] = objective(outputs, sub, config)
      if batch_axes is not None:
        terms[name] = global_means(terms[name][1], count_key, batch_axes)
  if "cmcl" in batch:
    terms["cmcl"] = _cmcl_term(model, params, batch["cmcl"], config, mesh, rngs, deterministic,
                               batch_axes)
  return weighted_total(terms, config.loss_weights)
