"""How the loaders read their files: text decoded strictly (a bad byte is a
`DataError` naming its line; a UTF-8 byte-order mark is accepted), a last
line without a newline warned about (the file may have been cut mid-line),
duplicate CSV columns refused, and the rows read and skipped logged at INFO
and kept in the dataset's `load_stats`.
"""

from __future__ import annotations

import csv
import io
import logging
import warnings
from typing import Dict, Iterator, List, Tuple

from retrieval_tf.datasets.errors import malformed

logger = logging.getLogger("retrieval_tf.datasets")


def read_text(path: str, encoding: str = "utf-8",
              line_based: bool = True) -> str:
  """The decoded text of `path`.

  Args:
    path: the file.
    encoding: its encoding; "utf-8" also accepts (and drops) a byte-order
      mark.
    line_based: warn (`warnings.warn` and a logged warning) when the last
      line has no newline, the sign of a file cut mid-line.

  Returns:
    The text, newlines untranslated.

  Raises:
    DataError: `path:line: byte 0x.. at byte column c is not valid ...` for
      the first byte that does not decode.
  """
  with open(path, "rb") as f:
    data = f.read()
  try:
    text = data.decode("utf-8-sig" if encoding == "utf-8" else encoding)
  except UnicodeDecodeError as e:
    line = data.count(b"\n", 0, e.start) + 1
    column = e.start - data.rfind(b"\n", 0, e.start)
    raise malformed(path, line, f"byte 0x{data[e.start]:02x} at byte column "
                    f"{column} is not valid {encoding}; re-save the file as "
                    f"{encoding}") from None
  if line_based and text and not text.endswith(("\n", "\r")):
    message = (f"{path}:{text.count(chr(10)) + 1}: the last line has no "
               "newline, so the file may have been cut mid-line; check that "
               "it is complete")
    warnings.warn(message, stacklevel=2)
    logger.warning(message)
  return text


def read_lines(path: str, stats: Dict[str, Dict[str, int]],
               encoding: str = "utf-8") -> List[str]:
  """The lines of a line-per-record text file (see `read_text`), without
  their `\\n` / `\\r\\n`; blank lines are kept (so that list index + 1 is the
  line number) and counted as skipped in `stats` (see `record_rows`).

  Raises:
    DataError: a byte that does not decode, or no non-blank line.
  """
  text = read_text(path, encoding)
  lines = [line.rstrip("\r") for line in text.split("\n")]
  if lines and not lines[-1]:
    lines.pop()
  blank = sum(1 for line in lines if not line.strip())
  if blank == len(lines):
    raise malformed(path, None, "the file is empty")
  record_rows(stats, path, len(lines) - blank, blank)
  return lines


def csv_rows(path: str, text: str, delimiter: str = ","
             ) -> Iterator[Tuple[int, List[str]]]:
  """`(line number, fields)` of each CSV record of `text` (the line number is
  that of the record's last line, as `csv.reader.line_num`); empty records
  come as `[]`.

  Raises:
    DataError: a record the `csv` module cannot parse.
  """
  reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
  while True:
    try:
      row = next(reader)
    except StopIteration:
      return
    except csv.Error as e:
      raise malformed(path, reader.line_num,
                      f"unreadable CSV record ({e})") from None
    yield reader.line_num, row


def check_header(path: str, fields: List[str]) -> None:
  """`DataError` when a CSV header names a column twice (a reader would
  silently keep only one of them)."""
  first = {}
  for position, name in enumerate(fields, 1):
    if name in first:
      raise malformed(path, 1, f"column {name!r} appears twice in the header "
                      f"(columns {first[name]} and {position}); rename or "
                      "remove one")
    first[name] = position


def record_rows(stats: Dict[str, Dict[str, int]], path: str, read: int,
                skipped: int) -> None:
  """Logs `path: N rows read, M skipped` at INFO and stores
  `stats[path] = {"rows_read": N, "rows_skipped": M}`."""
  stats[path] = {"rows_read": read, "rows_skipped": skipped}
  logger.info("%s: %d rows read, %d skipped", path, read, skipped)
