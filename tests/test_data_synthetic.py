"""Synthetic scenes: coverage, captions true to the picture, twins, disjoint splits, the writer."""

import collections

import numpy as np

from unimo_jax.data.synthetic import scenes as synthetic
from unimo_jax.data.formats.records import ShardSource
from unimo_jax.data.formats.tokenizers import load_tokenizer


def test_scenes_cover_the_attribute_space_and_relations_match_positions():
  scenes = list(synthetic.generate_scenes(3000, seed=0, split="train"))
  objects = [o for s in scenes for o in s["objects"]]
  assert {o["shape"] for o in objects} == set(synthetic.SHAPES)
  assert {o["colour"] for o in objects} == set(synthetic.COLOURS)
  assert {o["size"] for o in objects} == set(synthetic.SIZES)
  assert collections.Counter(len(s["objects"]) for s in scenes).keys() == {1, 2, 3}
  assert {s["relation"] for s in scenes if s["relation"]} == set(synthetic.RELATIONS)
  for s in scenes:
    if s["relation"]:
      a, b = s["objects"][:2]
      dx, dy = a["x"] - b["x"], a["y"] - b["y"]
      expected = {"left of": dx < 0 and abs(dx) > abs(dy), "right of": dx > 0 and abs(dx) > abs(dy),
                  "above": dy < 0 and abs(dy) > abs(dx), "below": dy > 0 and abs(dy) > abs(dx)}
      assert expected[s["relation"]], s
    text = synthetic.caption(s)
    for o in s["objects"]:
      assert synthetic.describe(o) in text


def test_rendered_pixels_show_each_object_in_its_colour():
  scene = next(synthetic.generate_scenes(1, seed=4, split="train"))
  image = synthetic.render(scene)
  assert image.shape == (64, 64, 3) and image.dtype == np.uint8
  for o in scene["objects"]:
    window = image[o["y"] - 2:o["y"] + 3, o["x"] - o["r"]:o["x"] + o["r"] + 1].reshape(-1, 3)
    assert (window == synthetic.COLOURS[o["colour"]]).all(axis=1).any(), o


def test_twins_change_exactly_one_thing_and_paraphrases_keep_the_facts():
  rng = np.random.default_rng(0)
  for scene in synthetic.generate_scenes(300, seed=1, split="train"):
    truth = synthetic.caption(scene)
    twins = synthetic.hard_negatives(scene, rng)
    assert twins and truth not in twins and len(set(twins)) == len(twins)
    for twin in twins:
      changed = [a != b for a, b in zip(truth.split(), twin.split())]
      relation_flip = scene["relation"] and twin == synthetic.caption(
          dict(scene, relation=synthetic.INVERSE[scene["relation"]]))
      assert relation_flip or (len(twin.split()) == len(truth.split()) and sum(changed) == 1)
    if scene["relation"]:
      inverted = synthetic.paraphrases(scene)[0]
      a, b = (synthetic.describe(o) for o in scene["objects"][:2])
      assert inverted.startswith(f"{b} is {synthetic.INVERSE[scene['relation']]} {a}")


def test_binding_swaps_exchange_one_attribute_between_two_objects():
  seen = 0
  for scene in synthetic.generate_scenes(300, seed=2, split="eval"):
    truth, objects = synthetic.caption(scene), scene["objects"]
    twins = synthetic.binding_swaps(scene)
    assert len(twins) <= 2 and truth not in twins and len(set(twins)) == len(twins)
    if len(objects) == 1:
      assert twins == []
    for twin in twins:
      # Written out independently: some two objects i, j and one attribute such that giving
      # i the value of j and j the value of i gives the twin, everything else as it was.
      matches = []
      for i in range(len(objects)):
        for j in range(i + 1, len(objects)):
          for key in ("colour", "size", "shape"):
            swapped = [dict(o) for o in objects]
            swapped[i][key], swapped[j][key] = objects[j][key], objects[i][key]
            if objects[i][key] != objects[j][key] and synthetic.caption(
                dict(scene, objects=swapped)) == twin:
              matches.append((i, j, key))
      assert matches, (truth, twin)
      words, twin_words = truth.split(), twin.split()
      assert sorted(words) == sorted(twin_words)  # the same words, bound to other objects
      seen += 1
  assert seen > 100


def test_twin_scenes_are_what_their_boxes_and_objects_say():
  checked = 0
  for scene in synthetic.generate_scenes(300, seed=4, split="train"):
    twins = synthetic.twin_scenes(scene)
    if scene["relation"] is None:
      assert synthetic.mirrored_scene(scene) is None
      continue
    mirror = twins[0]
    a, b = mirror["objects"][:2]
    # The relation twin's caption is the relation the mirrored boxes now have.
    assert synthetic.relation_between(a, b) == synthetic.INVERSE[scene["relation"]]
    assert synthetic.caption(mirror) == synthetic.caption(
        dict(scene, relation=synthetic.INVERSE[scene["relation"]]))
    assert [synthetic.describe(o) for o in mirror["objects"]] == [
        synthetic.describe(o) for o in scene["objects"]]
    for twin in twins:  # on the canvas, no two objects overlapping
      for k, o in enumerate(twin["objects"]):
        for axis in ("x", "y"):
          assert o["r"] + 1 <= o[axis] <= synthetic.CANVAS - o["r"] - 2
        assert synthetic._fits(o["x"], o["y"], o["r"], twin["objects"][:k])
    if len(twins) > 1:
      assert synthetic.caption(twins[1]) == synthetic.binding_swaps(scene, 1)[0]
      assert synthetic.relation_between(*twins[1]["objects"][:2]) == scene["relation"]
    checked += 1
  assert checked > 150


def test_twin_scene_pairs_link_both_ways_and_leave_the_rest_unchanged(tmp_path):
  from unimo_jax.data.formats.records import ShardSource
  from unimo_jax.data.synthetic.scene_dataset import write_synthetic
  kwargs = dict(pairs=80, eval_pairs=30, images=20, texts=20, feature_dim=8, log=lambda *_: None)
  write_synthetic(tmp_path / "plain", **kwargs)
  write_synthetic(tmp_path / "twins", twin_scenes=True, **kwargs)
  assert (tmp_path / "plain" / "tokenizer.model").read_bytes() == (
      tmp_path / "twins" / "tokenizer.model").read_bytes()
  plain, twins = (ShardSource(tmp_path / d / "train" / "pair") for d in ("plain", "twins"))
  assert len(twins) > len(plain) + 80 and twins.meta["twin_scenes"] == len(twins) - len(plain)
  for i in range(len(plain)):  # the scenes' own pairs: as without twins, plus the links
    a, b = plain[i], twins[i]
    assert set(b) - set(a) == {"twin_pairs"}
    assert all(np.array_equal(np.asarray(a[k]), np.asarray(b[k])) for k in a if k != "pixels"
               and not isinstance(a[k], list)) and np.array_equal(a["pixels"], b["pixels"])
    for j in b["twin_pairs"]:
      twin = twins[int(j)]
      assert int(j) >= len(plain) and list(twin["twin_pairs"]) == [i]
      assert synthetic.split_of_identity(twin["scene"]) == "train"  # never a held-out scene
  for name in ("eval",):
    a, b = (ShardSource(tmp_path / d / name / "pair") for d in ("plain", "twins"))
    assert all(np.array_equal(a[i]["region_features"], b[i]["region_features"])
               and a[i]["caption"] == b[i]["caption"] for i in range(len(a)))


def test_held_out_pairs_carry_binding_swap_twins_that_are_no_other_caption(tmp_path):
  from unimo_jax.data.formats.records import ShardSource
  from unimo_jax.data.synthetic.scene_dataset import write_synthetic
  from unimo_jax.data.formats.tokenizers import load_tokenizer
  write_synthetic(tmp_path / "s", pairs=100, eval_pairs=60, images=20, texts=20, feature_dim=8,
                  log=lambda *_: None)
  tok = load_tokenizer(tmp_path / "s" / "tokenizer.model")
  pairs = ShardSource(tmp_path / "s" / "eval" / "pair")
  captions = {pairs[i]["caption"] for i in range(len(pairs))}
  swaps = 0
  for i in range(len(pairs)):
    record = pairs[i]
    twins = [tok.decode(ids) for ids in record["hard_negative_ids"]]
    assert not set(twins) & captions  # never a held-out scene's caption
    swaps += sum(sorted(t.split()) == sorted(record["caption"].split()) and t != record["caption"]
                 and not set(t.split()) ^ set(record["caption"].split()) for t in twins)
  assert swaps > 20
  train = ShardSource(tmp_path / "s" / "train" / "pair")  # no binding swaps in training
  for i in range(len(train)):
    record = train[i]
    for ids in record["hard_negative_ids"]:
      twin = tok.decode(ids).split()
      assert sum(a != b for a, b in zip(twin, record["caption"].split())) == 1


def test_one_fact_in_two_wordings_is_one_scene():
  scene = next(s for s in synthetic.generate_scenes(50, 0, "train") if len(s["objects"]) == 2)
  a, b = scene["objects"]
  swapped = {"objects": [b, a], "relation": synthetic.INVERSE[scene["relation"]]}
  assert synthetic.scene_identity(swapped) == synthetic.scene_identity(scene)
  assert synthetic.caption(swapped) != synthetic.caption(scene)


def test_held_out_scenes_never_occur_in_train():
  train = {synthetic.scene_identity(s) for s in synthetic.generate_scenes(5000, 0, "train")}
  held = {synthetic.scene_identity(s) for s in synthetic.generate_scenes(500, 1, "eval")}
  assert len(held) > 200 and not train & held


def test_region_features_encode_the_class():
  featurizer = synthetic.RegionFeaturizer(16, seed=0, noise=0.3)
  rng = np.random.default_rng(0)
  scenes = list(synthetic.generate_scenes(200, 2, "train"))
  records = [featurizer(s, rng) for s in scenes]
  probs = np.concatenate([r["class_probs"] for r in records])
  classes = [synthetic.object_class(o["shape"], o["colour"]) for s in scenes for o in s["objects"]]
  assert np.mean(probs.argmax(-1) == classes) > 0.95
  np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)


def test_write_synthetic_small(tmp_path):
  from unimo_jax.data.synthetic.scene_dataset import write_synthetic
  metas = write_synthetic(tmp_path, pairs=300, eval_pairs=50, images=100, texts=200,
                          feature_dim=16, log=lambda *_: None)
  assert metas["train/pair"]["num_records"] == 300 and metas["eval/pair"]["num_records"] == 50
  tokenizer = load_tokenizer(tmp_path / "tokenizer.model")
  pairs = ShardSource(tmp_path / "train" / "pair")
  record = pairs[5]
  assert tokenizer.decode(record["caption_ids"]) == record["caption"]
  assert record["region_features"].shape[1] == 16 and record["pixels"].shape == (64, 64, 3)
  assert len(record["hard_negative_ids"]) >= 1 and len(record["retrieved_images"]) == 2
  assert all(0 <= i < 100 for i in record["retrieved_images"])
  train = {pairs[i]["scene"] for i in range(len(pairs))}
  held = ShardSource(tmp_path / "eval" / "pair")
  held_scenes = [held[i]["scene"] for i in range(len(held))]
  assert not train & set(held_scenes)
  assert len(set(held_scenes)) == len(held_scenes)  # one right answer per held-out caption


def test_object_tags_name_every_region_in_order():
  rng = np.random.default_rng(5)
  featurizer = synthetic.RegionFeaturizer(16, seed=1)
  for _ in range(20):
    scene = synthetic.sample_scene(rng)
    tags = synthetic.object_tags(featurizer(scene, rng)["class_probs"])
    assert tags == " ".join(f"{o['colour']} {o['shape']}" for o in scene["objects"])


def test_task_text_of_a_scene():
  """VQA answers and entailment labels follow the scene; every word is in the task vocabulary."""
  from unimo_jax.data.synthetic import task_text as synthetic_tasks
  rng = np.random.default_rng(6)
  vocabulary = {w for line in synthetic_tasks.vocabulary_lines(0) for w in line.split()}
  for _ in range(50):
    scene = synthetic.sample_scene(rng)
    for question, answers, kind in synthetic_tasks.vqa_questions(scene, rng):
      assert len(answers) == 10 and set(question.split()) <= vocabulary
      majority = collections.Counter(answers).most_common(1)[0][0]
      if kind == "count":
        assert majority in (str(len(scene["objects"])),
                            synthetic_tasks.NUMBER_WORDS[len(scene["objects"])])
      if kind == "colour":
        size, shape = question.split()[4:6]
        assert any(o["colour"] == majority and (o["size"], o["shape"]) == (size, shape)
                   for o in scene["objects"])
    described = {synthetic.describe(o) for o in scene["objects"]}
    labels = {}
    for statement, label in synthetic_tasks.entailment_statements(scene, rng):
      labels[label] = statement
      if statement.startswith("there is "):
        assert (statement[len("there is "):] in described) == (label == 0)
    assert sorted(labels) == [0, 1, 2]
