"""Image-text retrieval, zero-shot and fine-tuned.

Zero-shot: cosine similarity of the CMCL embeddings (image alone, text alone).
Fine-tuned (UNIMO's Flickr30k recipe): the joint encoder reads the pair [IMG] v.. [CLS] w.. [SEP];
score = match_fc(dropout(pooled_text * pooled_image)). Each training example is a group of
1 positive, task.negatives pairs of its text with other images and task.negatives pairs of its
image with other texts, drawn from the whole training set (task.negative_source 'train_set',
UNIMO's reader) or taken from the next examples of the batch ('batch'); circle loss (margin
task.circle_margin, scale task.circle_scale) over the image negatives and over the text
negatives, averaged.
Evaluation scores every image against every text of the eval split with the joint encoder, in
batches sharded over the mesh, and reports R@1/5/10 both ways (plus the zero-shot figures). With
task.rerank_top_k = k (>= 10) it re-scores only each image's and each text's k nearest by the
zero-shot similarity (the rest rank last), which makes large test sets affordable.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from unimo_jax.errors import DataError
from unimo_jax.data.synthetic.task_data import scene_pair_paths
from unimo_jax.metrics.retrieval import retrieval_recall
from unimo_jax.tasks.base import Task
from unimo_jax.tasks.heads import MatchHead


def circle_loss(positive, negatives, margin: float, scale: float):
  """Circle loss (Sun et al. 2020) of one positive score [batch] against negatives [batch, n]:
  log(1 + sum_j exp(scale * a_n (s_n - m)) * exp(-scale * a_p (s_p - (1 - m)))), with the
  weights a_p = relu(1 + m - s_p) and a_n = relu(s_n + m) held constant."""
  a_p = jax.lax.stop_gradient(jax.nn.relu(1.0 + margin - positive))
  a_n = jax.lax.stop_gradient(jax.nn.relu(negatives + margin))
  logit_p = -scale * a_p * (positive - (1.0 - margin))  # [batch]
  logit_n = scale * a_n * (negatives - margin)  # [batch, n]
  return jax.nn.softplus(jax.nn.logsumexp(logit_n, axis=-1) + logit_p)


def constant_score_loss(negatives: int, margin: float, scale: float) -> float:
  """The circle loss when every pair scores the same: where a match head that ignores its input
  settles (its bias alone gets there). With the weights held constant the loss's gradient along
  a common shift of all scores vanishes where a_p = a_n, i.e. at score 0.5, where the loss is
  softplus(ln n + 2 * scale * (0.5 + m) * (0.5 - m)): 8.666 for n = 7, m = 0.2, scale 16."""
  import math
  x = math.log(negatives) + 2.0 * scale * (0.5 + margin) * (0.5 - margin)
  return x + math.log1p(math.exp(-x))


NEGATIVE_SOURCES = ("train_set", "batch")


class RetrievalTask(Task):
  name = "retrieval"

  def synthetic_paths(self, root):
    return scene_pair_paths(root)  # held-out scenes are unique: one right answer

  def head(self):
    return MatchHead(self.config.model, self.config.task.head_dropout)

  def check_data(self) -> None:
    super().check_data()
    if not self.config.get("init_from") and self.data_paths.get("train"):
      t = self.config.task
      plateau = constant_score_loss(int(t.negatives), float(t.circle_margin), float(t.circle_scale))
      print(f"warning: retrieval fine-tuning without config.init_from: from a random backbone "
            f"the match head settles where every pair scores the same (training loss "
            f"{plateau:.3f}) and R@K stays at chance; start from a backbone pretrained with "
            "CMCL (docs/finetuning.md#retrieval-needs-a-pretrained-backbone)", flush=True)

  @property
  def negative_source(self) -> str:
    source = self.config.task.get("negative_source", "batch")
    if source not in NEGATIVE_SOURCES:
      raise ValueError(f"task.negative_source: expected one of {NEGATIVE_SOURCES}, found "
                       f"{source!r}")
    return source

  @functools.cached_property
  def _negative_pool(self):
    """(records, image key of each, whether there are several images) the negatives are drawn
    from: the training split; a placeholder when no data is read (compile mode)."""
    if "train" in self.data_paths:
      source = self.source("train")
      keys = [str(source[i].get("image_id", i)) for i in range(len(source))]
    else:
      source, keys = [self.placeholder_record()], ["placeholder"]
    return source, keys, len(set(keys)) > 1

  def sampled_negatives(self, record, rng) -> list:
    """UNIMO's retrieval reader: task.negatives records of other images (their images pair with
    this caption), then task.negatives more (their captions pair with this image), each drawn
    uniformly from the training set until its image differs from the record's."""
    source, keys, several = self._negative_pool
    own = str(record.get("image_id", ""))
    out = []
    for _ in range(2 * int(self.config.task.negatives)):
      for _attempt in range(1000):
        j = int(rng.integers(len(source)))
        if keys[j] != own or not several:
          break
      out.append(source[j])
    return out

  def train_example(self, record, rng):
    inputs = self.pair_inputs(record, "train record", rng)
    if self.negative_source == "batch":
      return {"input_ids": inputs.pop("input_ids"), "image": inputs}
    # [1 + n] images (the record's, then n negatives') and [1 + n] texts (likewise)
    n = int(self.config.task.negatives)
    negatives = self.sampled_negatives(record, rng)
    images = [inputs] + [self.image_inputs(r, "negative record", rng) for r in negatives[:n]]
    texts = [inputs["input_ids"]] + [self.inputs.text(r["caption_ids"]) for r in negatives[n:]]
    image = {k: np.stack([im[k] for im in images]) for k in images[0] if k != "input_ids"}
    return {"input_ids": np.stack(texts), "image": image}

  def pair_scores(self, params, image, input_ids, rng=None):
    """Match scores [n] of image i with text i (the joint encoder + match head)."""
    _, scores = self.forward(params, dict(image, input_ids=input_ids), rng,
                             heads=frozenset())
    return scores

  def loss(self, params, batch, rng):
    b = batch["input_ids"].shape[0]
    n = int(self.config.task.negatives)
    take = lambda tree, idx: jax.tree.map(lambda x: jnp.take(x, idx.reshape(-1), axis=0), tree)
    if batch["input_ids"].ndim == 3:  # sampled negatives: [b, 1 + n, ...] images and texts
      flat = lambda tree: jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:]), tree)
      first = lambda tree: jax.tree.map(lambda x: jnp.repeat(x[:, 0], n + 1, axis=0), tree)
      images = jax.tree.map(lambda x, y: jnp.concatenate([x, y]), flat(batch["image"]),
                            first(batch["image"]))
      texts = jnp.concatenate([first(batch["input_ids"]), flat(batch["input_ids"])])
    else:
      if not 0 < n < b:
        raise ValueError(f"task.negatives: expected 1..{b - 1} (the batch's other examples), "
                         f"found {n}")
      offsets = jnp.arange(n + 1)  # 0: the positive; 1..n: the next examples of the batch
      other = (jnp.arange(b)[:, None] + offsets[None]) % b  # [b, n+1]
      own = jnp.repeat(jnp.arange(b), n + 1)
      images = jax.tree.map(lambda x, y: jnp.concatenate([x, y]),
                            take(batch["image"], other), take(batch["image"], own))
      texts = jnp.concatenate([take(batch["input_ids"], own), take(batch["input_ids"], other)])
    # group 1: the text with other images; group 2: the image with other texts
    scores = self.pair_scores(params, images, texts, rng).reshape(2, b, n + 1)
    c = self.config.task
    per_group = [circle_loss(g[:, 0], g[:, 1:], c.circle_margin, c.circle_scale) for g in scores]
    loss = 0.5 * (per_group[0].mean() + per_group[1].mean())
    accuracy = jnp.mean(jnp.argmax(scores, axis=-1) == 0)
    return loss, {"total_loss": loss, "group_accuracy": accuracy}

  def eval_fn(self):
    return lambda p, b: self.pair_scores(p, b["image"], b["input_ids"])  # [pairs]

  def eval_row(self, record, where="record"):
    inputs = self.pair_inputs(record, where)
    return {"input_ids": inputs.pop("input_ids"), "image": inputs}

  def _eval_rows(self, split):
    source = self.source(split)
    if len(source) == 0:
      raise DataError(f"data.{split}_dir: expected at least one pair, found an empty split")
    image_index, images, texts, text_image, ids = {}, [], [], [], []
    limit = int(self.config.data.eval_limit) or len(source)
    for i in range(len(source)):
      record = source[i]
      key = str(record.get("image_id", i))
      if key not in image_index:
        if len(image_index) >= limit:
          continue
        image_index[key] = len(images)
        images.append(self.image_inputs(record, f"{split} record {i}"))
        ids.append(key)
      texts.append(self.text_ids(record["caption_ids"], self.config.data.max_caption_length))
      text_image.append(image_index[key])
    return images, texts, np.asarray(text_image), ids

  def similarity(self, params, images, texts, candidates=None):
    """[images, texts] match scores through the joint encoder: every pair, or only the
    (image, text) pairs marked in `candidates` [images, texts] (the others are -inf)."""
    fn = jax.jit(self.eval_fn())
    if candidates is None:
      candidates = np.ones((len(images), len(texts)), bool)
    pairs = np.argwhere(candidates)  # [pairs, 2] (image, text)
    rows = [{"image": images[i], "input_ids": texts[t]} for i, t in pairs]
    sim = np.full(candidates.shape, -np.inf, np.float32)
    sim[pairs[:, 0], pairs[:, 1]] = self.batched(fn, params, rows)
    return sim

  def rerank_candidates(self, zero_shot, k: int):
    """[images, texts] bool: each image's top-k texts and each text's top-k images by the
    zero-shot (CMCL) similarity, the pairs the joint encoder then re-scores."""
    if k < 10:
      raise ValueError(f"task.rerank_top_k: expected 0 (score every pair) or >= 10 (so R@10 is "
                       f"exact), found {k}")
    out = np.zeros(zero_shot.shape, bool)
    rows = np.argsort(-zero_shot, axis=1)[:, :k]
    out[np.arange(len(zero_shot))[:, None], rows] = True
    cols = np.argsort(-zero_shot, axis=0)[:k]
    out[cols, np.arange(zero_shot.shape[1])[None]] = True
    return out

  def evaluate(self, params):
    images, texts, text_image, ids = self._eval_rows("eval")
    zero_shot = self.zero_shot_similarity(params, images, texts)
    metrics = {f"zero_shot_{k}": v for k, v in retrieval_recall(zero_shot, text_image).items()}
    k = int(self.config.task.rerank_top_k)
    candidates = self.rerank_candidates(zero_shot, k) if k else None
    sim = self.similarity(params, images, texts, candidates)
    metrics.update(retrieval_recall(sim, text_image))
    metrics["scored_pairs"] = float(np.isfinite(sim).sum())
    metrics.update(images=float(len(images)), texts=float(len(texts)))
    ranked = np.argsort(-sim, axis=1)[:, :10]
    return metrics, [{"image_id": ids[i], "top_texts": ranked[i].tolist(),
                      "true_texts": np.flatnonzero(text_image == i).tolist()}
                     for i in range(len(images))]


TASK = RetrievalTask
