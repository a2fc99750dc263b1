"""CMCL augmentation at COCO scale: wall time and peak memory of `python -m unimo_jax.data augment`.

  python benchmarks/augment_scale.py [--captions 600000] [--compare 60000] [--workdir DIR]

Writes a pair dataset of --captions captions (5 per image, COCO's ratio) whose text follows
COCO's statistics: 8 to 14 words per caption, content words drawn from a 20,000-word Zipf
vocabulary (colour, size, count and relation words among the most frequent), stop words ('a', 'on', 'of', ...) at COCO's rate, so TF-IDF sees as many shared words
per pair as on real captions. Then it runs the augment command in a child process (TF-IDF
negatives and lexicon rewrites) and prints its wall time and peak resident memory (the child's
ru_maxrss).

Then, in this process, it checks the written hard negatives of --sample random pairs against
their exact TF-IDF neighbours (every caption scored, the pair's own image and text excluded) and
prints the share whose two TF-IDF negatives are exactly those.

--compare N also times the dense reference at N captions, in this process: sklearn TF-IDF with
[1024, N] dense similarity blocks and an argpartition per row (the method that sparse top-k
replaced), against tfidf_neighbours on the same captions, and prints the time ratio and how
many queries get the same neighbour set.
"""

import argparse
import pathlib
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
STOP_WORDS = ("a", "a", "a", "the", "on", "of", "in", "with", "and", "is", "an", "at", "to")


def made_up_words(count, rng):
  """`count` distinct lower-case pseudo-words of 2-4 syllables."""
  syllables = [c + v for c in "bcdfghklmnprstvz" for v in "aeiou"]
  words = set()
  while len(words) < count:
    words.add("".join(rng.choice(syllables, size=rng.integers(2, 5))))
  return sorted(words)


def coco_like_captions(count, seed=0):
  rng = np.random.default_rng(seed)
  from unimo_jax.data.formats.augment import _KIND_SEEDS  # colour, size, count, relation words first,
  seeds = sorted({w for words in _KIND_SEEDS.values() for w in words})  # so rewrites find some
  vocab = np.array(seeds + made_up_words(20_000 - len(seeds), rng))
  ranks = np.arange(1, len(vocab) + 1)
  probs = ranks ** -1.1
  probs /= probs.sum()
  captions = []
  for _ in range(count):
    n = int(rng.integers(8, 15))
    content = rng.choice(vocab, size=n - n // 3, p=probs)
    stop = rng.choice(STOP_WORDS, size=n // 3)
    words = list(content) + list(stop)
    rng.shuffle(words)
    captions.append(" ".join(words))
  return captions


def write_pairs(out, captions, tokenizer):
  from unimo_jax.data.formats.records import ShardWriter
  rng = np.random.default_rng(1)
  with ShardWriter(out, "pair", region_feature_dim=4, records_per_shard=50_000) as w:
    for start in range(0, len(captions), 10_000):
      chunk = captions[start:start + 10_000]
      for i, (text, ids) in enumerate(zip(chunk, tokenizer.encode_batch(chunk)), start):
        w.write({"image_id": str(i // 5), "image_w": 640, "image_h": 480,
                 "region_features": rng.standard_normal((2, 4)).astype(np.float16),
                 "boxes": np.array([[0, 0, 10, 10], [5, 5, 20, 20]], np.float32),
                 "caption": text, "caption_id": str(i), "caption_ids": ids})


def dense_reference(captions, k):
  """The dense method: full similarity rows in [1024, N] blocks, top k by argpartition."""
  from sklearn.feature_extraction.text import TfidfVectorizer
  vectorizer = TfidfVectorizer(token_pattern=r"(?u)\b\w+\b").fit(captions)
  docs = vectorizer.transform(captions)
  out = np.full((len(captions), k), -1, np.int64)
  for start in range(0, len(captions), 1024):
    sims = (docs[start:start + 1024] @ docs.T).toarray()
    for row, sim in enumerate(sims):
      sim[start + row] = -1  # not itself
      top = np.argpartition(-sim, k)[:k]
      out[start + row] = top[np.argsort(-sim[top], kind="stable")]
  return out


def compare(count, k=2):
  from unimo_jax.data.formats.augment import tfidf_neighbours
  captions = coco_like_captions(count, seed=3)
  start = time.perf_counter()
  dense = dense_reference(captions, k)
  dense_s = time.perf_counter() - start
  start = time.perf_counter()
  itself = np.arange(len(captions))
  sparse = tfidf_neighbours(captions, captions, k, exclude=[(itself, itself)])
  sparse_s = time.perf_counter() - start
  same = sum(set(a) == set(b) for a, b in zip(dense, sparse))
  print(f"TF-IDF neighbours of {count:,} captions (k={k}): dense reference {dense_s:.1f} s, "
        f"sparse top-k {sparse_s:.1f} s, ratio x{dense_s / sparse_s:.1f}; same neighbour sets "
        f"{same:,} / {count:,}", flush=True)


def exact_sample(pairs, sample, k=2, seed=0):
  """Share of `sample` random pairs whose first k hard negatives are their exact neighbours."""
  from sklearn.feature_extraction.text import TfidfVectorizer
  from unimo_jax.data.formats.records import ShardSource
  from unimo_jax.data.formats.tokenizers import load_tokenizer
  source, out = ShardSource(pairs), ShardSource(pairs.parent / "augmented")
  captions = [source[i]["caption"] for i in range(len(source))]
  images = np.array([int(source[i]["image_id"]) for i in range(len(source))])
  tokenizer = load_tokenizer(pairs / "tokenizer.model")
  docs = TfidfVectorizer(token_pattern=r"(?u)\b\w+\b", dtype=np.float32).fit_transform(captions)
  rows = np.random.default_rng(seed).choice(len(captions), sample, replace=False)
  lower = np.array([c.strip().lower() for c in captions])
  same = 0
  for start in range(0, sample, 100):
    block = rows[start:start + 100]
    sims = (docs[block] @ docs.T).toarray()  # [100, captions]
    for row, sim in zip(block, sims):
      sim[(images == images[row]) | (lower == lower[row])] = -np.inf
      order = np.lexsort((np.arange(len(sim)), -sim))[:k]
      written = [tokenizer.decode(ids) for ids in out[int(row)]["hard_negative_ids"][:k]]
      same += set(written) == {captions[j] for j in order}
  return same / sample


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--captions", type=int, default=600_000)
  parser.add_argument("--compare", type=int, default=60_000, help="0: skip the dense reference")
  parser.add_argument("--sample", type=int, default=1000, help="pairs checked against exact")
  parser.add_argument("--workdir", help="default: a temporary directory")
  args = parser.parse_args()
  sys.path.insert(0, str(ROOT))
  from unimo_jax.data.formats.tokenizers import SentencePieceTokenizer, load_tokenizer
  if args.compare:
    compare(args.compare)
  with tempfile.TemporaryDirectory() as tmp:
    work = pathlib.Path(args.workdir or tmp)
    pairs = work / f"pairs_{args.captions}"
    tokenizer = pairs / "tokenizer.model"  # byte-exact on these captions (a character per piece)
    start = time.perf_counter()
    if not (pairs / "metadata.json").exists():
      captions = coco_like_captions(args.captions)
      pairs.mkdir(parents=True, exist_ok=True)
      SentencePieceTokenizer.train(captions[:50_000], vocab_size=2000, out_path=tokenizer)
      write_pairs(pairs, captions, load_tokenizer(tokenizer))
    print(f"wrote {args.captions:,} pairs in {time.perf_counter() - start:.0f} s", flush=True)
    command = [sys.executable, "-m", "unimo_jax.data", "augment", "--pairs", str(pairs),
               "--out", str(work / "augmented"), "--tokenizer", str(tokenizer),
               "--tfidf-negatives", "2", "--rewrites", "2"]
    start = time.perf_counter()
    subprocess.run(command, check=True, cwd=ROOT)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2 ** 20  # KiB -> GiB
    print(f"augment of {args.captions:,} captions: {seconds:.0f} s wall, peak RSS {peak:.2f} GiB "
          f"(target: under 600 s and 4 GiB)", flush=True)
    if args.sample:
      share = exact_sample(pairs, args.sample)
      print(f"exact TF-IDF negatives in {share:.1%} of {args.sample:,} sampled pairs", flush=True)


if __name__ == "__main__":
  main()
