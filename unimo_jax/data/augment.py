"""CMCL augmentation: extra positives and hard negatives for image-text pairs (offline).

  tfidf_neighbours        TF-IDF nearest texts (hard negatives: captions of other images;
                          retrieved texts: sentences of a text corpus)
  Lexicon / rewrite       scene-graph-style rewriting: swap one object, attribute (colour, size,
                          count) or relation word for another of the same kind, the lexicon being
                          the words of each kind found in the corpus
  read_paraphrases        user-supplied paraphrases (e.g. back-translations), TSV "<pair id>\\t<text>"
  retrieve_by_objects     images whose detected objects overlap most (Jaccard) with the pair's
`augment_pairs` applies them to a pair dataset and writes a new one (CLI: `augment`).
"""

import collections
import pathlib
import re

import numpy as np

from unimo_jax.data.records import DataError

# Seed words per kind; the lexicon keeps those that occur in the corpus.
_KIND_SEEDS = {
    "colour": ("red", "green", "blue", "yellow", "purple", "orange", "white", "black", "cyan",
               "brown", "pink", "gray", "grey", "silver", "gold"),
    "size": ("small", "large", "big", "tiny", "huge", "little", "tall", "short"),
    "count": ("one", "two", "three", "four", "five", "six", "several", "many"),
    "relation": ("left", "right", "above", "below", "under", "over", "behind", "beside", "near",
                 "on", "in", "inside", "next"),
}
_WORD = re.compile(r"[a-z]+")


def tfidf_neighbours(queries, documents, k, exclude=None, chunk=1024):
  """[len(queries), k] indices of the most TF-IDF-similar documents (cosine), best first.

  exclude(i) -> set of document indices not allowed for query i (e.g. same-image captions).
  """
  from sklearn.feature_extraction.text import TfidfVectorizer
  if len(documents) == 0:
    raise ValueError("tfidf_neighbours: expected documents, found none")
  vectorizer = TfidfVectorizer(token_pattern=r"(?u)\b\w+\b").fit(list(documents) + list(queries))
  docs = vectorizer.transform(documents)
  query = vectorizer.transform(queries)
  want = min(k + 8, len(documents))
  out = np.full((len(queries), k), -1, np.int64)
  for start in range(0, len(queries), chunk):
    sims = (query[start:start + chunk] @ docs.T).toarray()  # [chunk, documents]
    for row, sim in enumerate(sims):
      i = start + row
      banned = exclude(i) if exclude else ()
      take = want + len(banned)
      top = np.argpartition(-sim, min(take, len(sim) - 1))[:take] if take < len(sim) else \
          np.arange(len(sim))
      top = top[np.argsort(-sim[top], kind="stable")]
      picked = [j for j in top if j not in banned][:k]
      out[i, :len(picked)] = picked
  return out


class Lexicon:
  """Words of each kind found in a corpus: colour, size, count, relation and object nouns."""

  def __init__(self, words_by_kind: dict):
    self.words = {kind: sorted(words) for kind, words in words_by_kind.items() if words}
    self.kind_of = {w: kind for kind, words in self.words.items() for w in words}

  @classmethod
  def from_corpus(cls, texts):
    counts = collections.Counter()
    following_attribute = collections.Counter()
    attributes = set(_KIND_SEEDS["colour"]) | set(_KIND_SEEDS["size"]) | set(_KIND_SEEDS["count"])
    for text in texts:
      words = _WORD.findall(text.lower())
      counts.update(words)
      for prev, word in zip(words, words[1:]):
        if prev in attributes and word not in attributes:
          following_attribute[word] += 1
    kinds = {kind: {w for w in seeds if counts[w]} for kind, seeds in _KIND_SEEDS.items()}
    taken = set().union(*kinds.values())
    # Object nouns: words that follow an attribute, e.g. "red [cube]", "two [dogs]".
    kinds["object"] = {w for w, n in following_attribute.items() if n >= 2 and w not in taken}
    return cls(kinds)

  def rewrite(self, text, rng, kinds=("object", "colour", "size", "count", "relation")):
    """`text` with one word of one kind swapped for another of the same kind, or None."""
    tokens = re.split(r"(\W+)", text)
    candidates = [i for i, t in enumerate(tokens) if self.kind_of.get(t.lower()) in kinds
                  and len(self.words[self.kind_of[t.lower()]]) > 1]
    if not candidates:
      return None
    i = candidates[rng.integers(len(candidates))]
    kind = self.kind_of[tokens[i].lower()]
    choices = [w for w in self.words[kind] if w != tokens[i].lower()]
    tokens[i] = choices[rng.integers(len(choices))]
    return "".join(tokens)


def read_paraphrases(path) -> dict:
  """TSV lines '<pair id>\\t<paraphrase>' -> {pair id: [paraphrases]}; a bad line names itself."""
  out = collections.defaultdict(list)
  for number, line in enumerate(pathlib.Path(path).read_text(encoding="utf-8").splitlines(), 1):
    if not line.strip():
      continue
    parts = line.split("\t")
    if len(parts) != 2 or not parts[1].strip():
      raise DataError(f"{path} line {number}: expected '<pair id>\\t<paraphrase>', found {line!r}")
    out[parts[0]].append(parts[1].strip())
  return dict(out)


def detected_objects(class_probs, threshold=0.2) -> frozenset:
  """Detector classes present in an image: argmax of each region with probability >= threshold."""
  probs = np.asarray(class_probs, np.float32)
  if probs.size == 0:
    return frozenset()
  best = probs.argmax(-1)
  return frozenset(int(c) for c, p in zip(best, probs.max(-1)) if p >= threshold)


def retrieve_by_objects(query_sets, image_sets, k, exclude=None):
  """[len(query_sets), k] image indices with the highest Jaccard overlap of detected objects."""
  classes = sorted(set().union(*image_sets, *query_sets)) or [0]
  index = {c: i for i, c in enumerate(classes)}

  def dense(sets):
    m = np.zeros((len(sets), len(classes)), np.float32)
    for r, s in enumerate(sets):
      m[r, [index[c] for c in s]] = 1
    return m

  q, im = dense(query_sets), dense(image_sets)
  out = np.full((len(query_sets), k), -1, np.int64)
  for start in range(0, len(q), 1024):
    inter = q[start:start + 1024] @ im.T
    union = q[start:start + 1024].sum(1, keepdims=True) + im.sum(1)[None] - inter
    jaccard = np.where(union > 0, inter / np.maximum(union, 1), 0)
    for row, scores in enumerate(jaccard):
      i = start + row
      banned = exclude(i) if exclude else ()
      take = min(k + len(banned) + 1, len(scores))
      top = np.argpartition(-scores, take - 1)[:take] if take < len(scores) else np.arange(take)
      top = top[np.argsort(-scores[top], kind="stable")]
      picked = [j for j in top if j not in banned][:k]
      out[i, :len(picked)] = picked
  return out


def _texts_of(records, tokenizer):
  return [r["caption"] if isinstance(r.get("caption"), str) and r["caption"]
          else tokenizer.decode(r["caption_ids"]) for r in records]


def augment_pairs(pair_dir, out_dir, tokenizer, *, image_dir=None, text_dir=None,
                  paraphrase_file=None, tfidf_negatives=2, rewrites=2, retrieved_images=2,
                  retrieved_texts=2, seed=0, log=print) -> dict:
  """Reads a pair dataset, adds CMCL extras, writes it to out_dir; returns the new metadata.

  Added to each pair: hard_negative_ids (TF-IDF-nearest captions of other images, then lexicon
  rewrites), paraphrase_ids (from paraphrase_file, keyed by caption_id or record index),
  retrieved_images (indices into image_dir by detected-object overlap) and retrieved_text_ids
  (TF-IDF-nearest texts of text_dir). Existing extras are kept.
  """
  from unimo_jax.data.records import ShardSource, ShardWriter
  source = ShardSource(pair_dir)
  records = [source[i] for i in range(len(source))]
  if not records:
    raise DataError(f"{pair_dir}: expected pairs, found none")
  captions = _texts_of(records, tokenizer)
  rng = np.random.default_rng(seed)
  image_of = [str(r.get("image_id", i)) for i, r in enumerate(records)]
  by_image, by_text = collections.defaultdict(set), collections.defaultdict(set)
  for i, (image, text) in enumerate(zip(image_of, captions)):
    by_image[image].add(i)
    by_text[text.strip().lower()].add(i)
  negatives = [[] for _ in records]
  if tfidf_negatives:  # never the pair's own image, nor a caption saying the same thing
    near = tfidf_neighbours(
        captions, captions, tfidf_negatives,
        exclude=lambda i: by_image[image_of[i]] | by_text[captions[i].strip().lower()])
    for i, row in enumerate(near):
      negatives[i] += [captions[j] for j in row if j >= 0]
  if rewrites:
    lexicon = Lexicon.from_corpus(captions)
    for i, text in enumerate(captions):
      made = set()
      for _ in range(4 * rewrites):
        twin = lexicon.rewrite(text, rng)
        if twin and twin != text:
          made.add(twin)
        if len(made) == rewrites:
          break
      negatives[i] += sorted(made)
  paraphrases = read_paraphrases(paraphrase_file) if paraphrase_file else {}
  images = None
  if image_dir and retrieved_images:
    image_source = ShardSource(image_dir)
    image_sets = [detected_objects(image_source[j].get("class_probs", np.zeros((0, 1))))
                  for j in range(len(image_source))]
    images = retrieve_by_objects(
        [detected_objects(r.get("class_probs", np.zeros((0, 1)))) for r in records], image_sets,
        retrieved_images)
  texts = None
  if text_dir and retrieved_texts:
    text_source = ShardSource(text_dir)
    corpus_ids = [text_source[j]["input_ids"] for j in range(len(text_source))]
    corpus = [tokenizer.decode(ids) for ids in corpus_ids]
    texts = tfidf_neighbours(captions, corpus, retrieved_texts)
  with ShardWriter(out_dir, "pair", **{k: v for k, v in source.meta.items()
                                       if k not in ("format", "version", "kind", "num_records",
                                                    "shards")}) as w:
    for i, record in enumerate(records):
      record = dict(record)
      key = str(record.get("caption_id", i))
      record["hard_negative_ids"] = list(record.get("hard_negative_ids", [])) + (
          tokenizer.encode_batch(negatives[i]) if negatives[i] else [])
      if paraphrases.get(key):
        record["paraphrase_ids"] = list(record.get("paraphrase_ids", [])) + \
            tokenizer.encode_batch(paraphrases[key])
      if images is not None:
        record["retrieved_images"] = images[i][images[i] >= 0]
      if texts is not None:
        record["retrieved_text_ids"] = [corpus_ids[j] for j in texts[i] if j >= 0]
      w.write(record)
  log(f"augmented {len(records)} pairs from {pair_dir} into {out_dir}")
  return w.meta
