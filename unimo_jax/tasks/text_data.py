"""TSV readers of the text tasks (GLUE-style and seq2seq), with a header row naming the columns."""

import csv
import pathlib

from unimo_jax.errors import DataError


def read_tsv(path, required, optional=(), all_columns=False) -> list:
  """Rows of a TSV with a header as dicts of the named columns (every column, in header order,
  with all_columns); a missing column or a short row raises DataError naming the file and
  line."""
  path = pathlib.Path(path)
  if not path.is_file():
    raise DataError(f"{path}: expected a TSV file with a header row, found no such file")
  with open(path, encoding="utf-8", newline="") as f:
    reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
    header = next(reader, None)
    if header is None:
      raise DataError(f"{path}: expected a header row, found an empty file")
    missing = [c for c in required if c not in header]
    if missing:
      raise DataError(f"{path}: expected columns {list(required)}, found header {header}")
    named = header if all_columns else (*required, *optional)
    columns = {c: header.index(c) for c in named if c in header}
    rows = []
    for line, row in enumerate(reader, start=2):
      if len(row) != len(header):
        raise DataError(f"{path} line {line}: expected {len(header)} tab-separated fields, "
                        f"found {len(row)}")
      rows.append({c: row[i] for c, i in columns.items()})
  if not rows:
    raise DataError(f"{path}: expected at least one data row, found none")
  return rows
