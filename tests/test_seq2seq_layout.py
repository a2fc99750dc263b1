"""Text seq2seq layouts against UNIMO's seq2seq reader (src/reader/seq2seq_reader.py) written out
independently: column sources, dialog sources (role / turn ids), and the [MASK]-terminated
target; and a tiny seq2seq fine-tune whose decoding stops on [MASK]."""

import numpy as np

from unimo_jax.data.pipeline import examples
from unimo_jax.data.pipeline.seq2seq_sources import column_source, dialog_source, split_turns

SPECIAL = {"cls": 0, "pad": 1, "sep": 2, "unk": 3, "mask": 4}
CLS, PAD, SEP, MASK = 0, 1, 2, 4


def reader_text_to_ids(ids, max_len, keep_sep=True):
  """_text_to_ids: ids + [SEP]; longer than max_len -> cut (keeping a final [SEP] or not);
  positions 3.. ."""
  ids = list(ids) + [SEP]
  if len(ids) > max_len:
    ids = ids[:max_len - 1] + [SEP] if keep_sep else ids[:max_len]
  return ids, list(range(3, len(ids) + 3))


def reader_record(src, tgt, max_src_len, max_tgt_len):
  """_convert_example_to_record (task_type 'normal', continuous_position False)."""
  token_ids, pos = [CLS], [2]
  for text in src:
    t, p = reader_text_to_ids(text, max_src_len - 1)
    token_ids += t
    pos += p
  start = len(token_ids)
  token_ids.append(CLS)
  pos.append(2)
  t, p = reader_text_to_ids(tgt, max_tgt_len - 1, keep_sep=False)
  if t[-1] == SEP:
    t[-1] = MASK
  return token_ids + t, pos + p, start


def reader_dialog_record(turns, knowledge, turn_type_size, max_src_len):
  """_convert_dialogue_example_to_record's source part (do_decode)."""
  turns = turns[len(turns) - (turn_type_size - 1):] if len(turns) > turn_type_size - 1 else turns
  role, turn = len(turns) % 2, len(turns)
  ids, pos, roles, turn_ids = [CLS], [2], [role], [turn]
  if knowledge:
    t, p = reader_text_to_ids(knowledge, max_src_len - 1)
    ids, pos, roles, turn_ids = ids + t, pos + p, roles + [2] * len(t), turn_ids + [0] * len(t)
  for text in turns:
    t, p = reader_text_to_ids(text, max_src_len - 1)
    ids, pos = ids + t, pos + p
    roles += [role] * len(t)
    turn_ids += [turn] * len(t)
    turn -= 1
    role = (role + 1) % 2
  return ids, pos, roles, turn_ids


def unpad(a, n):
  return [int(x) for x in np.asarray(a)[:n]]


def test_column_sources_and_mask_target_equal_the_reader():
  rng = np.random.default_rng(0)
  max_src, max_tgt = 40, 9
  for _ in range(200):
    columns = [list(rng.integers(5, 50, size=rng.integers(0, 14))) for _ in
               range(rng.integers(1, 4))]
    tgt = list(rng.integers(5, 50, size=rng.integers(1, 12)))
    ids, pos, start = reader_record(columns, tgt, max_src, max_tgt)
    source = column_source(columns, max_src, SPECIAL)
    assert unpad(source["input_ids"], start) == ids[:start]
    assert unpad(source["position_ids"], start) == pos[:start]
    assert np.all(source["input_ids"][start:] == PAD)
    target, labels, weights = examples.seq2seq_target_block(tgt, max_tgt, SPECIAL)
    n = len(ids) - start
    assert unpad(target, n) == ids[start:]
    assert unpad(examples.block_positions(target, PAD), n) == pos[start:]
    # labels: the next token of every target input but the last (the reader's tgt_label)
    assert unpad(labels, n - 1) == ids[start + 1:] and weights.sum() == n - 1
    ends = ids[-1] == MASK
    assert ends == (len(tgt) + 1 <= max_tgt - 1)  # a target cut short has no end token


def test_a_column_longer_than_the_source_keeps_its_sep():
  source = column_source([list(range(10, 30))], 8, SPECIAL)
  assert source["input_ids"].tolist() == [CLS, 10, 11, 12, 13, 14, 15, SEP]
  assert source["position_ids"].tolist() == [2, 3, 4, 5, 6, 7, 8, 9]
  # two columns overflowing the fixed shape: cut on the right, a final [SEP] kept
  source = column_source([[10, 11, 12], [20, 21, 22, 23]], 8, SPECIAL)
  assert source["input_ids"].tolist() == [CLS, 10, 11, 12, SEP, 20, 21, SEP]
  assert source["position_ids"].tolist() == [2, 3, 4, 5, 6, 3, 4, 5]


def test_dialog_sources_equal_the_reader():
  rng = np.random.default_rng(1)
  turn_types, max_src = 5, 120
  for trial in range(100):
    count = int(rng.integers(1, 9))
    turns = [list(rng.integers(5, 50, size=rng.integers(1, 6))) for _ in range(count)]
    knowledge = list(rng.integers(5, 50, size=rng.integers(1, 8))) if trial % 2 else None
    text = " [SEP] ".join(" ".join(map(str, t)) for t in turns)
    kept = [[int(x) for x in t.split()] for t in split_turns(text, turn_types)]
    assert kept == turns[-(turn_types - 1):]
    ids, pos, roles, turn_ids = reader_dialog_record(turns, knowledge, turn_types, max_src)
    got = dialog_source(kept, knowledge, max_src, SPECIAL)
    n = len(ids)
    assert unpad(got["input_ids"], n) == ids and np.all(got["input_ids"][n:] == PAD)
    assert unpad(got["position_ids"], n) == pos
    assert unpad(got["role_ids"], n) == roles
    assert unpad(got["turn_ids"], n) == turn_ids


def test_dialog_ids_by_hand():
  # three turns Q1 A1 Q2, story K: [CLS] role 1 turn 3; K role 2 turn 0; Q1 (1, 3), A1 (0, 2),
  # Q2 (1, 1); positions restart at 3 in every block
  got = dialog_source([[10], [11, 12], [13]], [20, 21], 14, SPECIAL)
  n = 11
  assert got["input_ids"][:n].tolist() == [CLS, 20, 21, SEP, 10, SEP, 11, 12, SEP, 13, SEP]
  assert got["role_ids"][:n].tolist() == [1, 2, 2, 2, 1, 1, 0, 0, 0, 1, 1]
  assert got["turn_ids"][:n].tolist() == [3, 0, 0, 0, 3, 3, 2, 2, 2, 1, 1]
  assert got["position_ids"][:n].tolist() == [2, 3, 4, 5, 3, 4, 3, 4, 5, 3, 4]
  # longer than the fixed shape: the newest tokens stay
  short = dialog_source([[10], [11, 12], [13]], [20, 21], 6, SPECIAL)
  assert short["input_ids"].tolist() == [SEP, 11, 12, SEP, 13, SEP]
  assert short["role_ids"].tolist() == [1, 0, 0, 0, 1, 1]


def test_pretraining_seq2seq_target_ends_with_mask():
  cfg = examples.data_config()
  cfg.max_text_length = 30
  rng = np.random.default_rng(3)
  for _ in range(20):
    ids = rng.integers(10, 100, size=rng.integers(2, 40))
    fields = examples.seq2seq_fields(ids, cfg, SPECIAL, rng)
    labels, weights = fields["lm_labels"], fields["lm_weights"]
    n = int(weights.sum())
    assert labels[n - 1] == MASK and SEP not in labels[:n].tolist()
    target = fields["input_ids"][fields["target_mask"]]
    assert target[0] == CLS and target[n] == MASK  # the end token is the last target input
