"""Synthetic scenes: the embedded default dataset, generated locally from a seed.

A scene holds 1-3 objects, each a (shape, colour, size) from 8 x 8 x 2, placed on a 64x64 canvas.
Per scene:
  * pixels [64, 64, 3] uint8, rendered;
  * regions: a box per object and a feature vector built from the object's shape, colour and size
    embeddings plus noise (dimension configurable), with detector-style soft labels over the
    shape x colour classes;
  * a caption naming every object and one spatial relation (left of / right of / above / below),
    e.g. "a large red circle is left of a small blue square and a small green cross";
  * paraphrases (the same facts in other words, e.g. the relation inverted and the objects swapped);
  * hard negatives (one attribute changed, or the relation reversed), the "rewritten twins";
    held-out pairs also get binding-swap twins (two objects exchange an attribute), so that
    evaluation tests relations, attribute binding and attributes separately (as ARO does).
Plus a text-only corpus of scene descriptions and image-only scenes. A scene's identity (its
objects and its relation) decides its split by hash, so held-out scenes never occur in train.
"""

import hashlib
import itertools

import numpy as np

SHAPES = ("square", "circle", "triangle", "diamond", "cross", "ring", "bar", "hexagon")
COLOURS = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (50, 80, 230),
           "yellow": (235, 220, 40), "purple": (150, 60, 200), "orange": (245, 140, 30),
           "white": (240, 240, 240), "cyan": (40, 210, 220)}
COLOUR_NAMES = tuple(COLOURS)
SIZES = ("small", "large")
RELATIONS = ("left of", "right of", "above", "below")
INVERSE = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}
CANVAS = 64
RADIUS = {"small": 6, "large": 11}
NUM_CLASSES = len(SHAPES) * len(COLOURS)  # detector classes: shape x colour


def object_class(shape, colour) -> int:
  return SHAPES.index(shape) * len(COLOURS) + COLOUR_NAMES.index(colour)


def _shape_mask(shape, dx, dy, r):
  ax, ay = np.abs(dx), np.abs(dy)
  return {
      "square": (ax < r) & (ay < r),
      "circle": dx ** 2 + dy ** 2 < r ** 2,
      "triangle": (dy < r) & (ax < (dy + r) / 2),
      "diamond": ax + ay < r,
      "cross": ((ax < r / 3) & (ay < r)) | ((ay < r / 3) & (ax < r)),
      "ring": (dx ** 2 + dy ** 2 < r ** 2) & (dx ** 2 + dy ** 2 > (r / 2) ** 2),
      "bar": (ax < r) & (ay < r / 2.5),
      "hexagon": (ay < r * 0.87) & (ax * 0.87 + ay * 0.5 < r * 0.87),
  }[shape]


def describe(obj) -> str:
  return f"a {obj['size']} {obj['colour']} {obj['shape']}"


def relation_between(a, b) -> str:
  """The relation of object a to object b from their centres (the dominant axis)."""
  dx, dy = a["x"] - b["x"], a["y"] - b["y"]
  if abs(dx) >= abs(dy):
    return "left of" if dx < 0 else "right of"
  return "above" if dy < 0 else "below"


def _fits(x, y, r, placed):
  return all(abs(x - p["x"]) > r + p["r"] + 1 or abs(y - p["y"]) > r + p["r"] + 1 for p in placed)


def _on_canvas(obj):
  return all(obj["r"] + 1 <= obj[axis] <= CANVAS - obj["r"] - 2 for axis in ("x", "y"))


def _place(rng, objects):
  """Centres for the objects with no overlap and a clear dominant axis between the first two."""
  for _ in range(100):
    placed = []
    for obj in objects:
      r = RADIUS[obj["size"]]
      for _ in range(50):
        x, y = (int(v) for v in rng.integers(r + 1, CANVAS - r - 1, size=2))
        if _fits(x, y, r, placed):
          placed.append(dict(obj, x=x, y=y, r=r))
          break
      else:
        break
    if len(placed) < len(objects):
      continue
    if len(placed) < 2:
      return placed
    dx, dy = abs(placed[0]["x"] - placed[1]["x"]), abs(placed[0]["y"] - placed[1]["y"])
    if max(dx, dy) >= 1.5 * min(dx, dy) + 4:  # an unambiguous relation
      return placed
  raise RuntimeError(f"could not place the objects {objects}")


def sample_scene(rng) -> dict:
  """Objects with distinct descriptions, their placement, and the caption's relation."""
  count = int(rng.integers(1, 4))
  triples = set()
  while len(triples) < count:
    triples.add((SHAPES[rng.integers(8)], COLOUR_NAMES[rng.integers(8)], SIZES[rng.integers(2)]))
  objects = [dict(shape=s, colour=c, size=z) for s, c, z in sorted(triples)]
  order = rng.permutation(count)
  objects = _place(rng, [objects[i] for i in order])
  relation = relation_between(objects[0], objects[1]) if count > 1 else None
  return {"objects": objects, "relation": relation}


def scene_identity(scene) -> str:
  """What makes two scenes the same: the set of objects and the fact the relation states
  ("A left of B" and "B right of A" are one fact), independent of wording."""
  objs = [describe(o) for o in scene["objects"]]
  fact = ""
  if scene["relation"] is not None:
    a, b, rel = objs[0], objs[1], scene["relation"]
    if rel in ("right of", "below"):
      a, b, rel = b, a, INVERSE[rel]
    fact = f"{a} {rel} {b}"
  return "|".join(sorted(objs)) + f"|{fact}"


def split_of(scene, eval_fraction=0.1) -> str:
  return split_of_identity(scene_identity(scene), eval_fraction)


def split_of_identity(identity: str, eval_fraction=0.1) -> str:
  """'train' or 'eval' for a scene_identity (a pair record's 'scene')."""
  digest = hashlib.sha256(identity.encode()).digest()
  return "eval" if int.from_bytes(digest[:8], "little") / 2 ** 64 < eval_fraction else "train"


def caption(scene) -> str:
  objs = scene["objects"]
  if len(objs) == 1:
    return f"{describe(objs[0])}"
  text = f"{describe(objs[0])} is {scene['relation']} {describe(objs[1])}"
  if len(objs) == 3:
    text += f" and {describe(objs[2])}"
  return text


def paraphrases(scene) -> list:
  """The same facts in other words."""
  objs = scene["objects"]
  if len(objs) == 1:
    return [f"there is {describe(objs[0])}", f"the picture shows {describe(objs[0])}"]
  a, b, rel = describe(objs[0]), describe(objs[1]), scene["relation"]
  extra = f" and {describe(objs[2])}" if len(objs) == 3 else ""
  return [f"{b} is {INVERSE[rel]} {a}{extra}", f"there is {a} {rel} {b}{extra}"]


def hard_negatives(scene, rng, count=3) -> list:
  """Rewritten twins: the relation reversed, or one attribute of one object changed."""
  out = []
  if scene["relation"] is not None:
    out.append(caption(dict(scene, relation=INVERSE[scene["relation"]])))
  options = [(i, key) for i in range(len(scene["objects"])) for key in ("shape", "colour", "size")]
  rng.shuffle(options)
  values = {"shape": SHAPES, "colour": COLOUR_NAMES, "size": SIZES}
  for i, key in options:
    if len(out) >= count:
      break
    current = scene["objects"][i][key]
    new = values[key][rng.integers(len(values[key]))]
    while new == current:
      new = values[key][rng.integers(len(values[key]))]
    objects = [dict(o) for o in scene["objects"]]
    objects[i][key] = new
    twin = caption(dict(scene, objects=objects))
    if twin != caption(scene) and twin not in out:
      out.append(twin)
  return out


def binding_swap_scenes(scene, count=2) -> list:
  """Scenes where two objects exchange one attribute, in place (ARO's attribution test): "a red
  circle is left of a blue square" -> "a blue circle is left of a red square". Deterministic
  (object pairs in order, then colour, size, shape), at most `count`, none with the scene's
  caption or another's, none giving two objects one description or overlapping boxes."""
  objects, out, captions = scene["objects"], [], {caption(scene)}
  for i, j in itertools.combinations(range(len(objects)), 2):
    for key in ("colour", "size", "shape"):
      if len(out) >= count or objects[i][key] == objects[j][key]:
        continue
      swapped = [dict(o) for o in objects]
      swapped[i][key], swapped[j][key] = objects[j][key], objects[i][key]
      if len({describe(o) for o in swapped}) < len(swapped):
        continue
      if key == "size":  # the boxes follow the size, and must still not overlap
        swapped[i]["r"], swapped[j]["r"] = objects[j]["r"], objects[i]["r"]
        if not all(_fits(o["x"], o["y"], o["r"], swapped[:k]) and _on_canvas(o)
                   for k, o in enumerate(swapped)):
          continue
      twin = dict(scene, objects=swapped)
      if caption(twin) not in captions:
        captions.add(caption(twin))
        out.append(twin)
  return out


def binding_swaps(scene, count=2) -> list:
  """The captions of binding_swap_scenes: the same words bound to other objects."""
  return [caption(twin) for twin in binding_swap_scenes(scene, count)]


def mirrored_scene(scene):
  """The scene mirrored along its relation's axis (left-right for left of / right of, top-bottom
  for above / below): the relation reversed, as its boxes now say; None without a relation."""
  relation = scene["relation"]
  if relation is None:
    return None
  axis = "x" if relation in ("left of", "right of") else "y"
  objects = [dict(o, **{axis: CANVAS - 1 - o[axis]}) for o in scene["objects"]]
  return {"objects": objects, "relation": INVERSE[relation]}


def twin_scenes(scene) -> list:
  """The hard-negative images of a scene: its mirror (the relation twin's picture) and its first
  binding swap, where it has them."""
  mirror = mirrored_scene(scene)
  return ([mirror] if mirror is not None else []) + binding_swap_scenes(scene, 1)


def render(scene) -> np.ndarray:
  """[64, 64, 3] uint8 pixels."""
  image = np.full((CANVAS, CANVAS, 3), 30, np.uint8)
  for obj in scene["objects"]:
    r = obj["r"]
    y0, x0 = max(obj["y"] - r - 1, 0), max(obj["x"] - r - 1, 0)
    y1, x1 = min(obj["y"] + r + 2, CANVAS), min(obj["x"] + r + 2, CANVAS)
    y, x = np.mgrid[y0:y1, x0:x1]  # only the object's window
    mask = _shape_mask(obj["shape"], x - obj["x"], y - obj["y"], r)
    image[y0:y1, x0:x1][mask] = COLOURS[obj["colour"]]
  return image


class RegionFeaturizer:
  """Detector stand-in: feature = shape + colour + size embeddings + noise; soft class labels."""

  def __init__(self, feature_dim: int, seed: int = 1234, noise: float = 0.3):
    rng = np.random.default_rng(seed)
    scale = 1.0 / np.sqrt(3.0)
    self.shape = rng.normal(size=(len(SHAPES), feature_dim)) * scale
    self.colour = rng.normal(size=(len(COLOURS), feature_dim)) * scale
    self.size = rng.normal(size=(len(SIZES), feature_dim)) * scale
    self.noise = noise
    self.feature_dim = feature_dim

  def __call__(self, scene, rng) -> dict:
    feats, boxes, probs = [], [], []
    for obj in scene["objects"]:
      f = (self.shape[SHAPES.index(obj["shape"])] + self.colour[COLOUR_NAMES.index(obj["colour"])]
           + self.size[SIZES.index(obj["size"])])
      feats.append(f + self.noise * rng.normal(size=self.feature_dim))
      r = obj["r"]
      jitter = rng.normal(scale=0.7, size=4)
      boxes.append(np.clip([obj["x"] - r + jitter[0], obj["y"] - r + jitter[1],
                            obj["x"] + r + jitter[2], obj["y"] + r + jitter[3]], 0, CANVAS))
      logits = rng.normal(scale=0.5, size=NUM_CLASSES)
      logits[object_class(obj["shape"], obj["colour"])] += rng.uniform(3.0, 5.0)
      p = np.exp(logits - logits.max())
      probs.append(p / p.sum())
    return {"region_features": np.asarray(feats, np.float32),
            "boxes": np.asarray(boxes, np.float32),
            "class_probs": np.asarray(probs, np.float32),
            "image_w": CANVAS, "image_h": CANVAS}


def object_tags(class_probs) -> str:
  """Detector object tags of an image: the name ('colour shape') of each region's top class."""
  names = []
  for c in np.asarray(class_probs).argmax(-1):
    shape, colour = SHAPES[int(c) // len(COLOURS)], COLOUR_NAMES[int(c) % len(COLOURS)]
    names.append(f"{colour} {shape}")
  return " ".join(names)


def scene_description(rng) -> str:
  """A text-only corpus line describing a random scene."""
  return describe_scene(sample_scene(rng))


def describe_scene(scene) -> str:
  """Every object and every pairwise relation of a scene, as one text."""
  objs = scene["objects"]
  parts = [f"in this scene there {'is' if len(objs) == 1 else 'are'} "
           + ", ".join(describe(o) for o in objs)]
  for a, b in itertools.combinations(objs, 2):
    parts.append(f"{describe(a)} is {relation_between(a, b)} {describe(b)}")
  return " . ".join(parts) + " ."


def generate_scenes(num, seed, split, eval_fraction=0.1, unique=False):
  """Yields `num` scenes of `split` ('train' or 'eval') from one seeded stream; with unique=True
  no two share an identity (so retrieval over them has one right answer)."""
  rng = np.random.default_rng(seed)
  made, seen = 0, set()
  while made < num:
    scene = sample_scene(rng)
    if split_of(scene, eval_fraction) != split:
      continue
    if unique:
      identity = scene_identity(scene)
      if identity in seen:
        continue
      seen.add(identity)
    made += 1
    yield scene
