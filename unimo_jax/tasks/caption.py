"""Image captioning: image (regions or pixels) -> caption, with the caption attention mask (the
image is bidirectional and blind to the caption; caption tokens see the image and their past).

With task.object_tags, the record's detector object tags (tag_ids, at most data.max_tags) join
the source as a text block after the image (positions from 2), bidirectional with the image, as
UNIMO's 'vo' / 'vol' layouts; the caption block restarts at position 2.
Training: label-smoothed cross-entropy on next caption tokens (BOS [CLS], EOS [SEP]).
Evaluation: beam search (UNIMO: beam 5, length penalty 0.6) on every distinct image of the eval
split; references are every caption of that image (records sharing image_id) plus their
paraphrases when the records carry them (the synthetic scenes do). Metrics: BLEU-1..4, METEOR,
ROUGE-L, CIDEr-D and SPICE through pycocoevalcap (metrics/caption.py).
"""


import numpy as np

from unimo_jax.data.pipeline import examples
from unimo_jax.errors import DataError
from unimo_jax.data.synthetic.task_data import scene_pair_paths
from unimo_jax.metrics.caption import caption_metrics
from unimo_jax.tasks.generation import GenerationTask


def tag_block(tag_ids, length: int, pad_id: int) -> dict:
  """Object tags as a source text block: input_ids / position_ids [length], positions from 2."""
  ids = np.full(length, pad_id, np.int32)
  tags = np.asarray(tag_ids, np.int32)[:length]
  ids[:len(tags)] = tags
  return {"input_ids": ids, "position_ids": examples.block_positions(ids, pad_id)}


class CaptionTask(GenerationTask):
  name = "caption"
  mask_kind = "caption"

  def synthetic_paths(self, root):
    return scene_pair_paths(root)  # references: each caption and its paraphrases

  def usable(self, record):
    if self.config.data.image_input == "regions" and len(record.get("region_features", ())) == 0:
      return False  # an image without regions has nothing to caption: counted, skipped
    return True

  def _tags(self, record, where):
    """The padded tag block [max_tags] (ids and positions), or None without task.object_tags."""
    if not self.config.task.object_tags:
      return None
    if "tag_ids" not in record:
      raise DataError(f"{where}: task.object_tags needs 'tag_ids' (detector object tags) in the "
                      f"records, found fields {sorted(record)}")
    return tag_block(record["tag_ids"], int(self.config.data.max_tags), self.special["pad"])

  def source_inputs(self, record, where="record", rng=None):
    """What the caption is generated from: the image, plus its tags with task.object_tags."""
    image = self.image_inputs(record, where, rng)
    tags = self._tags(record, where)
    return image if tags is None else dict(image, **tags)

  def eval_row(self, record, where="record"):
    return self.source_inputs(record, where)

  def train_example(self, record, rng):
    source = self.source_inputs(record, "train record", rng)
    caption = examples.caption_fields(record["caption_ids"], self.config.data, self.special)
    if "input_ids" not in source:
      return {"inputs": dict(source, **caption)}
    tags = len(source["input_ids"])
    return {"inputs": dict(
        source,
        input_ids=np.concatenate([source["input_ids"], caption["input_ids"]]),
        position_ids=np.concatenate([source["position_ids"], caption["position_ids"]]),
        target_mask=np.concatenate([np.zeros(tags, bool), caption["target_mask"]]),
        lm_positions=caption["lm_positions"] + tags,
        lm_labels=caption["lm_labels"], lm_weights=caption["lm_weights"])}

  def _images(self, split):
    """[(image_id, first record, [reference texts])] of the split's distinct images."""
    source = self.source(split)
    order, groups = [], {}
    for i in range(len(source)):
      record = source[i]
      key = str(record.get("image_id", i))
      if key not in groups:
        order.append(key)
        groups[key] = (record, [])
      refs = groups[key][1]
      refs.append(record.get("caption") or self.tokenizer.decode(record["caption_ids"]))
      refs.extend(self.tokenizer.decode(p) for p in record.get("paraphrase_ids", []))
    limit = int(self.config.data.eval_limit) or len(order)
    return [(k, groups[k][0], groups[k][1]) for k in order[:limit]], source

  def _captions(self, params, split):
    images, source = self._images(split)
    if not images:
      raise DataError(f"data.{split}_dir: expected at least one image, found an empty split")
    inputs, kept, skipped = [], [], 0
    for key, record, refs in images:
      if not self.usable(record):
        skipped += 1
        continue
      inputs.append(self.eval_row(record, f"{split} image {key}"))
      kept.append((key, refs))
    if skipped:
      self.skipped[f"{split}_images_without_regions"] = skipped
      print(f"skipped {skipped} {split} images without region features", flush=True)
    return kept, self.generate_texts(params, inputs)

  def evaluate(self, params):
    kept, texts = self._captions(params, "eval")
    predictions = {key: text for (key, _), text in zip(kept, texts)}
    references = {key: refs for key, refs in kept}
    metrics = caption_metrics(predictions, references)
    metrics["images"] = float(len(kept))
    return metrics, [{"image_id": key, "caption": text, "references": refs}
                     for (key, refs), text in zip(kept, texts)]

  def predict(self, params):
    kept, texts = self._captions(params, "predict")
    return [{"image_id": key, "caption": text} for (key, _), text in zip(kept, texts)]


TASK = CaptionTask
