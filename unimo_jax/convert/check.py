"""Summary statistics of a converted checkpoint on one fixed caption + region input.

  python -m unimo_jax.convert check --params=DIR/params --config=DIR/model_config.json \
      --tokenizer=DIR/tokenizer [--caption="a man is riding a [MASK] on the beach"] [--save=x.npz]

Runs the model on the masked caption alone and with a fixed image (seeded non-negative "detector"
features, a fixed grid of boxes), and prints per-layer mean hidden-state norms, the pooled-output
norms and the top LM predictions at the [MASK] position. --save writes the exact inputs (ids,
features, locations, mask) and the statistics to an .npz, so the same input can be fed to the
original implementation and the numbers compared.
"""

import numpy as np

DEFAULT_CAPTION = "a man is riding a [MASK] on the beach"
NUM_REGIONS = 10


def fixed_image(feature_dim: int, num_regions: int = NUM_REGIONS, seed: int = 0) -> dict:
  """Seeded, ReLU-like region features and a 2 x 5 grid of boxes with UNIMO's 5-d locations."""
  rng = np.random.default_rng(seed)
  features = np.maximum(rng.normal(size=(1, num_regions, feature_dim)), 0).astype(np.float32)
  cols = np.arange(num_regions) % 5
  rows = np.arange(num_regions) // 5
  x1, y1 = cols / 5, rows / 2
  x2, y2 = x1 + 0.2, y1 + 0.5
  locations = np.stack([x1, y1, x2, y2, (x2 - x1) * (y2 - y1)], -1)[None].astype(np.float32)
  return {"region_features": features, "region_locations": locations,
          "region_mask": np.ones((1, num_regions), bool)}


def caption_ids(tokenizer, caption: str) -> tuple:
  """[CLS] caption [SEP] with '[MASK]' mapped to the tokenizer's mask id; (ids [1, L], mask index)."""
  pieces = caption.split("[MASK]")
  if len(pieces) != 2:
    raise ValueError(f"caption: expected exactly one [MASK], found {len(pieces) - 1} in {caption!r}")
  left = tokenizer.encode(pieces[0].strip()) if pieces[0].strip() else []
  right = tokenizer.encode(pieces[1].strip()) if pieces[1].strip() else []
  ids = [tokenizer.cls_id, *left, tokenizer.mask_id, *right, tokenizer.sep_id]
  return np.asarray([ids], np.int32), 1 + len(left)


def statistics(params, config, tokenizer, caption: str = DEFAULT_CAPTION, top_k: int = 5) -> dict:
  """{'text' | 'pair': {'layer_norms', 'pooled_text_norm', 'pooled_image_norm', 'top'}} and the
  inputs used."""
  from unimo_jax.model import Unimo
  ids, mask_at = caption_ids(tokenizer, caption)
  image = fixed_image(config.region_feature_dim)
  unrolled = config.copy_and_resolve_references()
  if unrolled.scan_layers:
    from unimo_jax.model.params import unstack_layers
    params = unstack_layers(params, config.num_layers)
    unrolled.scan_layers = False
  model = Unimo(unrolled)
  out = {"inputs": dict(image, input_ids=ids, mask_index=np.int32(mask_at))}
  for name, batch in (("text", {"input_ids": ids}), ("pair", dict(image, input_ids=ids))):
    outputs, state = model.apply({"params": params}, dict(batch, lm_positions=np.asarray(
        [[mask_at]], np.int32)), heads={"lm"}, capture_intermediates=True, mutable=["intermediates"])
    layers = state["intermediates"]["encoder"]
    norms = []
    for i in range(config.num_layers):
      h = np.asarray(layers[f"layer_{i}"]["__call__"][0])  # [1, seq, hidden]
      norms.append(float(np.linalg.norm(h.reshape(-1, h.shape[-1]), axis=-1).mean()))
    logits = np.asarray(outputs["lm_logits"])[0, 0]
    top = np.argsort(-logits)[:top_k]
    out[name] = {"layer_norms": norms,
                 "pooled_text_norm": float(np.linalg.norm(np.asarray(outputs["pooled_text"]))),
                 "top": [(tokenizer.decode([int(t)]), float(logits[t])) for t in top]}
    if "pooled_image" in outputs:
      out[name]["pooled_image_norm"] = float(np.linalg.norm(np.asarray(outputs["pooled_image"])))
  return out


def format_statistics(stats: dict) -> str:
  lines = []
  for name in ("text", "pair"):
    s = stats[name]
    lines.append(f"[{name}] per-layer mean |h|: " + " ".join(f"{v:.4f}" for v in s["layer_norms"]))
    pooled = f"|pooled_text| {s['pooled_text_norm']:.4f}"
    if "pooled_image_norm" in s:
      pooled += f"  |pooled_image| {s['pooled_image_norm']:.4f}"
    lines.append(f"[{name}] {pooled}")
    lines.append(f"[{name}] top [MASK] predictions: "
                 + ", ".join(f"{tok!r} {logit:.3f}" for tok, logit in s["top"]))
  return "\n".join(lines)
