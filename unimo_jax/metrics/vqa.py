"""VQA accuracy as the official evaluator (VQA v2 `vqaEval.py`) computes it.

Answers are normalised (punctuation, number words to digits, articles dropped, contractions
restored); a prediction's accuracy on one question is the mean, over the 10 leave-one-annotator-out
subsets of the ground-truth answers, of min(#matching answers in the subset / 3, 1).
"""

import functools
import re

import numpy as np

_CONTRACTIONS = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've",
    "couldnt": "couldn't", "didnt": "didn't", "doesnt": "doesn't", "dont": "don't",
    "hadnt": "hadn't", "hasnt": "hasn't", "havent": "haven't", "hed": "he'd", "hes": "he's",
    "howd": "how'd", "howll": "how'll", "hows": "how's", "Im": "I'm", "Ive": "I've",
    "isnt": "isn't", "itd": "it'd", "itll": "it'll", "its": "it's", "lets": "let's",
    "mightnt": "mightn't", "mightve": "might've", "mustnt": "mustn't", "mustve": "must've",
    "neednt": "needn't", "shant": "shan't", "shed": "she'd", "shes": "she's",
    "shouldve": "should've", "shouldnt": "shouldn't", "thatll": "that'll", "thats": "that's",
    "thered": "there'd", "theres": "there's", "theyd": "they'd", "theyll": "they'll",
    "theyre": "they're", "theyve": "they've", "wasnt": "wasn't", "wed": "we'd", "weve": "we've",
    "werent": "weren't", "whatll": "what'll", "whatre": "what're", "whats": "what's",
    "whatve": "what've", "whens": "when's", "whered": "where'd", "wheres": "where's",
    "whereve": "where've", "whod": "who'd", "wholl": "who'll", "whos": "who's", "whove": "who've",
    "whyll": "why'll", "whyre": "why're", "whys": "why's", "wont": "won't", "wouldve": "would've",
    "wouldnt": "wouldn't", "yall": "y'all", "youd": "you'd", "youll": "you'll",
    "youre": "you're", "youve": "you've",
}
_NUMBERS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4",
            "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
_ARTICLES = {"a", "an", "the"}
_PUNCTUATION = [";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<",
                "@", "`", ",", "?", "!"]
_PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")
_COMMA_STRIP = re.compile(r"(\d)(,)(\d)")


def _punctuation(text: str) -> str:
  out = text
  for p in _PUNCTUATION:
    if (p + " " in text or " " + p in text) or _COMMA_STRIP.search(text) is not None:
      out = out.replace(p, "")
    else:
      out = out.replace(p, " ")
  return _PERIOD_STRIP.sub("", out)


def _digits_and_articles(text: str) -> str:
  words = []
  for word in text.lower().split():
    word = _NUMBERS.get(word, word)
    if word not in _ARTICLES:
      words.append(_CONTRACTIONS.get(word, word))
  return " ".join(words)


@functools.lru_cache(maxsize=1 << 16)
def normalize_answer(answer: str) -> str:
  """The official normalisation of a predicted answer (cached: a dataset's answers repeat, and
  a training split's targets normalise every annotator's answer)."""
  answer = answer.replace("\n", " ").replace("\t", " ").strip()
  return _digits_and_articles(_punctuation(answer))


def vqa_accuracy(prediction: str, answers) -> float:
  """One question: `answers` are the (10) annotators' answers."""
  answers = [a.replace("\n", " ").replace("\t", " ").strip() for a in answers]
  if not answers:
    raise ValueError("vqa_accuracy: expected the annotators' answers, found none")
  prediction = normalize_answer(prediction)
  if len(set(answers)) > 1:  # as the official script: gt answers normalised when they differ
    answers = [normalize_answer(a) for a in answers]
  scores = []
  for left_out in range(len(answers)):
    others = answers[:left_out] + answers[left_out + 1:]
    scores.append(min(1.0, sum(a == prediction for a in others) / 3.0))
  return float(np.mean(scores))


def soft_target(answers, vocabulary: dict) -> np.ndarray:
  """Training target [answers in vocabulary]: each candidate's official accuracy, so the BCE
  target of an answer three annotators gave is 1 and of one they gave once is 0.3."""
  target = np.zeros(len(vocabulary), np.float32)
  normalised = [normalize_answer(a) for a in answers]
  for answer in set(normalised):
    if answer in vocabulary:
      target[vocabulary[answer]] = vqa_accuracy(answer, normalised)
  return target
