"""Tokenizers: round trips, UNIMO special ids, UNIMO dict files == RoBERTa files == transformers."""

import json

import numpy as np
import pytest

from unimo_jax.data.formats.tokenizers import (BpeTokenizer, SentencePieceTokenizer, load_tokenizer)

CORPUS = [
    "a small red cube is left of a large blue sphere.",
    "the green cone sits above the yellow cylinder!",
    "Two purple stars and one orange ring, below a white torus.",
    "unimo reads text, images and pairs in one transformer.",
] * 20
SENTENCES = ["a red cube left of a blue sphere", "The ORANGE ring, below 3 stars!", "naïve café ✓"]


@pytest.fixture(scope="module")
def bpe_files(tmp_path_factory):
  """Tiny GPT-2-style files in UNIMO's layout and in RoBERTa's, describing the same vocabulary."""
  from tokenizers import ByteLevelBPETokenizer
  d = tmp_path_factory.mktemp("bpe")
  trainer = ByteLevelBPETokenizer(add_prefix_space=False)
  trainer.train_from_iterator(CORPUS, vocab_size=400, min_frequency=1, show_progress=False)
  trainer.save_model(str(d))  # vocab.json (GPT-2 encoder layout) + merges.txt
  encoder = json.loads((d / "vocab.json").read_text())
  merges = (d / "merges.txt").read_text()
  unimo = d / "unimo"
  unimo.mkdir()
  (unimo / "unimo_en.encoder.json").write_text(json.dumps(encoder))
  (unimo / "unimo_en.vocab.bpe").write_text(merges)
  gpt2_ids = sorted(encoder.values())
  np.random.default_rng(0).shuffle(gpt2_ids)  # fairseq orders by frequency, not by GPT-2 id
  lines = ["[CLS]", "[PAD]", "[SEP]", "[UNK]"] + [str(i) for i in gpt2_ids] + [
      "madeupword0000", "madeupword0001", "madeupword0002", "[MASK]"]
  (unimo / "unimo_en.vocab.txt").write_text("\n".join(lines) + "\n")
  # RoBERTa layout of the same model ids.
  id_of = {str(g): i for i, g in enumerate(lines)}
  inverse = {v: k for k, v in encoder.items()}
  vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "<mask>": len(lines) - 1}
  for gpt2_id in gpt2_ids:
    vocab[inverse[gpt2_id]] = id_of[str(gpt2_id)]
  for k, name in enumerate(["madeupword0000", "madeupword0001", "madeupword0002"]):
    vocab[name] = len(lines) - 4 + k
  roberta = d / "roberta"
  roberta.mkdir()
  (roberta / "vocab.json").write_text(json.dumps(vocab))
  (roberta / "merges.txt").write_text(merges)
  return unimo, roberta, len(lines)


def test_unimo_dict_and_roberta_files_agree_with_transformers(bpe_files):
  transformers = pytest.importorskip("transformers")
  unimo_dir, roberta_dir, size = bpe_files
  unimo = load_tokenizer(unimo_dir)
  roberta = load_tokenizer(roberta_dir)
  reference = transformers.RobertaTokenizer.from_pretrained(str(roberta_dir))
  assert unimo.special_ids == {"cls": 0, "pad": 1, "sep": 2, "unk": 3, "mask": size - 1}
  assert roberta.special_ids == unimo.special_ids and unimo.vocab_size == size
  for text in SENTENCES + CORPUS[:4]:
    ids = unimo.encode(text)
    np.testing.assert_array_equal(ids, roberta.encode(text))
    np.testing.assert_array_equal(ids, reference(text, add_special_tokens=False)["input_ids"])
    assert unimo.decode(ids) == text  # byte-level BPE is lossless
  batch = unimo.encode_batch(SENTENCES)
  for text, ids in zip(SENTENCES, batch):
    np.testing.assert_array_equal(ids, unimo.encode(text))


def test_unimo_dict_without_mask_is_rejected(bpe_files, tmp_path):
  unimo_dir, _, _ = bpe_files
  lines = (unimo_dir / "unimo_en.vocab.txt").read_text().splitlines()[:-1]
  (tmp_path / "vocab.txt").write_text("\n".join(lines))
  with pytest.raises(ValueError, match=r"missing \['\[MASK\]'\]"):
    BpeTokenizer.from_unimo_dict(unimo_dir / "unimo_en.encoder.json",
                                 unimo_dir / "unimo_en.vocab.bpe", tmp_path / "vocab.txt")


def test_sentencepiece_train_load_round_trip(tmp_path):
  tok = SentencePieceTokenizer.train(CORPUS, vocab_size=120, out_path=tmp_path / "sp.model")
  again = load_tokenizer(tmp_path / "sp.model")
  assert tok.special_ids == {"cls": 0, "pad": 1, "sep": 2, "unk": 3, "mask": 4}
  for text in CORPUS[:4]:
    ids = tok.encode(text)
    assert ids.dtype == np.int32 and len(ids) > 0
    np.testing.assert_array_equal(ids, again.encode(text))
    assert tok.decode(ids) == text
  assert not set(tok.encode(CORPUS[0])) & {0, 1, 2, 4}  # specials never come from plain text
  with pytest.raises(ValueError, match="found none"):
    SentencePieceTokenizer.train(["", "  "])


def test_word_starts_mark_the_pieces_that_decode_with_a_leading_space(bpe_files, tmp_path):
  """UNIMO's id2is_full_token: a piece starts a word when its text starts with a space (the
  rule written out on decoded text); special tokens never do."""
  unimo_dir, roberta_dir, size = bpe_files
  for tok in (load_tokenizer(unimo_dir), load_tokenizer(roberta_dir)):
    starts = tok.word_starts()
    assert starts.shape == (size,) and 0 < starts.sum() < size
    specials = set(tok.special_ids.values())
    for i in range(size):
      expected = i not in specials and tok.decode([i]).startswith(" ")
      assert starts[i] == expected, (i, tok.decode([i]))
  sp = SentencePieceTokenizer.train(CORPUS, vocab_size=120, out_path=tmp_path / "sp.model")
  starts = sp.word_starts()
  assert not starts[list(sp.special_ids.values())].any()
  words = CORPUS[0].split()
  ids = sp.encode(CORPUS[0])
  assert starts[ids].sum() == len(words)  # one word-starting piece per word
