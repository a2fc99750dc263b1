"""Task heads on the backbone's pooled outputs (UNIMO's fine-tuning heads, spec section 4.2).

Every head is a linen module applied to the dict the Unimo model returns; its parameters live
beside the backbone's (params = {'backbone': ..., 'head': ...}) so pretrained weights load
unchanged and the head starts fresh.
"""

import flax.linen as nn
import jax.numpy as jnp

from unimo_jax.model.layers import dense, gelu


class TextClassifierHead(nn.Module):
  """GLUE: pooled_fc_text (ReLU, in the backbone) -> dropout -> Dense(num_outputs)
  (UNIMO's cls_out_{n}); num_outputs 1 is regression."""
  config: object
  num_outputs: int
  dropout_rate: float = 0.1

  @nn.compact
  def __call__(self, outputs, deterministic: bool = True):
    x = nn.Dropout(self.dropout_rate)(outputs["pooled_text"], deterministic=deterministic)
    logits = dense(self.config, self.num_outputs, ("embed", "classes"), "cls_out")(x)
    return logits.astype(jnp.float32)  # [batch, num_outputs]


class MatchHead(nn.Module):
  """Retrieval: score = match_fc(dropout(pooled_text * pooled_image)) (UNIMO's 'mul' mode)."""
  config: object
  dropout_rate: float = 0.1

  @nn.compact
  def __call__(self, outputs, deterministic: bool = True):
    x = outputs["pooled_text"] * outputs["pooled_image"]
    x = nn.Dropout(self.dropout_rate)(x, deterministic=deterministic)
    return dense(self.config, 1, ("embed", "classes"), "match_fc")(x)[:, 0].astype(jnp.float32)


ACTIVATIONS = {"none": lambda x: x, "gelu": gelu, "relu": nn.relu}


class EntailmentHead(nn.Module):
  """SNLI-VE: pooled_text + pooled_image -> Dense(hidden) (UNIMO's cls_out_w_0, no activation
  by default) -> dropout -> Dense(3) (cls_out_w_1)."""
  config: object
  hidden: int = 2048
  num_classes: int = 3
  dropout_rate: float = 0.1
  activation: str = "none"
  combine: str = "sum"  # UNIMO's; 'product' multiplies the pooled vectors as the match head does

  @nn.compact
  def __call__(self, outputs, deterministic: bool = True):
    if self.activation not in ACTIVATIONS:
      raise ValueError(f"task.head_activation: expected one of {sorted(ACTIVATIONS)}, found "
                       f"{self.activation!r}")
    if self.combine not in ("sum", "product"):
      raise ValueError(f"task.head_combine: expected 'sum' or 'product', found {self.combine!r}")
    if self.combine == "sum":
      x = outputs["pooled_text"] + outputs["pooled_image"]
    else:
      x = outputs["pooled_text"] * outputs["pooled_image"]
    x = ACTIVATIONS[self.activation](dense(self.config, self.hidden, ("embed", "mlp"),
                                           "cls_out_0")(x))
    x = nn.Dropout(self.dropout_rate)(x, deterministic=deterministic)
    return dense(self.config, self.num_classes, ("mlp", "classes"), "cls_out_1")(x).astype(
        jnp.float32)


class VqaHead(nn.Module):
  """VQA (UNIMO released no VQA code; this is the common UNITER-style classifier):
  pooled_text * pooled_image -> Dense(2H) -> GELU -> LayerNorm -> Dense(answers)."""
  config: object
  num_answers: int
  dropout_rate: float = 0.1

  @nn.compact
  def __call__(self, outputs, deterministic: bool = True):
    c = self.config
    x = outputs["pooled_text"] * outputs["pooled_image"]
    x = gelu(dense(c, 2 * c.hidden_size, ("embed", "mlp"), "vqa_fc_0")(x))
    x = nn.LayerNorm(epsilon=c.layer_norm_eps, name="vqa_layer_norm")(x)
    x = nn.Dropout(self.dropout_rate)(x, deterministic=deterministic)
    # [2H, answers] (4.8 M parameters for VQA v2's 3,129 answers): its input axis is split like
    # `embed` (over fsdp), or the start-up sharding check finds it replicated on every chip
    return dense(c, self.num_answers, ("embed", "classes"), "vqa_fc_1")(x).astype(jnp.float32)
