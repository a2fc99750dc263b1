"""Visual question answering: a classifier over an answer vocabulary on the joint encoding of
[IMG] v.. [CLS] question [SEP], trained with binary cross-entropy on soft targets (each candidate's
official VQA accuracy given the 10 annotators), evaluated with the official accuracy.

Answer vocabulary: the normalised answers given at least task.answer_min_count times in the
training split, most frequent first, written to <workdir>/answers.json (and read from there, so
evaluation and prediction use the vocabulary the head was trained with). Training questions none
of whose answers is in the vocabulary are counted and skipped.
Data: pair shards with the question in caption_ids and the annotators' answers in 'answers'.
"""

import collections
import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import optax

from unimo_jax.errors import DataError
from unimo_jax.data.synthetic.task_data import image_task_paths
from unimo_jax.data.formats.tokenizers import load_tokenizer
from unimo_jax.metrics.vqa import normalize_answer, soft_target, vqa_accuracy
from unimo_jax.tasks.base import Task
from unimo_jax.tasks.heads import VqaHead

ANSWERS_FILE = "answers.json"


def answer_vocabulary(answer_lists, min_count: int) -> list:
  """Normalised answers given by at least `min_count` annotators overall, most frequent first."""
  counts = collections.Counter(normalize_answer(a) for answers in answer_lists for a in answers)
  return [a for a, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if n >= min_count]


class VqaTask(Task):
  name = "vqa"

  def __init__(self, *args, **kwargs):
    super().__init__(*args, **kwargs)
    self._train_answers = None  # each training record's answers, when the vocabulary read them

  def synthetic_paths(self, root):
    tokenizer = load_tokenizer(self.config.data.tokenizer or root / "tokenizer.model")
    return image_task_paths(root, self.name, feature_dim=self.config.model.region_feature_dim,
                            tokenizer=tokenizer, **self.synthetic_sizes())

  @functools.cached_property
  def answers(self) -> list:
    """The answer vocabulary: <workdir>/answers.json, or built from the training split's answers
    (and written there)."""
    path = self.workdir / ANSWERS_FILE
    if path.exists():
      return json.loads(path.read_text())
    if not self.data_paths.get("train"):  # compile mode: shapes only
      return [f"answer {i}" for i in range(int(self.config.task.compile_answers))]
    source = self.source("train")
    lists = []
    for i in range(len(source)):
      record = source[i]
      if "answers" not in record:
        raise DataError(f"{self.data_paths['train']} record {i}: expected an 'answers' list, "
                        f"found fields {sorted(record)}")
      lists.append(record["answers"])
    self._train_answers = lists
    answers = answer_vocabulary(lists, int(self.config.task.answer_min_count))
    if not answers:
      raise DataError(f"{self.data_paths['train']}: no answer is given "
                      f"{self.config.task.answer_min_count} times; lower task.answer_min_count")
    if jax.process_index() == 0:
      self.workdir.mkdir(parents=True, exist_ok=True)
      path.write_text(json.dumps(answers))
    print(f"answer vocabulary: {len(answers)} answers", flush=True)
    return answers

  @functools.cached_property
  def vocabulary(self) -> dict:
    return {a: i for i, a in enumerate(self.answers)}

  def head(self):
    return VqaHead(self.config.model, len(self.answers), self.config.task.head_dropout)

  def usable(self, record):
    return bool(soft_target(record["answers"], self.vocabulary).any())

  def train_indices(self, source):
    if self._train_answers is not None:  # the vocabulary pass read them: no second full read
      source = [{"answers": answers} for answers in self._train_answers]
    return super().train_indices(source)

  def train_example(self, record, rng):
    return {"inputs": self.pair_inputs(record),
            "target": soft_target(record["answers"], self.vocabulary)}

  def loss(self, params, batch, rng):
    _, logits = self.forward(params, batch["inputs"], rng)
    target = batch["target"]
    # UNITER's scaling: mean over the batch of the sum over answers
    loss = optax.sigmoid_binary_cross_entropy(logits, target).sum(-1).mean()
    score = jnp.take_along_axis(target, jnp.argmax(logits, -1)[:, None], axis=1).mean()
    return loss, {"total_loss": loss, "vqa_score": score}

  def _answers(self, params, split):
    records, best = self.predicted_classes(params, split, "question")
    return records, [self.answers[int(i)] for i in best]

  def evaluate(self, params):
    records, predicted = self._answers(params, "eval")
    scores = np.array([vqa_accuracy(p, r["answers"]) for p, r in zip(predicted, records)])
    metrics = {"accuracy": float(scores.mean()), "questions": float(len(records))}
    kinds = [str(r.get("question_type", "")) for r in records]
    for kind in sorted(set(kinds) - {""}):
      mask = np.array([k == kind for k in kinds])
      metrics[f"accuracy_{kind}"] = float(scores[mask].mean())
    oov = np.mean([not soft_target(r["answers"], self.vocabulary).any() for r in records])
    metrics["unanswerable_fraction"] = float(oov)  # no vocabulary answer matches any annotator
    return metrics, [{"question_id": r.get("caption_id", str(i)), "question": self._question(r),
                      "answer": p, "accuracy": float(s)}
                     for i, (r, p, s) in enumerate(zip(records, predicted, scores))]

  def predict(self, params):
    records, predicted = self._answers(params, "predict")
    return [{"question_id": r.get("caption_id", str(i)), "question": self._question(r),
             "answer": p} for i, (r, p) in enumerate(zip(records, predicted))]

  def _question(self, record):
    return record.get("caption") or self.tokenizer.decode(record["caption_ids"])


TASK = VqaTask
