"""Recall@K for image-text retrieval, with any number of captions per image."""

import numpy as np


def recall_at_k(similarity, ks=(1, 5, 10)) -> dict:
  """similarity [N, N] (rows: queries; the right answer of row i is column i)."""
  sim = np.asarray(similarity)
  correct = sim[np.arange(len(sim)), np.arange(len(sim))]
  rank = (sim > correct[:, None]).sum(axis=1)  # ties count in the query's favour
  return {f"R@{k}": float(np.mean(rank < k)) for k in ks}


def retrieval_recall(similarity, text_image, ks=(1, 5, 10)) -> dict:
  """similarity [images, texts]; text_image [texts]: the image each text describes.

  i2t_R@K: an image query is right when any of its texts ranks in the top K;
  t2i_R@K: a text query is right when its image ranks in the top K. Ties count in the query's
  favour (a score equal to the right one does not push it down).
  """
  sim = np.asarray(similarity, np.float64)
  text_image = np.asarray(text_image)
  images, texts = sim.shape
  if text_image.shape != (texts,) or texts == 0 or images == 0:
    raise ValueError(f"retrieval: expected a non-empty [images, texts] matrix and one image per "
                     f"text, found similarity {list(sim.shape)} and text_image "
                     f"{list(text_image.shape)}")
  own = text_image[None, :] == np.arange(images)[:, None]  # [images, texts]
  if not own.any(axis=1).all():
    raise ValueError(f"retrieval: images {np.flatnonzero(~own.any(axis=1))[:5].tolist()} have no "
                     "text")
  best_own = np.where(own, sim, -np.inf).max(axis=1)  # [images]
  i2t_rank = (np.where(own, -np.inf, sim) > best_own[:, None]).sum(axis=1)
  correct = sim[text_image, np.arange(texts)]  # [texts]
  t2i_rank = (sim > correct[None, :]).sum(axis=0)
  out = {f"i2t_R@{k}": float(np.mean(i2t_rank < k)) for k in ks}
  out.update({f"t2i_R@{k}": float(np.mean(t2i_rank < k)) for k in ks})
  out["mean_recall"] = float(np.mean(list(out.values())))
  return out
