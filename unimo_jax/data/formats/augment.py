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
import os
import pathlib
import re

import numpy as np

from unimo_jax.errors import DataError

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


def _tfidf_matrices(queries, documents):
  """L2-normalised TF-IDF rows (scipy CSR, float32) of queries and documents, one vocabulary."""
  from sklearn.feature_extraction.text import TfidfVectorizer
  vectorizer = TfidfVectorizer(token_pattern=r"(?u)\b\w+\b", dtype=np.float32)
  if queries is documents:
    docs = vectorizer.fit_transform(documents)
    return docs, docs
  vectorizer.fit(_chain(documents, queries))
  return vectorizer.transform(queries), vectorizer.transform(documents)


def _chain(*lists):
  for values in lists:
    yield from values


def _banned(exclude, rows, docs):
  """[entries] bool: document docs[e] is excluded for query rows[e] (an equal key of any pair)."""
  mask = np.zeros(len(rows), bool)
  for query_keys, doc_keys in exclude:
    mask |= query_keys[rows] == doc_keys[docs]
  return mask


def _key_counts(exclude, count):
  """[queries] the most documents any query can have excluded (the sum over key pairs)."""
  bound = np.zeros(count, np.int64)
  for query_keys, doc_keys in exclude:
    keys, per_key = np.unique(doc_keys, return_counts=True)
    at = np.searchsorted(keys, query_keys).clip(0, len(keys) - 1)
    bound += np.where(keys[at] == query_keys, per_key[at], 0)
  return bound


def _top_candidates(query, docs_t, rows, bound, exclude, want, threads):
  """(rows, documents) entries, grouped by row: each row's largest query . document products
  outside its excluded documents, at least `want` of them, or every allowed document sharing a
  term with the row. rows: [n] query indices; bound: [queries] excluded-document counts."""
  from sparse_dot_topn import sp_matmul_topn
  count = docs_t.shape[1]
  out_rows, out_docs, margin = [], [], 16
  while len(rows):
    top_n = int(min(want + margin + bound[rows].max(), count))
    product = sp_matmul_topn(query[rows], docs_t, top_n=top_n, threshold=0.0,
                             n_threads=threads)
    lengths = np.diff(product.indptr)
    entry_rows = np.repeat(rows, lengths)
    allowed = ~_banned(exclude, entry_rows, product.indices)
    per_row = np.bincount(np.repeat(np.arange(len(rows)), lengths), weights=allowed,
                          minlength=len(rows))
    short = (lengths == top_n) & (top_n < count) & (per_row < want)  # ranks past top_n unknown
    keep = allowed & ~np.repeat(short, lengths)
    out_rows.append(entry_rows[keep])
    out_docs.append(product.indices[keep].astype(np.int64))
    rows, margin = rows[short], margin * 4
  return np.concatenate(out_rows), np.concatenate(out_docs)


def _exact_scores(query, docs, rows, candidates):
  """[entries] cosine of each (rows[e], candidates[e]) pair over all terms."""
  if not len(rows):
    return np.zeros(0, np.float32)
  return np.asarray(query[rows].multiply(docs[candidates]).sum(1)).ravel()


def _best_k(rows, candidates, scores, start, size, k):
  """[size, k] per row the k candidates of highest score (equal to 5 decimals: lower index
  first), -1 past the last."""
  order = np.lexsort((candidates, -np.round(scores, 5), rows))  # float32 noise is not an order
  rows, candidates = rows[order], candidates[order]
  first = np.searchsorted(rows, rows)  # each entry's row's first entry
  rank = np.arange(len(rows)) - first
  out = np.full((size, k), -1, np.int64)
  take = rank < k
  out[rows[take] - start, rank[take]] = candidates[take]
  return out


def tfidf_neighbours(queries, documents, k, exclude=(), chunk=20_000, candidate_df=5_000,
                     candidates=64, threads=None):
  """[len(queries), k] indices of the most TF-IDF-similar documents (cosine), best first; -1
  where fewer than k documents share a word with the query. Similarities equal to 5 decimals
  are ties, which go to the lower index.

  exclude: (query_keys, document_keys) pairs of integer arrays ([len(queries)],
  [len(documents)]); document j is not allowed for query i where query_keys[i] ==
  document_keys[j] in any pair (e.g. image ids: never a caption of the query's own image).

  Sparse throughout, memory linear in the number of texts, no per-query Python:
  sparse_dot_topn keeps each query row's best products, `chunk` rows at a time, on `threads`
  threads (default: every core). The best `candidates` per query come from the terms found in
  at most `candidate_df` documents (words like 'a' or 'man', in a large share of all captions,
  would make every caption a candidate of every other: quadratic time); each is then scored by
  the exact cosine over all terms. A query with too few such candidates takes them from all
  terms. With at most candidate_df documents nothing is left out and the result is exact;
  above, a neighbour whose similarity lies mostly in frequent words can be missed
  (benchmarks/augment_scale.py measures how often against the exact neighbours).
  """
  if len(documents) == 0:
    raise ValueError("tfidf_neighbours: expected documents, found none")
  exclude = [(np.asarray(q, np.int64), np.asarray(d, np.int64)) for q, d in exclude]
  for q, d in exclude:
    if q.shape != (len(queries),) or d.shape != (len(documents),):
      raise ValueError(f"tfidf_neighbours: expected exclusion keys of shapes ({len(queries)},) "
                       f"and ({len(documents)},), found {q.shape} and {d.shape}")
  query, docs = _tfidf_matrices(queries, documents)
  frequency = np.bincount(docs.indices, minlength=docs.shape[1])
  rare = np.flatnonzero(frequency <= candidate_df)
  rare_query, rare_docs_t = query[:, rare].tocsr(), docs[:, rare].T.tocsr()
  docs_t = None  # every term's transpose: only for queries made of frequent terms
  bound = _key_counts(exclude, query.shape[0])
  want = max(candidates, k)  # candidates re-scored per query
  threads = threads or os.cpu_count()
  out = np.full((query.shape[0], k), -1, np.int64)
  for start in range(0, query.shape[0], chunk):
    rows = np.arange(start, min(start + chunk, query.shape[0]))
    entry_rows, entry_docs = _top_candidates(rare_query, rare_docs_t, rows, bound, exclude,
                                             want, threads)
    few = np.flatnonzero(np.bincount(entry_rows - start, minlength=len(rows)) < k) + start
    if len(few):  # all their terms are frequent ones: candidates from every term instead
      docs_t = docs.T.tocsr() if docs_t is None else docs_t
      again = ~np.isin(entry_rows, few)
      more_rows, more_docs = _top_candidates(query, docs_t, few, bound, exclude, want, threads)
      entry_rows = np.concatenate([entry_rows[again], more_rows])
      entry_docs = np.concatenate([entry_docs[again], more_docs])
    scores = _exact_scores(query, docs, entry_rows, entry_docs)
    out[rows] = _best_k(entry_rows, entry_docs, scores, start, len(rows), k)
  return out


class Lexicon:
  """Words of each kind found in a corpus: colour, size, count, relation and object nouns."""

  def __init__(self, words_by_kind: dict):
    self.words = {kind: sorted(words) for kind, words in words_by_kind.items() if words}
    self.kind_of = {w: kind for kind, words in self.words.items() for w in words}
    self.position = {w: i for words in self.words.values() for i, w in enumerate(words)}

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
    word = tokens[i].lower()
    words = self.words[self.kind_of[word]]
    pick = int(rng.integers(len(words) - 1))  # among the kind's words other than this one
    tokens[i] = words[pick + (pick >= self.position[word])]
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
  rows = max(1, 2 ** 24 // max(1, len(image_sets)))  # [rows, images] float32 blocks of <= 64 MiB
  for start in range(0, len(q), rows):
    inter = q[start:start + rows] @ im.T
    union = q[start:start + rows].sum(1, keepdims=True) + im.sum(1)[None] - inter
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


def _text_of(record, tokenizer):
  caption = record.get("caption")
  return caption if isinstance(caption, str) and caption else tokenizer.decode(
      record["caption_ids"])


def _progress(log, what, done, total, every=100_000):
  if done % every == 0 or done == total:
    log(f"  {what}: {done:,} / {total:,}")


def _read_pair_index(source, tokenizer, log, want_objects):
  """One streaming pass over the pairs: (captions, image ids, detected objects or None)."""
  captions, image_of, objects = [], [], [] if want_objects else None
  for i, record in enumerate(source):
    captions.append(_text_of(record, tokenizer))
    image_of.append(str(record.get("image_id", i)))
    if want_objects:
      objects.append(detected_objects(record.get("class_probs", np.zeros((0, 1)))))
    _progress(log, "read captions", i + 1, len(source))
  return captions, image_of, objects


def _rewrites(lexicon, text, count, rng):
  made = set()
  for _ in range(4 * count):
    twin = lexicon.rewrite(text, rng)
    if twin and twin != text:
      made.add(twin)
    if len(made) == count:
      break
  return sorted(made)


def augment_pairs(pair_dir, out_dir, tokenizer, *, image_dir=None, text_dir=None,
                  paraphrase_file=None, tfidf_negatives=2, rewrites=2, retrieved_images=2,
                  retrieved_texts=2, seed=0, chunk=10_000, log=print) -> dict:
  """Reads a pair dataset, adds CMCL extras, writes it to out_dir; returns the new metadata.

  Added to each pair: hard_negative_ids (TF-IDF-nearest captions of other images, then lexicon
  rewrites), twin_pairs (the indices of the pairs those nearest captions belong to: their images
  are hard-negative images, co-batched by data.cmcl_twin_fraction), paraphrase_ids (from
  paraphrase_file, keyed by caption_id or record index), retrieved_images (indices into image_dir by detected-object overlap) and retrieved_text_ids
  (TF-IDF-nearest texts of text_dir). Existing extras are kept.

  Streaming: the pairs are read twice, once for their captions (the only per-pair state kept:
  text, image id, detected objects, and k neighbour indices) and once to write, `chunk` records
  at a time; TF-IDF neighbours are sparse top-k products (tfidf_neighbours).
  """
  from unimo_jax.data.formats.records import ShardSource, ShardWriter
  source = ShardSource(pair_dir)
  if not len(source):
    raise DataError(f"{pair_dir}: expected pairs, found none")
  log(f"augmenting {len(source):,} pairs from {pair_dir}")
  want_objects = bool(image_dir and retrieved_images)
  captions, image_of, pair_objects = _read_pair_index(source, tokenizer, log, want_objects)
  rng = np.random.default_rng(seed)
  near = None
  if tfidf_negatives:  # never the pair's own image, nor a caption saying the same thing
    images_key = _integer_keys(image_of)
    texts_key = _integer_keys(c.strip().lower() for c in captions)
    log(f"  TF-IDF neighbours of {len(captions):,} captions")
    near = tfidf_neighbours(captions, captions, tfidf_negatives,
                            exclude=[(images_key, images_key), (texts_key, texts_key)])
    del images_key, texts_key
  lexicon = Lexicon.from_corpus(captions) if rewrites else None
  paraphrases = read_paraphrases(paraphrase_file) if paraphrase_file else {}
  images = None
  if want_objects:
    image_source = ShardSource(image_dir)
    image_sets = [detected_objects(r.get("class_probs", np.zeros((0, 1)))) for r in image_source]
    log(f"  object-overlap retrieval over {len(image_sets):,} images")
    images = retrieve_by_objects(pair_objects, image_sets, retrieved_images)
  texts, text_source = None, None
  if text_dir and retrieved_texts:
    text_source = ShardSource(text_dir)
    corpus = [tokenizer.decode(r["input_ids"]) for r in text_source]
    log(f"  TF-IDF retrieval over {len(corpus):,} corpus texts")
    texts = tfidf_neighbours(captions, corpus, retrieved_texts)
    del corpus
  keep = {k: v for k, v in source.meta.items()
          if k not in ("format", "version", "kind", "num_records", "shards")}
  records = iter(source)
  with ShardWriter(out_dir, "pair", **keep) as w:
    for start in range(0, len(source), chunk):
      stop = min(start + chunk, len(source))
      negatives = []
      for i in range(start, stop):
        found = [captions[j] for j in near[i] if j >= 0] if near is not None else []
        if lexicon is not None:
          found += _rewrites(lexicon, captions[i], rewrites, rng)
        negatives.append(found)
      encoded = _encode_lists(tokenizer, negatives)
      for i, negative_ids in zip(range(start, stop), encoded):
        record = dict(next(records))
        key = str(record.get("caption_id", i))
        record["hard_negative_ids"] = list(record.get("hard_negative_ids", [])) + negative_ids
        if near is not None:  # the pairs whose captions are its hard negatives: their images
          record["twin_pairs"] = near[i][near[i] >= 0]  # are its hard-negative images
        if paraphrases.get(key):
          record["paraphrase_ids"] = list(record.get("paraphrase_ids", [])) + \
              tokenizer.encode_batch(paraphrases[key])
        if images is not None:
          record["retrieved_images"] = images[i][images[i] >= 0]
        if texts is not None:
          record["retrieved_text_ids"] = [text_source[int(j)]["input_ids"] for j in texts[i]
                                          if j >= 0]
        w.write(record)
      _progress(log, "written", stop, len(source))
  log(f"augmented {len(source):,} pairs from {pair_dir} into {out_dir}")
  return w.meta


def _integer_keys(values) -> np.ndarray:
  """[n] int64: equal values get equal integers."""
  index = {}
  return np.fromiter((index.setdefault(v, len(index)) for v in values), np.int64)


def _encode_lists(tokenizer, lists):
  """[[text]] -> [[ids]] with one encode_batch call over all the texts."""
  flat = [t for texts in lists for t in texts]
  ids = iter(tokenizer.encode_batch(flat) if flat else [])
  return [[next(ids) for _ in texts] for texts in lists]
