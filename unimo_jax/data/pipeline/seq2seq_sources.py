"""Text seq2seq sources laid out as UNIMO's seq2seq reader does (src/reader/seq2seq_reader.py).

Columns (CNN/DM, Gigaword, SQuAD question generation): every source column of the TSV, in header
order, becomes `text [SEP]` (cut to `length` - 1 tokens with the [SEP] kept), behind one
leading [CLS]; positions are 2 for the [CLS] and restart at 3 in every column.

Dialog (CoQA, task_type 'dialog'): the source is the conversation so far, turns joined by
" [SEP] " in the text; only the last `turn_type_size` - 1 turns are kept. With n kept turns,
the [CLS] has role n % 2 and turn n; an optional knowledge text (the story) follows with role 2
and turn 0; then the turns, oldest first, each with the current role and turn (the turn counts
down by one and the role alternates after each). Positions restart at 3 in every block.

The original builds variable-length rows; ours are `length` slots. A row longer than that is cut
by the original's own rule for the continuous-position layout: a column source on the right
keeping a final [SEP], a dialog on the left (the newest turns stay).
"""

import numpy as np

TURN_SEPARATOR = " [SEP] "
KNOWLEDGE_ROLE = 2


def _segment(ids, length, special) -> list:
  """text [SEP], at most length - 1 tokens with the [SEP] kept (the reader's _text_to_ids)."""
  ids = [*map(int, ids), special["sep"]]
  if len(ids) > length - 1:
    ids = ids[:length - 2] + [special["sep"]]
  return ids


def _padded(values, length, fill) -> np.ndarray:
  out = np.full(length, fill, np.int32)
  out[:len(values)] = values
  return out


def column_source(columns, length: int, special) -> dict:
  """input_ids / position_ids [length] of [CLS] col1 [SEP] col2 [SEP] ... (columns: id lists)."""
  ids, positions = [special["cls"]], [2]
  for column in columns:
    segment = _segment(column, length, special)
    ids += segment
    positions += range(3, 3 + len(segment))
  if len(ids) > length:
    ids, positions = ids[:length - 1] + [special["sep"]], positions[:length]
  pad = special["pad"]
  return {"input_ids": _padded(ids, length, pad), "position_ids": _padded(positions, length, pad)}


def split_turns(text: str, turn_type_size: int) -> list:
  """The conversation's turns (texts), the last turn_type_size - 1 of them."""
  turns = text.split(TURN_SEPARATOR)
  return turns[max(0, len(turns) - (turn_type_size - 1)):]


def dialog_source(turns, knowledge, length: int, special) -> dict:
  """input_ids / position_ids / role_ids / turn_ids [length] of a dialog source.

  turns: id lists of the kept turns, oldest first (see split_turns); knowledge: an id list or
  None."""
  role, turn = len(turns) % 2, len(turns)
  ids, positions, roles, turn_ids = [special["cls"]], [2], [role], [turn]
  blocks = [] if knowledge is None else [(knowledge, KNOWLEDGE_ROLE, 0)]
  for text in turns:
    blocks.append((text, role, turn))
    turn, role = turn - 1, (role + 1) % 2
  for text, block_role, block_turn in blocks:
    segment = _segment(text, length, special)
    ids += segment
    positions += range(3, 3 + len(segment))
    roles += [block_role] * len(segment)
    turn_ids += [block_turn] * len(segment)
  keep = slice(max(0, len(ids) - length), None)
  pad = special["pad"]
  return {"input_ids": _padded(ids[keep], length, pad),
          "position_ids": _padded(positions[keep], length, pad),
          "role_ids": _padded(roles[keep], length, 0),
          "turn_ids": _padded(turn_ids[keep], length, 0)}
