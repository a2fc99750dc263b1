"""Task metrics on hand-checked cases: BLEU / ROUGE-L / CIDEr-D wrappers, ROUGE and BLEU-4 for
text generation, the official VQA accuracy and normalisation, recall@K with several captions per
image, and the classification / regression metrics."""

import shutil

import numpy as np
import pytest

from unimo_jax.metrics.caption import caption_metrics, spice_available
from unimo_jax.metrics.classification import classification_metrics, regression_metrics
from unimo_jax.metrics.retrieval import retrieval_recall
from unimo_jax.metrics.text import bleu4, rouge_scores
from unimo_jax.metrics.vqa import normalize_answer, soft_target, vqa_accuracy

HAS_JAVA = shutil.which("java") is not None


def test_caption_metrics_by_hand():
  # candidate vs reference: 1-grams 5/6 match, 2-grams 3/5, same length (brevity penalty 1)
  #   BLEU-1 = 5/6, BLEU-2 = sqrt(5/6 * 3/5); LCS 5 of 6 both ways -> ROUGE-L 5/6
  out = caption_metrics({"a": "the cat sat on the mat"}, {"a": ["the cat is on the mat"]},
                        spice=False)
  assert out["BLEU-1"] == pytest.approx(5 / 6, abs=1e-6)
  assert out["BLEU-2"] == pytest.approx(np.sqrt(5 / 6 * 3 / 5), abs=1e-6)
  assert out["ROUGE-L"] == pytest.approx(5 / 6, abs=1e-6)
  assert out["BLEU-4"] < 1e-3  # no 4-gram matches


def test_cider_d_is_ten_for_exact_captions_and_zero_for_swapped_ones():
  refs = {"a": ["a red square on a table"], "b": ["two dogs run in the park"]}
  exact = caption_metrics({"a": "a red square on a table", "b": "two dogs run in the park"}, refs,
                          spice=False)
  assert exact["CIDEr-D"] == pytest.approx(10.0, abs=1e-6)  # cosine 1, no length penalty, x10
  assert exact["BLEU-4"] == pytest.approx(1.0, abs=1e-6)
  swapped = caption_metrics({"a": "two dogs run in the park", "b": "a red square on a table"},
                            refs, spice=False)
  assert swapped["CIDEr-D"] == pytest.approx(0.0, abs=1e-9)


@pytest.mark.skipif(not HAS_JAVA, reason="METEOR needs java")
def test_meteor_is_one_for_an_exact_caption():
  out = caption_metrics({"a": "a red square on a table"}, {"a": ["a red square on a table"]},
                        spice=False)
  assert 0.95 < out["METEOR"] <= 1.0


def test_spice_is_reported_unavailable_not_zero():
  ok, reason = spice_available()
  out = caption_metrics({"a": "a red square"}, {"a": ["a red square"]}, spice=not ok)
  if not ok:
    assert "SPICE" not in out and reason
    out = caption_metrics({"a": "a red square"}, {"a": ["a red square"]})
    assert "SPICE" not in out and out["unavailable"]["SPICE"] == reason


def test_caption_metrics_reject_missing_references():
  with pytest.raises(ValueError, match="without references"):
    caption_metrics({"a": "x"}, {"b": ["x"]})
  with pytest.raises(ValueError, match="at least one prediction"):
    caption_metrics({}, {"b": ["x"]})


def test_text_generation_metrics_by_hand():
  # rouge-score, stemmed: "cats sat" vs "cat sat down": unigrams {cat, sat} vs {cat, sat, down}
  # P 2/2, R 2/3 -> F1 0.8; bigram "cat sat" shared: P 1/1, R 1/2 -> F1 2/3
  out = rouge_scores(["cats sat"], ["cat sat down"])
  assert out["ROUGE-1"] == pytest.approx(80.0, abs=1e-6)
  assert out["ROUGE-2"] == pytest.approx(200 / 3, abs=1e-6)
  assert out["ROUGE-L"] == pytest.approx(80.0, abs=1e-6)
  assert bleu4(["the quick brown fox jumps"], ["the quick brown fox jumps"]) == pytest.approx(
      100.0, abs=1e-4)
  with pytest.raises(ValueError, match="one reference entry per prediction"):
    rouge_scores(["a"], [])


@pytest.mark.parametrize("matches,expected", [(0, 0.0), (1, 0.3), (2, 0.6), (3, 0.9), (4, 1.0),
                                              (10, 1.0)])
def test_vqa_accuracy_follows_the_official_formula(matches, expected):
  # leave-one-out over 10 annotators: with m matches, m subsets hold m-1 and 10-m hold m:
  #   acc = (m * min((m-1)/3, 1) + (10-m) * min(m/3, 1)) / 10
  answers = ["yes"] * matches + ["no"] * (10 - matches)
  assert vqa_accuracy("yes", answers) == pytest.approx(expected, abs=1e-9)


def test_vqa_normalisation_matches_the_official_rules():
  assert normalize_answer("Two") == "2"
  assert normalize_answer("the dog.") == "dog"
  assert normalize_answer("a red, square") == "red square"
  assert normalize_answer("dont know") == "don't know"
  assert normalize_answer("3.5") == "3.5"
  # differing ground-truth answers are normalised too: "two" and "2" both match "2"
  answers = ["two"] * 2 + ["2"] * 2 + ["three"] * 6
  assert vqa_accuracy("2", answers) == pytest.approx(1.0)
  target = soft_target(answers, {"2": 0, "3": 1, "4": 2})
  np.testing.assert_allclose(target, [1.0, 1.0, 0.0])
  assert vqa_accuracy("4", answers) == 0.0


def test_retrieval_recall_with_several_captions_per_image():
  # 2 images; captions 0, 1 describe image 0 and caption 2 image 1
  sim = np.array([[0.1, 0.9, 0.5],    # image 0: its best own caption (1) ranks first
                  [0.8, 0.2, 0.3]])   # image 1: own caption 2 scores 0.3 < 0.8 -> rank 2
  out = retrieval_recall(sim, [0, 0, 1], ks=(1, 2))
  assert out["i2t_R@1"] == 0.5 and out["i2t_R@2"] == 1.0
  # captions: 0 -> image 0 scores 0.1 < 0.8 (rank 2); 1 -> 0.9 > 0.2 (rank 1); 2 -> 0.3 < 0.5
  assert out["t2i_R@1"] == pytest.approx(1 / 3) and out["t2i_R@2"] == 1.0
  with pytest.raises(ValueError, match="have no text"):
    retrieval_recall(sim, [0, 0, 0])
  with pytest.raises(ValueError, match="non-empty"):
    retrieval_recall(np.zeros((2, 0)), [])


def test_classification_and_regression_metrics_by_hand():
  out = classification_metrics([1, 1, 0, 0], [1, 0, 0, 0])
  assert out["accuracy"] == 0.75
  # MCC = (TP*TN - FP*FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN)) = (1*2 - 0) / sqrt(1*2*2*3)
  assert out["matthews"] == pytest.approx(2 / np.sqrt(12))
  assert out["f1"] == pytest.approx(2 / 3)
  reg = regression_metrics([1.0, 2.0, 3.0, 4.0], [2.0, 4.0, 6.0, 9.0])
  assert reg["spearman"] == pytest.approx(1.0)
  assert reg["pearson"] == pytest.approx(np.corrcoef([1, 2, 3, 4], [2, 4, 6, 9])[0, 1])
  with pytest.raises(ValueError, match="equal non-empty"):
    classification_metrics([], [])
