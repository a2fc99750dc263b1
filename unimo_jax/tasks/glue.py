"""GLUE-style text classification and regression (SST-2, MNLI, CoLA, STS-B, ...).

Input [CLS] A [SEP] B [SEP] with positions counting from 2 (UNIMO's classification reader); head
pooled_fc_text -> dropout -> Dense(labels) with softmax cross-entropy, or Dense(1) with MSE when
task.labels is empty (regression). Data: a TSV with columns text_a, [text_b], label.
Metrics: accuracy, Matthews correlation and F1 (binary); Pearson, Spearman and MSE (regression).
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from unimo_jax.data.synthetic import placeholder_records
from unimo_jax.errors import DataError
from unimo_jax.data.synthetic.task_data import text_task_paths
from unimo_jax.metrics.classification import classification_metrics, regression_metrics
from unimo_jax.tasks.base import Task
from unimo_jax.tasks.heads import TextClassifierHead
from unimo_jax.tasks.text_data import read_tsv
from unimo_jax.errors import ConfigError


class GlueTask(Task):
  name = "glue"

  def __init__(self, *args, **kwargs):
    super().__init__(*args, **kwargs)
    self.labels = [str(x) for x in self.config.task.labels]
    self.regression = not self.labels

  def synthetic_paths(self, root):
    try:
      return text_task_paths(root, self.config.task.synthetic, **self.synthetic_sizes())
    except ValueError as e:
      raise ConfigError(str(e)) from None

  def head(self):
    return TextClassifierHead(self.config.model, 1 if self.regression else len(self.labels),
                              self.config.task.head_dropout)

  def read_split(self, path, split):
    """TSV rows (text_a, [text_b], label) with their token ids; bad labels are errors or
    counted skips."""
    rows = read_tsv(path, ("text_a",), ("text_b", "label"))
    need_label = split != "predict"
    out = []
    for line, row in enumerate(rows, start=2):
      label = row.get("label")
      if need_label:
        try:
          label = self._label(label, f"{path} line {line}")
        except DataError as e:
          if not self.config.data.skip_bad_records:
            raise
          self.skipped[f"{split}_bad_label"] = self.skipped.get(f"{split}_bad_label", 0) + 1
          print(f"skipped: {e}", flush=True)
          continue
      out.append({"a": row["text_a"], "b": row.get("text_b"), "label": label})
    ids_a = self.tokenizer.encode_batch([r["a"] for r in out])
    ids_b = self.tokenizer.encode_batch([r["b"] or "" for r in out])
    for r, a, b in zip(out, ids_a, ids_b):
      r["ids_a"], r["ids_b"] = a, (b if r["b"] else None)
    return out

  def _label(self, value, where):
    if value is None:
      raise DataError(f"{where}: expected a 'label' column")
    if self.regression:
      try:
        return float(value)
      except ValueError:
        raise DataError(f"{where}: expected a number for the regression label, found "
                        f"{value!r}") from None
    if value not in self.labels:
      raise DataError(f"{where}: label {value!r} is not one of task.labels {self.labels}")
    return self.labels.index(value)

  def _inputs(self, record):
    length = self.config.data.max_text_length
    s = self.special
    a = list(record["ids_a"])
    b = list(record["ids_b"]) if record["ids_b"] is not None else None
    budget = length - (3 if b is not None else 2)
    while len(a) + len(b or []) > budget:  # trim the longer text first
      if b and len(b) >= len(a):
        b.pop()
      else:
        a.pop()
    seq = [s["cls"], *a, s["sep"]] + ([*b, s["sep"]] if b is not None else [])
    ids = np.full(length, s["pad"], np.int32)
    ids[:len(seq)] = seq
    return {"input_ids": ids}

  def train_example(self, record, rng):
    label = np.float32(record["label"]) if self.regression else np.int32(record["label"])
    return {"inputs": self._inputs(record), "label": label}

  def loss(self, params, batch, rng):
    _, logits = self.forward(params, batch["inputs"], rng)
    if self.regression:
      loss = jnp.mean((logits[:, 0] - batch["label"]) ** 2)
      return loss, {"total_loss": loss}
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean()
    accuracy = jnp.mean(jnp.argmax(logits, -1) == batch["label"])
    return loss, {"total_loss": loss, "accuracy": accuracy}

  def eval_fn(self):
    return lambda p, b: self.forward(p, b)[1]  # logits [batch, labels] (or [batch, 1])

  def eval_row(self, record, where="record"):
    return self._inputs(record)

  def placeholder_record(self):
    ids = placeholder_records.text_ids(self.config.data.max_text_length)
    return {"a": "", "b": "", "ids_a": ids, "ids_b": ids, "label": 0}

  def _scores(self, params, split):
    records = self.source(split)
    limit = int(self.config.data.eval_limit) or len(records)
    records = records[:limit]
    logits = self.batched(jax.jit(self.eval_fn()), params, [self.eval_row(r) for r in records])
    return records, logits

  def evaluate(self, params):
    records, logits = self._scores(params, "eval")
    labels = np.array([r["label"] for r in records])
    if self.regression:
      predictions = logits[:, 0]
      metrics = regression_metrics(labels, predictions)
    else:
      predictions = logits.argmax(-1)
      metrics = classification_metrics(labels, predictions)
    metrics["examples"] = float(len(records))
    return metrics, self._rows(records, predictions)

  def predict(self, params):
    records, logits = self._scores(params, "predict")
    return self._rows(records, logits[:, 0] if self.regression else logits.argmax(-1))

  def _rows(self, records, predictions):
    rows = []
    for i, (r, p) in enumerate(zip(records, predictions)):
      value = float(p) if self.regression else self.labels[int(p)]
      rows.append({"index": i, "text_a": r["a"], "text_b": r["b"], "prediction": value,
                   "label": r["label"] if self.regression or r["label"] is None
                   else self.labels[r["label"]]})
    return rows


TASK = GlueTask
