"""Evaluation on held-out pairs: zero-shot retrieval from the CMCL embeddings, caption-vs-twin
discrimination, and masked-LM accuracy (with and without the image).

Zero-shot retrieval: every held-out image against every held-out caption by cosine similarity of
h[IMG] (image alone) and h[CLS] (caption alone); R@1/5/10 in both directions.
Twins, in the style of ARO (Yuksekgonul et al., ICLR 2023): for each pair's rewritten captions
(hard_negative_ids) the fraction where the true caption scores higher with the image (a tie, as
when a text encoder cannot tell the two apart, counts half); overall and per kind of twin, from
the words that differ (twin_kind): relation twins (a relation word changed: "left of" ->
"right of"), binding-swap twins (two objects exchange an attribute: the changed words are the
same words in other places) and attribute-change twins (any other change).
Layout sensitivity: 1 - mean cosine between an image's CMCL embedding and that of its mirror image
(boxes or pixels flipped left-right). 0 means the image side ignores where things are, so it
cannot tell "A left of B" from "B left of A"; relation twins then stay at chance.
"""

import jax
import numpy as np

from unimo_jax.data.pipeline import examples
from unimo_jax.data.pipeline.batching import (batched_apply, contrastive_embedder, pad_rows,
                                              stack_rows)
from unimo_jax.data.pipeline.model_inputs import ModelInputs
from unimo_jax.data.formats.tfds_source import open_records
from unimo_jax.data.pipeline.streams import ReadableRecords
from unimo_jax.metrics.retrieval import recall_at_k
from unimo_jax.model import Unimo
from unimo_jax.objectives.pretraining_loss import pretraining_loss

RELATION_WORDS = {"left", "right", "above", "below", "under", "over", "behind", "beside", "near"}


def mirrored_image(inputs: dict) -> dict:
  """The same image flipped left-right: region boxes [x1, y1, x2, y2, area] -> [1-x2, y1, 1-x1,
  y2, area] (padding regions untouched), or pixels [H, W, C] reversed along W."""
  out = dict(inputs)
  if "pixels" in inputs:
    out["pixels"] = np.asarray(inputs["pixels"])[:, ::-1].copy()
    return out
  loc = np.asarray(inputs["region_locations"])
  flipped = np.stack([1 - loc[..., 2], loc[..., 1], 1 - loc[..., 0], loc[..., 3], loc[..., 4]], -1)
  real = np.asarray(inputs["region_mask"]).astype(bool)[..., None]
  out["region_locations"] = np.where(real, flipped, loc).astype(loc.dtype)
  return out


TWIN_KINDS = ("relation", "binding", "attribute")


def twin_kind(caption: str, twin: str) -> str:
  """'relation', 'binding' or 'attribute': how a twin caption differs from the caption."""
  a, b = caption.split(), twin.split()
  if len(a) == len(b):
    changed = [(x, y) for x, y in zip(a, b) if x != y]
    if any(x in RELATION_WORDS or y in RELATION_WORDS for x, y in changed):
      return "relation"
    if len(changed) >= 2 and sorted(x for x, _ in changed) == sorted(y for _, y in changed):
      return "binding"
  elif (set(a) ^ set(b)) & RELATION_WORDS:
    return "relation"
  return "attribute"


def twin_metrics(images, captions, twins, owners, kinds) -> dict:
  """Twin accuracies from unit embeddings: images / captions [pairs, E], twins [twins, E],
  owners [twins] (the pair each twin rewrites), kinds [twins] (TWIN_KINDS). A win is the image
  scoring its caption above the twin; a tie counts half."""
  owners, kinds = np.asarray(owners), np.asarray(kinds)
  true = (images[owners] * captions[owners]).sum(-1)
  false = (images[owners] * twins).sum(-1)
  wins = (true > false) + 0.5 * (true == false)
  metrics = {"twin_accuracy": float(wins.mean())}
  for kind in TWIN_KINDS:
    if (kinds == kind).any():
      metrics[f"twin_accuracy_{kind}"] = float(wins[kinds == kind].mean())
      metrics[f"twins_{kind}"] = float((kinds == kind).sum())
  return metrics


class Evaluator:
  """Encodes a held-out pair dataset and computes retrieval, twin and MLM metrics."""

  def __init__(self, config, pair_dir, tokenizer, max_pairs: int = 1000):
    self.config = config
    self.tokenizer = tokenizer
    self.source = open_records(pair_dir, "pair", config.data, tokenizer=tokenizer,
                               default_split="validation")
    if config.data.get("skip_bad_records"):  # unreadable held-out records: left out, counted
      self.source = ReadableRecords(self.source, f"held-out pairs {pair_dir}")
    self.count = min(len(self.source), max_pairs)
    self.inputs = ModelInputs.for_model(config.data, config.model, tokenizer.special_ids)
    self._embed = contrastive_embedder(Unimo(config.model))
    losses_config = config.copy_and_resolve_references()
    self._mlm = jax.jit(lambda p, b: pretraining_loss(p, b, losses_config)[1])

  def _encode(self, params, inputs, key, batch_size):
    return batched_apply(lambda p, b: self._embed(p, b, key), params, inputs, batch_size)

  def __call__(self, params) -> dict:
    batch_size = int(self.config.eval_batch)
    records = [self.source[i] for i in range(self.count)]
    image_inputs = [self.inputs.image(r) for r in records]
    images = self._encode(params, image_inputs, "image_embedding", batch_size)
    captions = self._encode(params, [{"input_ids": self.inputs.text(r["caption_ids"])}
                                     for r in records], "text_embedding", batch_size)
    mirrored = self._encode(params, [mirrored_image(x) for x in image_inputs], "image_embedding",
                            batch_size)
    sim = images @ captions.T  # [images, captions]
    metrics = {f"i2t_{k}": v for k, v in recall_at_k(sim).items()}
    metrics.update({f"t2i_{k}": v for k, v in recall_at_k(sim.T).items()})
    metrics["layout_sensitivity"] = float(1.0 - np.mean(np.sum(images * mirrored, axis=-1)))

    twins, owners, kinds = [], [], []
    for i, r in enumerate(records):
      for twin in r.get("hard_negative_ids", []):
        twins.append({"input_ids": self.inputs.text(twin)})
        owners.append(i)
        kinds.append(twin_kind(self.tokenizer.decode(r["caption_ids"]),
                               self.tokenizer.decode(twin)))
    if twins:
      twin_emb = self._encode(params, twins, "text_embedding", batch_size)
      metrics.update(twin_metrics(images, captions, twin_emb, owners, kinds))

    totals = {}
    rng = np.random.default_rng(0)  # the same masks at every evaluation
    for start in range(0, len(records), batch_size):
      chunk = records[start:start + batch_size]
      # One masking per caption, scored with and without its image.
      text = stack_rows([examples.mlm_fields(r["caption_ids"], self.config.data.max_caption_length,
                                       self.config.data, self.tokenizer.special_ids,
                                       self.tokenizer.vocab_size, rng) for r in chunk])
      pair = dict(stack_rows(image_inputs[start:start + len(chunk)]), **text)
      batch = pad_rows({"pair_mlm": pair, "text_mlm": text}, batch_size)
      if len(chunk) < batch_size:  # padded rows must not count
        for term in ("pair_mlm", "text_mlm"):
          weights = np.array(batch[term]["lm_weights"])
          weights[len(chunk):] = 0
          batch[term]["lm_weights"] = weights
      m = self._mlm(params, batch)
      for term in ("pair_mlm", "text_mlm"):
        tokens = float(m[f"{term}/tokens"])
        totals[term] = totals.get(term, np.zeros(2)) + [float(m[f"{term}/accuracy"]) * tokens,
                                                        tokens]
    metrics["mlm_accuracy_with_image"] = float(totals["pair_mlm"][0] / totals["pair_mlm"][1])
    metrics["mlm_accuracy_text_only"] = float(totals["text_mlm"][0] / totals["text_mlm"][1])
    metrics["pairs"] = float(self.count)
    return metrics
