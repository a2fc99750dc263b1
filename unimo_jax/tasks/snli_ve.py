"""Visual entailment (SNLI-VE): does the image entail, contradict, or leave open the statement?

UNIMO's head: pooled_text + pooled_image -> Dense(task.head_hidden, 2048 in UNIMO; no activation)
-> dropout -> Dense(3); softmax cross-entropy; accuracy. Data: pair shards with the statement in
caption_ids and 'label' in 0..2 (task.label_names names them). With task.adversarial.type
'villa' (the base / large recipes, as UNIMO's) it trains with VILLA perturbations of the text
embeddings and the region features (tasks/villa.py).
"""

import jax.numpy as jnp
import numpy as np
import optax

from unimo_jax.errors import DataError
from unimo_jax.data.synthetic.task_data import image_task_paths
from unimo_jax.data.formats.tokenizers import load_tokenizer
from unimo_jax.tasks import villa
from unimo_jax.tasks.base import Task
from unimo_jax.tasks.heads import EntailmentHead


class EntailmentTask(Task):
  name = "snli_ve"

  def synthetic_paths(self, root):
    tokenizer = load_tokenizer(self.config.data.tokenizer or root / "tokenizer.model")
    return image_task_paths(root, self.name, feature_dim=self.config.model.region_feature_dim,
                            tokenizer=tokenizer, **self.synthetic_sizes())

  def head(self):
    c = self.config.task
    return EntailmentHead(self.config.model, c.head_hidden, len(c.label_names), c.head_dropout,
                          c.head_activation, c.head_combine)

  def _label(self, record, where):
    label = record.get("label")
    if label is None or not 0 <= int(label) < len(self.config.task.label_names):
      raise DataError(f"{where}: expected 'label' in 0..{len(self.config.task.label_names) - 1}, "
                      f"found {label!r}")
    return np.int32(label)

  def train_example(self, record, rng):
    return {"inputs": self.pair_inputs(record, "train record"),
            "label": self._label(record, "train record")}

  def branch(self, params, inputs, rng):
    """(cross-entropy, head logits [b, 3], weights [b]) of one forward (inputs with 'label')."""
    labels = inputs["label"]
    _, logits = self.forward(params, {k: v for k, v in inputs.items() if k != "label"}, rng)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    return loss, logits, jnp.ones(labels.shape, jnp.float32)

  def loss(self, params, batch, rng):
    inputs = dict(batch["inputs"], label=batch["label"])
    if villa.enabled(self.config.task):
      loss, metrics = villa.task_villa_loss(self, params, inputs, rng)
      return loss, {"total_loss": loss, **metrics}
    loss, logits, _ = self.branch(params, inputs, rng)
    return loss, {"total_loss": loss,
                  "accuracy": jnp.mean(jnp.argmax(logits, -1) == batch["label"])}

  def evaluate(self, params):
    records, predicted = self.predicted_classes(params, "eval")
    labels = np.array([self._label(r, f"eval record {i}") for i, r in enumerate(records)])
    names = list(self.config.task.label_names)
    metrics = {"accuracy": float(np.mean(predicted == labels)), "examples": float(len(records))}
    for k, name in enumerate(names):
      if (labels == k).any():
        metrics[f"accuracy_{name}"] = float(np.mean(predicted[labels == k] == k))
    return metrics, [{"id": r.get("caption_id", str(i)), "prediction": names[int(p)],
                      "label": names[int(l)]}
                     for i, (r, p, l) in enumerate(zip(records, predicted, labels))]

  def predict(self, params):
    records, predicted = self.predicted_classes(params, "predict")
    names = list(self.config.task.label_names)
    return [{"id": r.get("caption_id", str(i)), "prediction": names[int(p)]}
            for i, (r, p) in enumerate(zip(records, predicted))]


TASK = EntailmentTask
