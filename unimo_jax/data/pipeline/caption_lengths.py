"""How many captions a run will cut: captions longer than data.max_caption_length with [CLS]
and [SEP], counted over the first records of a pair dataset at start-up and reported in one
line (`python -m unimo_jax.data coco-images --max-caption-length` counts a whole set)."""

CHECKED_RECORDS = 1000


def longer_captions(source, max_length: int, limit: int = CHECKED_RECORDS) -> tuple:
  """(captions longer than max_length with [CLS] and [SEP], captions checked) over the first
  `limit` records of `source` that carry caption_ids."""
  longer = checked = 0
  for i in range(min(limit, len(source))):
    ids = source[i].get("caption_ids")
    if ids is None:
      continue
    checked += 1
    longer += len(ids) + 2 > max_length
  return longer, checked


def report_longer_captions(source, max_length: int, where: str,
                           limit: int = CHECKED_RECORDS) -> int:
  """Prints one line when some of the first `limit` captions will be cut; returns their count."""
  longer, checked = longer_captions(source, max_length, limit)
  if longer:
    first = "" if checked == len(source) else "the first "
    print(f"{where}: {longer} of {first}{checked} captions are longer than "
          f"data.max_caption_length={max_length} tokens with [CLS] and [SEP]; a run cuts them",
          flush=True)
  return longer
