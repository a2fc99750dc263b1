"""CMCL augmentation: TF-IDF neighbours, lexicon rewriting, paraphrase files, object retrieval."""

import numpy as np
import pytest

from unimo_jax.data.formats import augment
from unimo_jax.data.formats.records import ShardSource
from unimo_jax.errors import DataError


def test_tfidf_neighbours_rank_by_shared_rare_words():
  docs = ["a red cube", "a blue sphere", "a red sphere near a cube", "the cat"]
  near = augment.tfidf_neighbours(["red cube"], docs, 2)
  assert list(near[0]) == [0, 2]
  # Excluded: the documents whose key equals the query's (here document 0 only).
  near = augment.tfidf_neighbours(["red cube"], docs, 2, exclude=[([7], [7, 1, 2, 3])])
  assert list(near[0]) == [2, -1]  # no other document shares a word


def test_lexicon_rewrites_one_word_of_the_same_kind():
  corpus = ["a small red cube is left of a large blue sphere",
            "two green cones above a small white cube", "a large red sphere below two blue cones"]
  lex = augment.Lexicon.from_corpus(corpus * 2)
  assert {"red", "blue", "green", "white"} <= set(lex.words["colour"])
  assert {"cube", "sphere", "cones"} <= set(lex.words["object"])
  assert {"left", "above", "below"} <= set(lex.words["relation"])
  rng = np.random.default_rng(0)
  kinds = set()
  for _ in range(200):
    text = corpus[0]
    twin = lex.rewrite(text, rng)
    diff = [(a, b) for a, b in zip(text.split(), twin.split()) if a != b]
    assert len(diff) == 1
    old, new = diff[0]
    assert lex.kind_of[old] == lex.kind_of[new]
    kinds.add(lex.kind_of[old])
  assert kinds == {"colour", "size", "object", "relation"}
  assert lex.rewrite("nothing to swap here", rng) is None


def test_paraphrase_file(tmp_path):
  (tmp_path / "p.tsv").write_text("7\ta cube that is red\n7\tred cube\n9\tblue ball\n")
  assert augment.read_paraphrases(tmp_path / "p.tsv") == {"7": ["a cube that is red", "red cube"],
                                                          "9": ["blue ball"]}
  (tmp_path / "bad.tsv").write_text("7\tok\nno tab here\n")
  with pytest.raises(DataError, match=r"bad.tsv line 2: expected '<pair id>\\t<paraphrase>'"):
    augment.read_paraphrases(tmp_path / "bad.tsv")


def test_retrieve_by_object_overlap():
  query = [frozenset({1, 2}), frozenset({5})]
  images = [frozenset({1}), frozenset({1, 2, 3}), frozenset({1, 2}), frozenset({7})]
  near = augment.retrieve_by_objects(query, images, 2)
  assert list(near[0]) == [2, 1]  # Jaccard 1, then 2/3
  assert augment.detected_objects(np.array([[0.1, 0.9], [0.85, 0.15], [0.5, 0.5]]),
                                  threshold=0.6) == frozenset({0, 1})


def test_augment_pairs_on_synthetic_scenes(tmp_path):
  from unimo_jax.data.synthetic.scene_dataset import write_synthetic
  from unimo_jax.data.formats.tokenizers import load_tokenizer
  write_synthetic(tmp_path / "s", pairs=200, eval_pairs=20, images=50, texts=100, feature_dim=8,
                  log=lambda *_: None)
  tok = load_tokenizer(tmp_path / "s" / "tokenizer.model")
  (tmp_path / "para.tsv").write_text("3\tthere is a large blue ring\n")
  meta = augment.augment_pairs(tmp_path / "s" / "train" / "pair", tmp_path / "out", tok,
                               image_dir=tmp_path / "s" / "train" / "image",
                               text_dir=tmp_path / "s" / "train" / "text",
                               paraphrase_file=tmp_path / "para.tsv", log=lambda *_: None)
  assert meta["num_records"] == 200
  before = ShardSource(tmp_path / "s" / "train" / "pair")
  after = ShardSource(tmp_path / "out")
  for i in range(200):
    old, new = before[i], after[i]
    negatives = [tok.decode(ids) for ids in new["hard_negative_ids"]]
    assert len(negatives) >= len(old["hard_negative_ids"]) + 2
    assert new["caption"] not in negatives  # never the caption itself
    # twin_pairs: the pairs whose captions are the TF-IDF negatives (NegCLIP's image negatives)
    twins = [before[int(j)]["caption"] for j in new["twin_pairs"]]
    added = negatives[len(old["hard_negative_ids"]):]
    assert len(twins) == 2 and twins == added[:2]
    assert all(before[int(j)]["image_id"] != old["image_id"] for j in new["twin_pairs"])
  third = after[3]
  assert "there is a large blue ring" in [tok.decode(ids) for ids in third["paraphrase_ids"]]


def _exact_neighbours(queries, docs, k, banned):
  """Brute force, written out: cosine of L2-normalised TF-IDF over every document, best first,
  ties to the lower index, banned documents and zero similarity left out. The vocabulary and
  document frequencies are those of the texts (each once when the queries are the documents)."""
  from sklearn.feature_extraction.text import TfidfVectorizer
  corpus = list(docs) if queries is docs else list(docs) + list(queries)
  vectorizer = TfidfVectorizer(token_pattern=r"(?u)\b\w+\b").fit(corpus)
  q, d = vectorizer.transform(queries).toarray(), vectorizer.transform(docs).toarray()
  out = []
  for i, row in enumerate(q @ d.T):
    order = [j for j in sorted(range(len(docs)), key=lambda j: (-round(row[j], 5), j))
             if row[j] > 1e-9 and j not in banned(i)]
    out.append((order + [-1] * k)[:k])
  return np.array(out)


def test_sparse_tfidf_neighbours_equal_brute_force():
  rng = np.random.default_rng(0)
  words = [f"w{i}" for i in range(60)]
  docs = [" ".join(rng.choice(words, size=rng.integers(3, 8), p=np.r_[[0.2], [0.8 / 59] * 59]))
          for _ in range(300)]
  # Excluded: the same block of three (like an image's captions) or the same residue mod 7
  # (like an equal caption text): two key pairs, either one bans.
  banned = lambda i: {j for j in range(300) if j // 3 == i // 3 or j % 7 == i % 7}  # noqa: E731
  blocks, residues = np.arange(300) // 3, np.arange(300) % 7
  exclude = [(blocks, blocks), (residues, residues)]
  # Fewer documents than candidate_df: every term generates candidates, the result is exact.
  near = augment.tfidf_neighbours(docs, docs, 3, exclude=exclude, candidates=300)
  np.testing.assert_array_equal(near, _exact_neighbours(docs, docs, 3, banned))
  # Pruned: 'w0' (in ~2/3 of the documents) generates no candidates, yet candidates are
  # re-scored by the exact cosine, so wherever the true neighbours share a rare word they are
  # found; most rows agree with brute force, and every pick is valid.
  pruned = augment.tfidf_neighbours(docs, docs, 3, exclude=exclude, candidate_df=60,
                                    candidates=40)
  exact = _exact_neighbours(docs, docs, 3, banned)
  assert np.mean([set(a) == set(b) for a, b in zip(pruned, exact)]) > 0.9
  for i, row in enumerate(pruned):
    assert not set(row.tolist()) & banned(i)


def test_tfidf_neighbours_of_a_query_made_only_of_frequent_words():
  docs = ["a dog"] * 5 + ["a cat", "a"] + [f"a w{i}" for i in range(20)]
  # 'a' is in every document: with candidate_df=3 it generates no candidates, so the query 'a'
  # takes its candidates from all terms; 'a' (exact match, index 6) ranks first.
  near = augment.tfidf_neighbours(["a"], docs, 2, candidate_df=3)
  assert near[0][0] == 6 and near[0][1] >= 0
