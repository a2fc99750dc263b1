"""Downstream-task text for the synthetic scenes: VQA questions, entailment statements, and the
text-only tasks (sentence-pair classification / regression, seq2seq rewriting).

Every function is pure: a scene (see synthetic.py) and a numpy Generator in, strings out.
  VQA          colour, shape, count and relation questions, each with 10 annotator answers
               (count answers mix digits and number words, as real annotators do);
  entailment   statements that the scene entails, contradicts, or leaves open (neutral);
  classify     (caption, candidate) -> 1 when the candidate describes the same scene;
  similarity   (caption, candidate) -> how many objects the two describe alike (0..3, a float);
  rewrite      caption -> the same facts with the relation inverted (a deterministic seq2seq).
"""

import numpy as np

from unimo_jax.data.synthetic import scenes as synthetic

ENTAILMENT_LABELS = ("entailment", "neutral", "contradiction")
NEUTRAL_PREDICATES = ("is heavy", "is made of wood", "is new", "is old")
NUMBER_WORDS = {1: "one", 2: "two", 3: "three"}
NUM_ANNOTATORS = 10


def _unique(objects, keep):
  """Objects whose attributes named in `keep` single them out in the scene."""
  def key(o):
    return tuple(o[k] for k in keep)
  counts = {}
  for o in objects:
    counts[key(o)] = counts.get(key(o), 0) + 1
  return [o for o in objects if counts[key(o)] == 1]


def _annotators(answer, rng, alternatives=(), noise=()):
  """Ten annotator answers: mostly `answer` (or an equivalent spelling), a few noisy ones."""
  spellings = [answer, *alternatives]
  out = [spellings[rng.integers(len(spellings))] for _ in range(NUM_ANNOTATORS)]
  for i in rng.permutation(NUM_ANNOTATORS)[:int(rng.integers(0, 3)) if noise else 0]:
    out[i] = noise[rng.integers(len(noise))]
  return out


def vqa_questions(scene, rng) -> list:
  """[(question, [10 answers], question_type)] for one scene."""
  objs = scene["objects"]
  out = []
  for o in _unique(objs, ("size", "shape"))[:1]:
    out.append((f"what colour is the {o['size']} {o['shape']} ?",
                _annotators(o["colour"], rng, noise=synthetic.COLOUR_NAMES), "colour"))
  for o in _unique(objs, ("size", "colour"))[:1]:
    out.append((f"what shape is the {o['size']} {o['colour']} object ?",
                _annotators(o["shape"], rng, noise=synthetic.SHAPES), "shape"))
  n = len(objs)
  out.append(("how many objects are there ?",
              _annotators(str(n), rng, alternatives=(NUMBER_WORDS[n],)), "count"))
  if scene["relation"] is not None:
    a, b = (synthetic.describe(o)[2:] for o in objs[:2])
    truth = bool(rng.integers(2))
    rel = scene["relation"] if truth else synthetic.INVERSE[scene["relation"]]
    out.append((f"is the {a} {rel} the {b} ?", _annotators("yes" if truth else "no", rng),
                "relation"))
  return out


def _absent_twin(scene, rng):
  """(index, object): scene object `index` with one attribute changed, described like no object
  of the scene."""
  present = {synthetic.describe(o) for o in scene["objects"]}
  values = {"shape": synthetic.SHAPES, "colour": synthetic.COLOUR_NAMES, "size": synthetic.SIZES}
  while True:
    index = int(rng.integers(len(scene["objects"])))
    o = dict(scene["objects"][index])
    key = ("shape", "colour", "size")[rng.integers(3)]
    o[key] = values[key][rng.integers(len(values[key]))]
    if synthetic.describe(o) not in present:
      return index, o


def entailment_statements(scene, rng) -> list:
  """[(statement, label index into ENTAILMENT_LABELS)]: one of each label, in random order."""
  objs = scene["objects"]
  present = objs[rng.integers(len(objs))]
  true_facts = [f"there is {synthetic.describe(present)}"]
  false_facts = [f"there is {synthetic.describe(_absent_twin(scene, rng)[1])}"]
  if scene["relation"] is not None:
    a, b = (synthetic.describe(o)[2:] for o in objs[:2])
    true_facts.append(f"the {a} is {scene['relation']} the {b}")
    false_facts.append(f"the {a} is {synthetic.INVERSE[scene['relation']]} the {b}")
  neutral = (f"the {synthetic.describe(present)[2:]} "
             f"{NEUTRAL_PREDICATES[rng.integers(len(NEUTRAL_PREDICATES))]}")
  out = [(true_facts[rng.integers(len(true_facts))], 0), (neutral, 1),
         (false_facts[rng.integers(len(false_facts))], 2)]
  return [out[i] for i in rng.permutation(3)]


def rewrite_target(scene) -> str:
  """The seq2seq target for a scene's caption: its first paraphrase (relation inverted)."""
  return synthetic.paraphrases(scene)[0]


def shared_objects(scene, other) -> int:
  """How many objects of `scene` occur, identically described, in `other`."""
  mine = {synthetic.describe(o) for o in scene["objects"]}
  return len(mine & {synthetic.describe(o) for o in other["objects"]})


def sentence_pair(scene, rng) -> tuple:
  """(caption, candidate, same_scene 0/1, similarity 0..3): the candidate is a paraphrase of the
  scene or a caption of a hard-negative twin, half each."""
  text = synthetic.caption(scene)
  if rng.integers(2):
    return text, synthetic.paraphrases(scene)[rng.integers(2)], 1, float(len(scene["objects"]))
  index, twin = _absent_twin(scene, rng)
  objects = [dict(o) for o in scene["objects"]]
  objects[index] = twin
  twin_scene = dict(scene, objects=objects)
  return text, synthetic.caption(twin_scene), 0, float(shared_objects(scene, twin_scene))


def vocabulary_lines(seed: int = 0, scenes: int = 200) -> list:
  """Task text from random scenes, so a tokenizer trained with the scenes covers every task word."""
  rng = np.random.default_rng(seed)
  lines = []
  for _ in range(scenes):
    scene = synthetic.sample_scene(rng)
    lines += [q for q, _, _ in vqa_questions(scene, rng)]
    lines += [s for s, _ in entailment_statements(scene, rng)]
  return lines + list(NEUTRAL_PREDICATES)
