"""VILLA adversarial fine-tuning (Gan et al. 2020) as UNIMO trains captioning and SNLI-VE with it
(src/finetune/img2txt.py `create_model_villa`, src/finetune/visual_entailment.py).

Two perturbations are learnt by projected gradient ascent: `text_delta` on the summed text
embeddings (before their LayerNorm) and `region_delta` on the region features (the [IMG] slot
included). Each starts at random (norm 'l2': uniform(-1, 1) on the real positions, scaled by
init_mag / sqrt(real positions x width); 'inf': uniform(-init_mag, init_mag)), then for each of
`steps` rounds k, with the perturbations of that round:

  clean_k = loss(x),  text_k = loss(x + text_delta),  image_k = loss(x + region_delta)
  round_k = (clean_k + text_k + image_k) / steps
            + kl_weight * (symKL(clean_k, text_k) + symKL(clean_k, image_k))
  (without the clean branch: (text_k + image_k) / steps)

after which each perturbation moves along its branch's gradient: delta += lr * g / |g| (|g| the
per-example L2 norm, or the max-abs for 'inf'). With max_norm > 0 the update is then bounded:
  projection 'unimo' (the original's code): delta *= max_norm / |g| where |g| > max_norm, i.e.
                     the test reads the gradient's norm, not the perturbation's;
  projection 'delta': delta *= max_norm / |delta| where |delta| > max_norm (|delta| <= max_norm);
  'inf' clips delta to [-max_norm, max_norm] either way.
The loss is the sum of the rounds. The perturbations are constants to the parameters' gradient
(the original stops the gradient through its delta updates). symKL(p, q) = KL(p||q) + KL(q||p)
of the two softmaxes, averaged over the scored rows (target tokens, or examples).

A task supplies `branch(params, inputs, rng) -> (loss, logits [rows, classes], weights [rows])`;
its fields text_delta / region_delta are read by the model (model/embeddings.py).
"""

import dataclasses

import jax
import jax.numpy as jnp

NORMS = ("l2", "inf")
PROJECTIONS = ("unimo", "delta")


@dataclasses.dataclass(frozen=True)
class VillaSettings:
  steps: int = 4  # adv_step
  lr: float = 0.05  # adv_lr
  init_mag: float = 0.4  # adv_init_mag
  norm_type: str = "l2"  # norm_type
  max_norm: float = 0.4  # adv_max_norm; 0 = unbounded
  kl_weight: float = 1.0  # adv_kl_weight
  clean_branch: bool = True  # with_pure_model
  projection: str = "unimo"

  def __post_init__(self):
    if self.steps < 1 or self.lr <= 0 or self.init_mag < 0 or self.max_norm < 0:
      raise ValueError(f"task.adversarial: expected steps >= 1, lr > 0, init_mag >= 0 and "
                       f"max_norm >= 0, found steps={self.steps}, lr={self.lr}, "
                       f"init_mag={self.init_mag}, max_norm={self.max_norm}")
    if self.norm_type not in NORMS or self.projection not in PROJECTIONS:
      raise ValueError(f"task.adversarial: expected norm_type in {NORMS} and projection in "
                       f"{PROJECTIONS}, found {self.norm_type!r} and {self.projection!r}")

  @classmethod
  def from_config(cls, adversarial):
    """From task.adversarial (type 'villa'; the other fields as above)."""
    values = {k: v for k, v in dict(adversarial).items() if k != "type"}
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
      raise ValueError(f"task.adversarial: unknown fields {unknown}; expected some of "
                       f"{sorted(known | {'type'})}")
    return cls(**values)


def enabled(task_config) -> bool:
  """Whether task.adversarial.type is 'villa' ('none' or absent: plain training)."""
  adversarial = task_config.get("adversarial")
  kind = "none" if adversarial is None else adversarial.get("type", "none")
  if kind not in ("none", "villa"):
    raise ValueError(f"task.adversarial.type: expected 'none' or 'villa', found {kind!r}")
  return kind == "villa"


def _per_example_norm(x, norm_type):
  flat = x.reshape(x.shape[0], -1)
  if norm_type == "l2":
    norm = jnp.sqrt(jnp.sum(flat * flat, axis=-1))
  else:
    norm = jnp.max(jnp.abs(flat), axis=-1)
  return jnp.maximum(norm, 1e-8).reshape((-1,) + (1,) * (x.ndim - 1))  # [b, 1, ...]


def initial_delta(key, mask, width: int, settings: VillaSettings):
  """[b, n, width] starting perturbation on the positions where mask [b, n] is True."""
  m = mask.astype(jnp.float32)[..., None]
  shape = mask.shape + (width,)
  if settings.norm_type == "inf":
    return jax.random.uniform(key, shape, minval=-settings.init_mag,
                              maxval=settings.init_mag) * m
  count = jnp.sum(mask, axis=1).astype(jnp.float32)[:, None, None] * width  # [b, 1, 1]
  scale = settings.init_mag / jnp.sqrt(jnp.maximum(count, 1.0))
  return jax.random.uniform(key, shape, minval=-1.0, maxval=1.0) * m * scale


def ascent_step(delta, grad, settings: VillaSettings):
  """One projected ascent step of a perturbation along its loss gradient (see the module doc)."""
  norm = _per_example_norm(grad, settings.norm_type)
  delta = delta + settings.lr * grad / norm
  if settings.max_norm > 0:
    if settings.norm_type == "inf":
      delta = jnp.clip(delta, -settings.max_norm, settings.max_norm)
    else:
      measured = norm if settings.projection == "unimo" else _per_example_norm(delta, "l2")
      delta = delta * jnp.where(measured > settings.max_norm, settings.max_norm / measured, 1.0)
  return delta


def symmetric_kl(logits_p, logits_q, weights):
  """Weighted mean over rows of KL(p||q) + KL(q||p); logits [rows, classes], weights [rows]."""
  log_p = jax.nn.log_softmax(logits_p.astype(jnp.float32), axis=-1)
  log_q = jax.nn.log_softmax(logits_q.astype(jnp.float32), axis=-1)
  per_row = jnp.sum((jnp.exp(log_p) - jnp.exp(log_q)) * (log_p - log_q), axis=-1)
  w = weights.astype(jnp.float32)
  return jnp.sum(per_row * w) / jnp.maximum(jnp.sum(w), 1.0)


def villa_loss(branch, params, inputs, rng, settings: VillaSettings, *, text_mask, region_mask,
               hidden_size: int, feature_dim: int):
  """(loss, metrics): the sum over rounds above. text_mask [b, length] / region_mask
  [b, 1 + regions] say which positions are perturbed (None: that modality is absent)."""
  init_key, rng = jax.random.split(rng)
  deltas = {}
  if text_mask is not None:
    deltas["text_delta"] = initial_delta(jax.random.fold_in(init_key, 0), text_mask,
                                         hidden_size, settings)
  if region_mask is not None:
    deltas["region_delta"] = initial_delta(jax.random.fold_in(init_key, 1), region_mask,
                                           feature_dim, settings)
  masks = {"text_delta": text_mask, "region_delta": region_mask}
  total = 0.0
  metrics = {}
  for k in range(settings.steps):
    key = jax.random.fold_in(rng, k)
    last = k == settings.steps - 1  # nothing reads the update after the last round
    round_loss = 0.0
    if settings.clean_branch:
      clean_loss, clean_logits, weights = branch(params, inputs, jax.random.fold_in(key, 0))
      round_loss = clean_loss / settings.steps
    for b, (name, delta) in enumerate(sorted(deltas.items())):
      def perturbed(d, name=name, b=b):
        loss, logits, weights = branch(params, dict(inputs, **{name: d}),
                                       jax.random.fold_in(key, b + 1))
        return loss, (logits, weights)
      if last:
        loss, (logits, weights) = perturbed(jax.lax.stop_gradient(delta))
      else:
        (loss, (logits, weights)), grad = jax.value_and_grad(perturbed, has_aux=True)(
            jax.lax.stop_gradient(delta))
      round_loss = round_loss + loss / settings.steps
      if settings.clean_branch:
        kl = symmetric_kl(clean_logits, logits, weights)
        round_loss = round_loss + settings.kl_weight * kl
        metrics[f"{name}_kl"] = kl
      metrics[f"{name}_loss"] = loss
      if not last:
        grad = grad * masks[name].astype(grad.dtype)[..., None]
        deltas[name] = jax.lax.stop_gradient(ascent_step(delta, grad, settings))
    total = total + round_loss
  if settings.clean_branch:
    metrics["clean_loss"] = clean_loss
  return total, metrics


def perturbation_masks(inputs, pad_id: int, target_only: bool = False):
  """(text_mask [b, length] or None, region_mask [b, 1 + regions] or None): the real text tokens
  (with target_only, those of the target block: a caption after object tags, which the
  original leaves unperturbed) and the real regions with the [IMG] slot of an image that has
  any (pixel inputs: None)."""
  text = None
  if "input_ids" in inputs:
    text = inputs["input_ids"] != pad_id
    if target_only and "target_mask" in inputs:
      text = text & inputs["target_mask"].astype(bool)
  regions = None
  if "region_mask" in inputs:
    real = inputs["region_mask"].astype(bool)
    regions = jnp.concatenate([jnp.any(real, axis=1, keepdims=True), real], axis=1)
  return text, regions


def task_villa_loss(task, params, inputs, rng, target_only: bool = False):
  """villa_loss for a task with `branch`, settings from task.adversarial."""
  if rng is None:
    raise ValueError("VILLA trains with dropout keys: expected an rng")
  settings = VillaSettings.from_config(task.config.task.adversarial)
  text, regions = perturbation_masks(inputs, task.special["pad"], target_only)
  m = task.config.model
  return villa_loss(task.branch, params, inputs, rng, settings, text_mask=text,
                    region_mask=regions, hidden_size=m.hidden_size,
                    feature_dim=m.region_feature_dim)
