"""Table readers by file extension, for LabelTable: every cell is read as text."""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    import pandas as pd


def _csv(path: str, sep: str = ",") -> pd.DataFrame:
    import pandas as pd

    return pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False)


def _typed(frame: pd.DataFrame) -> pd.DataFrame:
    # Typed formats store grades as numbers; integral floats (from missing cells) must still read "0", not "0.0".
    import pandas as pd

    for column in frame.columns:
        values = frame[column]
        if pd.api.types.is_float_dtype(values) and values.dropna().mod(1).eq(0).all():
            values = values.astype("Int64")
        frame[column] = values.astype(str).where(values.notna(), "")
    return frame


def _excel(path: str) -> pd.DataFrame:
    import pandas as pd

    return _typed(pd.read_excel(path))


def _parquet(path: str) -> pd.DataFrame:
    import pandas as pd

    return _typed(pd.read_parquet(path))


READERS: dict[str, Callable[[str], pd.DataFrame]] = {
    ".csv": _csv,
    ".tsv": lambda path: _csv(path, "\t"),
    ".txt": lambda path: _csv(path, "\t"),
    ".xlsx": _excel,
    ".xls": _excel,
    ".parquet": _parquet,
    ".pq": _parquet,
}


def register_reader(extension: str, reader: Callable[[str], pd.DataFrame]) -> None:
    """Read tables ending in `extension` (e.g. ".feather") with `reader(path) -> DataFrame of str`."""
    READERS[extension.lower()] = reader
