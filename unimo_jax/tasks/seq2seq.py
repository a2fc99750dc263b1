"""Text generation (summarisation, question generation, conversational QA, ...): source text ->
target text with UNIMO's seq2seq attention mask, label-smoothed cross-entropy, and beam search
with the GNMT length penalty and optional trigram blocking at evaluation.

Data: a TSV with columns src and tgt. Layout: [CLS] src [SEP] (positions from 2) then the target
[CLS] t1..tn (positions restart at 2) predicting t1..tn [SEP].
Metrics: ROUGE-1/2/L F1 (rouge-score, stemmed) and BLEU-4, both x100.
"""

import numpy as np

from unimo_jax.data import examples, placeholder_records
from unimo_jax.data.records import DataError
from unimo_jax.data.synthetic_task_data import text_task_paths
from unimo_jax.metrics.text import bleu4, rouge_scores
from unimo_jax.tasks.generation import GenerationTask
from unimo_jax.tasks.text_data import read_tsv
from unimo_jax.train.workdir import ConfigError


class Seq2seqTask(GenerationTask):
  name = "seq2seq"
  mask_kind = "seq2seq"

  def synthetic_paths(self, root):
    try:
      return text_task_paths(root, self.config.task.synthetic, **self.synthetic_sizes())
    except ValueError as e:
      raise ConfigError(str(e)) from None

  def read_split(self, path, split):
    """TSV rows (src, tgt) with their token ids."""
    rows = read_tsv(path, ("src",), ("tgt",))
    if split != "predict" and any("tgt" not in r for r in rows):
      raise DataError(f"{path}: expected a 'tgt' column for {split}")
    src = self.tokenizer.encode_batch([r["src"] for r in rows])
    tgt = self.tokenizer.encode_batch([r.get("tgt", "") for r in rows])
    return [dict(r, src_ids=a, tgt_ids=b) for r, a, b in zip(rows, src, tgt)]

  def _source_inputs(self, record):
    src, _ = examples.text_sequence(record["src_ids"], self.config.data.max_source_length,
                                    self.special)
    return {"input_ids": src, "position_ids": examples.block_positions(src, self.special["pad"])}

  def eval_row(self, record, where="record"):
    return self._source_inputs(record)

  def placeholder_record(self):
    d = self.config.data
    return {"src": "", "tgt": "", "src_ids": placeholder_records.text_ids(d.max_source_length),
            "tgt_ids": placeholder_records.text_ids(d.max_target_length)}

  def train_example(self, record, rng):
    source = self._source_inputs(record)
    target, labels, weights = examples.target_block(
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
