"""Pairs CSV files: the rows of ``file_x,file_y[,same]``, read one way for every command.

``edge verify --pairs`` (:func:`edge.verify.read_pairs`) and ``edge eval --pairs``
(:func:`edge.evaluate.read_labelled_pairs`) read the same kind of file; what
each accepts in the ``same`` column, and the words of its refusals, are its
own. What they share is here: the file read as UTF-8 (a byte-order mark, as
Excel writes, skipped), header names stripped, the header checked for the
columns a command needs, and an unreadable file or broken CSV refused in one
line naming the file.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterator
from pathlib import Path

from .errors import ImageError


def pair_rows(
    csv_path: str | os.PathLike[str], columns: tuple[str, ...], header_message: str
) -> Iterator[tuple[int, dict[str, str | None], list[str]]]:
    """``(line number, row, header)`` for each data row of the pairs CSV at ``csv_path``.

    A header lacking any of ``columns`` is refused with ``"{csv_path}: {header_message}"``.
    Rows come one at a time, so a command refuses its first bad row before
    any later line is parsed; a CSV error is an :class:`~edge.errors.ImageError`.
    """
    p = Path(csv_path)
    try:
        text = p.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise ImageError(
            f"{p}: cannot read pairs file ({getattr(e, 'strerror', None) or e})"
        ) from None
    try:
        reader = csv.DictReader(io.StringIO(text))
        fields = [f.strip() for f in reader.fieldnames or []]
        reader.fieldnames = fields
        if not set(columns) <= set(fields):
            raise ImageError(f"{p}: {header_message}")
        for n, row in enumerate(reader, start=2):
            yield n, row, fields
    except csv.Error as e:
        raise ImageError(f"{p}: not a readable CSV ({e})") from None
