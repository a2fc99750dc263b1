"""Tokenizers behind one interface, with UNIMO's special-token layout.

  tok.encode(text) -> int32 ids (no special tokens); tok.decode(ids) -> str
  tok.vocab_size, tok.cls_id, tok.pad_id, tok.sep_id, tok.unk_id, tok.mask_id

Two families:
  * SentencePieceTokenizer: train on a corpus or load a .model file; ids 0..3 are
    [CLS] [PAD] [SEP] [UNK] (as UNIMO/RoBERTa) and [MASK] is 4.
  * BpeTokenizer: UNIMO/RoBERTa byte-level BPE through HF `tokenizers`, loaded either from UNIMO's
    dict files (encoder.json + vocab.bpe + vocab.txt, where vocab.txt line i holds the GPT-2 id or
    special token of model id i) or from RoBERTa's vocab.json + merges.txt.
"""

import hashlib
import json
import pathlib

import numpy as np

from unimo_jax.errors import DataError

UNIMO_SPECIALS = {"cls": "[CLS]", "pad": "[PAD]", "sep": "[SEP]", "unk": "[UNK]", "mask": "[MASK]"}
ROBERTA_SPECIALS = {"cls": "<s>", "pad": "<pad>", "sep": "</s>", "unk": "<unk>", "mask": "<mask>"}


class Tokenizer:
  """Shared interface; subclasses set vocab_size and the special ids and implement encode/decode."""
  vocab_size: int
  cls_id: int
  pad_id: int
  sep_id: int
  unk_id: int
  mask_id: int

  def encode(self, text: str) -> np.ndarray:
    raise NotImplementedError

  def decode(self, ids) -> str:
    raise NotImplementedError

  def encode_batch(self, texts) -> list:
    return [self.encode(t) for t in texts]

  @property
  def special_ids(self) -> dict:
    return {k: getattr(self, f"{k}_id") for k in UNIMO_SPECIALS}

  def word_starts(self) -> np.ndarray:
    """[vocab_size] bool: the pieces that begin a word (their text starts with a space), as
    UNIMO's trigram blocking reads them (src/finetune/trigram_blocking.py,
    _build_id2is_full_token); special tokens continue the word before them."""
    raise NotImplementedError

  def describe(self) -> dict:
    """What metadata.json records about the vocabulary."""
    return {"type": type(self).__name__, "size": self.vocab_size, **self.special_ids}

  def identity(self) -> dict:
    """describe() and a digest of the vocabulary's content: what a workdir records of the
    tokenizer its checkpoints were trained with (two vocabularies of one size differ here)."""
    return dict(self.describe(), sha256=self.content_digest())

  def content_digest(self) -> str:
    return ""


class SentencePieceTokenizer(Tokenizer):
  def __init__(self, model_proto: bytes):
    import sentencepiece as spm
    self.model_proto = model_proto
    self.sp = spm.SentencePieceProcessor(model_proto=model_proto)
    self.vocab_size = self.sp.get_piece_size()
    self.cls_id, self.pad_id, self.sep_id, self.unk_id = 0, 1, 2, 3
    self.mask_id = self.sp.piece_to_id(UNIMO_SPECIALS["mask"])

  def content_digest(self) -> str:
    return hashlib.sha256(self.model_proto).hexdigest()

  def word_starts(self):
    out = np.zeros(self.vocab_size, bool)
    for i in range(self.vocab_size):
      out[i] = (not self.sp.is_control(i) and not self.sp.is_unknown(i)
                and self.sp.id_to_piece(i).startswith("\u2581"))
    return out

  @classmethod
  def train(cls, lines, vocab_size: int = 8000, model_type: str = "unigram", out_path=None):
    """Trains on an iterable of text lines; writes the model to `out_path` if given."""
    import io
    import sentencepiece as spm
    lines = [line for line in lines if line.strip()]
    if not lines:
      raise ValueError("sentencepiece training corpus: expected text lines, found none")
    buffer = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_writer=buffer, vocab_size=vocab_size,
        model_type=model_type, character_coverage=1.0, num_threads=2, hard_vocab_limit=False,
        bos_id=0, pad_id=1, eos_id=2, unk_id=3, bos_piece="[CLS]", pad_piece="[PAD]",
        eos_piece="[SEP]", unk_piece="[UNK]", user_defined_symbols=["[MASK]", "[IMG]"],
        minloglevel=2)
    if out_path is not None:
      pathlib.Path(out_path).write_bytes(buffer.getvalue())
    return cls(buffer.getvalue())

  @classmethod
  def load(cls, path):
    return cls(pathlib.Path(path).read_bytes())

  def encode(self, text):
    return np.asarray(self.sp.encode(text), np.int32)

  def encode_batch(self, texts):
    return [np.asarray(ids, np.int32) for ids in self.sp.encode(list(texts))]

  def decode(self, ids):
    return self.sp.decode([int(i) for i in ids])


def _read_merges(path):
  lines = pathlib.Path(path).read_text(encoding="utf-8").splitlines()
  merges = []
  for number, line in enumerate(lines, 1):
    if not line.strip() or line.startswith("#version"):
      continue
    parts = line.split()
    if len(parts) != 2:
      raise ValueError(f"{path} line {number}: expected a merge 'a b', found {line!r}")
    merges.append((parts[0], parts[1]))
  return merges


class BpeTokenizer(Tokenizer):
  """Byte-level BPE (GPT-2 / RoBERTa / UNIMO) with a lookup from BPE ids to model ids."""

  def __init__(self, bpe_vocab: dict, merges: list, bpe_to_model: np.ndarray, specials: dict,
               vocab_size: int):
    from tokenizers import Tokenizer as HFTokenizer, decoders, models, pre_tokenizers
    self._hf = HFTokenizer(models.BPE(vocab=bpe_vocab, merges=merges))
    self._hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    self._hf.decoder = decoders.ByteLevel()
    self._bpe_to_model = bpe_to_model
    self._model_to_bpe = np.full(vocab_size, -1, np.int64)
    known = bpe_to_model >= 0
    self._model_to_bpe[bpe_to_model[known]] = np.flatnonzero(known)
    self.vocab_size = vocab_size
    self._bpe_tokens = {i: t for t, i in bpe_vocab.items()}
    for key, value in specials.items():
      setattr(self, f"{key}_id", int(value))

  def content_digest(self) -> str:
    pieces = json.dumps(sorted(self._bpe_tokens.items())) + json.dumps(self._bpe_to_model.tolist())
    return hashlib.sha256(pieces.encode()).hexdigest()

  @classmethod
  def from_unimo_dict(cls, encoder_json, vocab_bpe, vocab_txt):
    """UNIMO's model_files/dict: GPT-2 encoder + merges, and vocab.txt (line = model id)."""
    encoder = json.loads(pathlib.Path(encoder_json).read_text(encoding="utf-8"))
    lines = pathlib.Path(vocab_txt).read_text(encoding="utf-8").splitlines()
    bpe_to_model = np.full(max(encoder.values()) + 1, -1, np.int64)
    specials = {}
    for model_id, line in enumerate(lines):
      token = line.split("\t")[0].split(" ")[0]
      if token.isdigit():
        gpt2_id = int(token)
        if gpt2_id >= len(bpe_to_model):
          raise ValueError(f"{vocab_txt} line {model_id + 1}: GPT-2 id {gpt2_id} is not in "
                           f"{encoder_json} ({len(bpe_to_model)} ids)")
        bpe_to_model[gpt2_id] = model_id
      else:
        for key, name in UNIMO_SPECIALS.items():
          if token == name:
            specials[key] = model_id
    missing = sorted(set(UNIMO_SPECIALS) - set(specials))
    if missing:
      raise ValueError(f"{vocab_txt}: expected special tokens {sorted(UNIMO_SPECIALS.values())}, "
                       f"missing {[UNIMO_SPECIALS[k] for k in missing]}")
    bpe_to_model[bpe_to_model < 0] = specials["unk"]
    return cls(encoder, _read_merges(vocab_bpe), bpe_to_model, specials, len(lines))

  @classmethod
  def from_roberta(cls, vocab_json, merges_txt):
    """RoBERTa's vocab.json (token -> model id) + merges.txt."""
    vocab = json.loads(pathlib.Path(vocab_json).read_text(encoding="utf-8"))
    missing = [t for t in ROBERTA_SPECIALS.values() if t not in vocab]
    if missing:
      raise ValueError(f"{vocab_json}: expected special tokens {list(ROBERTA_SPECIALS.values())}, "
                       f"missing {missing}")
    specials = {k: vocab[t] for k, t in ROBERTA_SPECIALS.items()}
    size = max(vocab.values()) + 1
    return cls(vocab, _read_merges(merges_txt), np.arange(size, dtype=np.int64), specials, size)

  def encode(self, text):
    ids = np.asarray(self._hf.encode(text).ids, np.int64)
    return self._bpe_to_model[ids].astype(np.int32)

  def encode_batch(self, texts):
    return [self._bpe_to_model[np.asarray(e.ids, np.int64)].astype(np.int32)
            for e in self._hf.encode_batch(list(texts))]

  def word_starts(self):
    """Byte-level BPE writes a leading space as 'Ġ'."""
    out = np.zeros(self.vocab_size, bool)
    specials = set(self.special_ids.values())
    for model_id, bpe_id in enumerate(self._model_to_bpe):
      if bpe_id >= 0 and model_id not in specials:
        out[model_id] = self._bpe_tokens.get(int(bpe_id), "").startswith("\u0120")
    return out

  def decode(self, ids):
    ids = np.asarray(ids, np.int64)
    specials = set(self.special_ids.values())
    bpe = [int(self._model_to_bpe[i]) for i in ids if i not in specials and self._model_to_bpe[i] >= 0]
    return self._hf.decode(bpe)


def load_tokenizer(path) -> Tokenizer:
  """A tokenizer from a file or directory: *.model (sentencepiece); a directory holding
  UNIMO's dict files (*encoder.json, *vocab.bpe, *vocab.txt) or RoBERTa's vocab.json + merges.txt."""
  path = pathlib.Path(path)
  if not path.exists():
    raise DataError(f"{path}: expected a tokenizer (a sentencepiece .model file or a vocabulary "
                    "directory), found no such file or directory")
  try:
    return _load_tokenizer(path)
  except DataError:
    raise
  except Exception as e:  # sentencepiece, tokenizers and json each say it their own way
    raise DataError(f"{path}: expected a tokenizer (a sentencepiece .model file or a vocabulary "
                    f"directory), found content that cannot be read as one "
                    f"({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''})"
                    ) from None


def _load_tokenizer(path: pathlib.Path) -> Tokenizer:
  if path.is_file() and path.suffix == ".model":
    return SentencePieceTokenizer.load(path)
  if path.is_dir():
    found = {suffix: sorted(path.glob(f"*{suffix}")) for suffix in
             ("encoder.json", "vocab.bpe", "vocab.txt")}
    if all(found.values()):
      return BpeTokenizer.from_unimo_dict(*(found[s][0] for s in ("encoder.json", "vocab.bpe",
                                                                   "vocab.txt")))
    if (path / "vocab.json").exists() and (path / "merges.txt").exists():
      return BpeTokenizer.from_roberta(path / "vocab.json", path / "merges.txt")
    models = sorted(path.glob("*.model"))
    if models:
      return SentencePieceTokenizer.load(models[0])
  raise DataError(f"{path}: expected a sentencepiece .model, UNIMO dict files "
                  "(encoder.json, vocab.bpe, vocab.txt) or RoBERTa vocab.json + merges.txt")


class ShapeOnlyTokenizer(Tokenizer):
  """Special ids and a vocabulary size without a vocabulary: what compile-only runs (which read
  no data) hand to the transforms. The ids follow UNIMO's dictionary ([CLS] 0, [PAD] 1, [SEP] 2,
  [UNK] 3, [MASK] last); only shapes matter."""

  def __init__(self, vocab_size: int):
    self.vocab_size = int(vocab_size)
    self.cls_id, self.pad_id, self.sep_id, self.unk_id = 0, 1, 2, 3
    self.mask_id = self.vocab_size - 1

  def word_starts(self):
    return np.ones(self.vocab_size, bool)  # shapes only

  def encode(self, text: str) -> np.ndarray:
    raise ValueError("a shape-only tokenizer (compile mode) has no vocabulary to encode text")

  def decode(self, ids) -> str:
    raise ValueError("a shape-only tokenizer (compile mode) has no vocabulary to decode ids")
