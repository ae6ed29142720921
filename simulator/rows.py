"""Fixed-width byte rows filled from lookup tables, block by block.

Writing one field down a whole chunk touches every cache line of the
chunk's rows once per field; writing all fields of a small block of rows
before moving on keeps the block in cache. That is most of the speed of
the JSON Lines writer.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["BLOCK_ROWS", "FieldFill", "field", "fill_rows"]

BLOCK_ROWS = 4096


def field(rows: np.ndarray, offset: int, width: int) -> np.ndarray:
    """A writable 1-D `S<width>` view of bytes [offset, offset+width) of every row of `rows`.

    `rows` must be a 2-D uint8 array whose rows are contiguous.
    """
    if rows.ndim != 2 or rows.dtype != np.uint8 or rows.strides[1] != 1:
        raise ValueError("rows must be a 2-D uint8 array with contiguous rows")
    if offset < 0 or width < 1 or offset + width > rows.shape[1]:
        raise ValueError("field outside the row")
    return rows[:, offset : offset + width].view(f"S{width}")[:, 0]


@dataclass(frozen=True)
class FieldFill:
    """Write `table[index[i]]` at `column` of row i (of the rows where `where[i]`, if given)."""

    column: int
    table: np.ndarray
    index: np.ndarray
    where: np.ndarray | None = None

    @property
    def width(self) -> int:
        return self.table.dtype.itemsize


def fill_rows(
    rows: np.ndarray,
    template: np.ndarray,
    fills: list[FieldFill],
    template_columns: tuple[int, int] | None = None,
    block_rows: int = BLOCK_ROWS,
) -> None:
    """Set every row to `template`, then apply `fills`, one block of rows at a time.

    With `template_columns=(a, b)` only those columns are reset: for rows
    that already hold the template from an earlier fill with the same layout.
    """
    a, b = template_columns if template_columns is not None else (0, rows.shape[1])
    for fill in fills:
        if fill.column + fill.width > rows.shape[1]:
            raise ValueError("fill outside the row")
    for start in range(0, rows.shape[0], block_rows):
        stop = min(start + block_rows, rows.shape[0])
        block = rows[start:stop]
        if b > a:
            block[:, a:b] = template[a:b]
        for fill in fills:
            target = field(block, fill.column, fill.width)
            index = fill.index[start:stop]
            if fill.where is None:
                np.take(fill.table, index, out=target, mode="clip")
            else:
                chosen = np.flatnonzero(fill.where[start:stop])
                target[chosen] = fill.table[index[chosen]]
