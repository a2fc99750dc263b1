"""Text generation (summarisation, question generation, conversational QA, ...): source text ->
target text with UNIMO's seq2seq attention mask, label-smoothed cross-entropy, and beam search
with the GNMT length penalty and optional trigram blocking at evaluation.

Data: a TSV with a header. As UNIMO's seq2seq reader: every column but `tgt` and `knowledge` is a
source column, in header order. Layouts (data/pipeline/seq2seq_sources.py):
  columns  [CLS] col1 [SEP] col2 [SEP] ...  (positions 2, then from 3 in every column)
  dialog   task.dialog (CoQA): the first source column holds the conversation, turns joined by
           " [SEP] "; role and turn ids per block (model.role_type_size / turn_type_size), the
           `knowledge` column (the story) after the [CLS]
then the target [CLS] t1..tn [MASK] (positions restart at 2), predicting t1..tn [MASK]: [MASK] is
the end token of text seq2seq (src/finetune/seq2seq.py: eos_id = mask_token_id), so decoding
stops on [MASK].
Metrics: ROUGE-1/2/L F1 (rouge-score, stemmed) and BLEU-4, both x100.
"""

import numpy as np

from unimo_jax.data.pipeline import examples
from unimo_jax.data.synthetic import placeholder_records
from unimo_jax.errors import DataError
from unimo_jax.data.pipeline.seq2seq_sources import (KNOWLEDGE_ROLE, column_source, dialog_source,
                                            split_turns)
from unimo_jax.data.synthetic.task_data import text_task_paths
from unimo_jax.metrics.text import bleu4, rouge_scores
from unimo_jax.tasks.generation import GenerationTask
from unimo_jax.tasks.text_data import read_tsv
from unimo_jax.errors import ConfigError


class Seq2seqTask(GenerationTask):
  name = "seq2seq"
  mask_kind = "seq2seq"

  def synthetic_paths(self, root):
    try:
      return text_task_paths(root, self.config.task.synthetic, **self.synthetic_sizes())
    except ValueError as e:
      raise ConfigError(str(e)) from None

  @property
  def end_id(self) -> int:
    return self.special["mask"]

  @property
  def dialog(self) -> bool:
    dialog = bool(self.config.task.get("dialog", False))
    m = self.config.model
    if dialog and not (m.role_type_size > KNOWLEDGE_ROLE and m.turn_type_size > 1):
      raise ConfigError(f"task.dialog needs role and turn tables: expected model.role_type_size "
                        f">= 3 and model.turn_type_size >= 2 (UNIMO's CoQA: 3 and 16), found "
                        f"{m.role_type_size} and {m.turn_type_size}")
    return dialog

  def read_split(self, path, split):
    """TSV rows with their token ids: src_ids (one id list per source column, or per kept turn
    in dialog mode), knowledge_ids (dialog mode, when the column exists) and tgt_ids."""
    rows = read_tsv(path, (), all_columns=True)
    columns = [c for c in rows[0] if c not in ("tgt", "knowledge")]
    if not columns:
      raise DataError(f"{path}: expected at least one source column besides 'tgt' and "
                      f"'knowledge', found header {list(rows[0])}")
    if split != "predict" and "tgt" not in rows[0]:
      raise DataError(f"{path}: expected a 'tgt' column for {split}")
    encode = self.tokenizer.encode_batch
    dialog = self.dialog
    if dialog:
      turn_types = int(self.config.model.turn_type_size)
      sources = [split_turns(r[columns[0]], turn_types) for r in rows]
    else:
      sources = [[r[c] for c in columns] for r in rows]
    flat = encode([text for source in sources for text in source])
    src_ids, start = [], 0
    for source in sources:
      src_ids.append(flat[start:start + len(source)])
      start += len(source)
    tgt = encode([r.get("tgt", "") for r in rows])
    with_knowledge = [i for i, r in enumerate(rows) if dialog and r.get("knowledge")]
    knowledge = dict(zip(with_knowledge, encode([rows[i]["knowledge"] for i in with_knowledge])))
    out = []
    for i, (r, ids, t) in enumerate(zip(rows, src_ids, tgt)):
      record = dict(r, src=" | ".join(r[c] for c in columns), src_ids=ids, tgt_ids=t)
      if i in knowledge:
        record["knowledge_ids"] = knowledge[i]
      out.append(record)
    return out

  def _source_inputs(self, record):
    length = int(self.config.data.max_source_length)
    if self.dialog:
      return dialog_source(record["src_ids"], record.get("knowledge_ids"), length, self.special)
    return column_source(record["src_ids"], length, self.special)

  def eval_row(self, record, where="record"):
    return self._source_inputs(record)

  def placeholder_record(self):
    d = self.config.data
    return {"src": "", "tgt": "", "src_ids": [placeholder_records.text_ids(d.max_source_length)],
            "tgt_ids": placeholder_records.text_ids(d.max_target_length)}

  def train_example(self, record, rng):
    source = self._source_inputs(record)
    target, labels, weights = examples.seq2seq_target_block(
        record["tgt_ids"], self.config.data.max_target_length, self.special)
    n = len(source["input_ids"])
    inputs = {
        "input_ids": np.concatenate([source["input_ids"], target]),
        "position_ids": np.concatenate([source["position_ids"],
                                        examples.block_positions(target, self.special["pad"])]),
        "target_mask": np.arange(n + len(target)) >= n,
        "lm_positions": np.arange(n, n + len(target), dtype=np.int32),
        "lm_labels": labels,
        "lm_weights": weights,
    }
    for name in ("role_ids", "turn_ids"):  # the target's role and turn are 0
      if name in source:
        inputs[name] = np.concatenate([source[name], np.zeros(len(target), np.int32)])
    return {"inputs": inputs}

  def _generate(self, params, split):
    records = self.source(split)
    records = records[:int(self.config.data.eval_limit) or len(records)]
    texts = self.generate_texts(params, [self.eval_row(r) for r in records])
    return records, texts

  def evaluate(self, params):
    records, texts = self._generate(params, "eval")
    references = [r["tgt"] for r in records]
    metrics = rouge_scores(texts, references)
    metrics["BLEU-4"] = bleu4(texts, references)
    metrics["exact_match"] = float(np.mean([t.strip() == r.strip()
                                            for t, r in zip(texts, references)]))
    metrics["examples"] = float(len(records))
    return metrics, [{"index": i, "src": r["src"], "prediction": t, "reference": r["tgt"]}
                     for i, (r, t) in enumerate(zip(records, texts))]

  def predict(self, params):
    records, texts = self._generate(params, "predict")
    return [{"index": i, "src": r["src"], "prediction": t} for i, (r, t) in enumerate(
        zip(records, texts))]


TASK = Seq2seqTask
