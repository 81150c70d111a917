"""Columnar recorders: rows go into typed arrays, one per column; frames are built on demand.

No per-row Python object is kept: numbers and times live in `array` buffers, strings are
dictionary-encoded (a code per row, each distinct string stored once). Building a frame copies
the buffers into numpy and wraps them, so a million-row frame takes a fraction of a second.

Retention: a table keeps at most `max_rows` rows in memory; past that the buffered rows are
written to a Parquet file in the recorder's spill directory and the buffers start again, so a
long run uses bounded memory and loses nothing. `frame()` reads the spilled parts back.
"""

from __future__ import annotations

import tempfile
import threading
import time
from array import array
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .schema import TABLES, Column, columns

if TYPE_CHECKING:  # numpy and pandas load where frames are built: recording needs neither (bot workers)
    import pandas as pd

NULL_INT = -(2**63)  # also numpy's NaT when viewed as datetime64
NULL_CODE = -1
DEFAULT_MAX_ROWS = 2_000_000


def now_ns() -> int:
    return time.time_ns()


def to_ns(value: Any) -> int:
    """UNIX time as int nanoseconds, from int ns, float seconds, a datetime or a pandas Timestamp."""
    if value is None:
        return NULL_INT
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return NULL_INT if value != value else int(value * 1e9)
    import pandas as pd

    return int(pd.Timestamp(value).value)


class _Strings:
    """Dictionary encoding for one string column."""

    __slots__ = ("codes", "index", "values")

    def __init__(self) -> None:
        self.codes = array("i")
        self.index: dict[str, int] = {}
        self.values: list[str] = []

    def append(self, value: str | None) -> None:
        self.codes.append(self.code(value))

    def code(self, value: str | None) -> int:
        if value is None:
            return NULL_CODE
        code = self.index.get(value)
        if code is None:
            code = self.index[value] = len(self.values)
            self.values.append(value)
        return code

    def restart(self) -> _Strings:
        """New rows, same dictionary (so that codes handed out stay valid across a spill)."""
        fresh = _Strings()
        fresh.index, fresh.values = self.index, self.values
        return fresh

    def series(self, start: int = 0) -> pd.Categorical:
        import numpy as np
        import pandas as pd

        codes = np.frombuffer(self.codes, dtype=np.int32)[start:].copy()
        return pd.Categorical.from_codes(codes, categories=pd.Index(self.values, dtype="str"))


class Table:
    """One telemetry table's buffers."""

    def __init__(self, name: str, spill_dir: Path | None = None, max_rows: int = DEFAULT_MAX_ROWS) -> None:
        self.name = name
        self.columns: tuple[Column, ...] = columns(name)
        self.max_rows = max_rows
        self._spill_dir = spill_dir
        self._spilled: list[Path] = []
        self._spilled_rows = 0
        self._lock = threading.Lock()
        self._reset()

    def _reset(self) -> None:
        previous = getattr(self, "_buffers", None)
        self._buffers: list[Any] = []
        for number, column in enumerate(self.columns):
            if column.kind == "str":
                self._buffers.append(previous[number].restart() if previous else _Strings())
            elif column.kind == "float":
                self._buffers.append(array("d"))
            elif column.kind == "bool":
                self._buffers.append(array("b"))
            else:
                self._buffers.append(array("q"))
        self._rows = 0
        self._appenders = self._make_appenders()
        self._generation = getattr(self, "_generation", -1) + 1

    def _make_appenders(self) -> list[Any]:
        appenders = []
        for column, buffer in zip(self.columns, self._buffers, strict=True):
            if column.kind == "time":
                appenders.append(lambda v, b=buffer: b.append(to_ns(v)))
            elif column.kind == "int":
                appenders.append(lambda v, b=buffer: b.append(NULL_INT if v is None else int(v)))
            elif column.kind == "float":
                appenders.append(lambda v, b=buffer: b.append(float("nan") if v is None else float(v)))
            elif column.kind == "bool":
                appenders.append(lambda v, b=buffer: b.append(-1 if v is None else int(bool(v))))
            else:
                appenders.append(buffer.append)
        return appenders

    def __len__(self) -> int:
        return self._spilled_rows + self._rows

    def append(self, *values: Any) -> None:
        """One row, values in column order (None where unknown). Times: int ns or float seconds."""
        if len(values) != len(self.columns):
            raise ValueError(f"{self.name} has {len(self.columns)} columns, got {len(values)} values")
        with self._lock:
            for append, value in zip(self._appenders, values, strict=True):
                append(value)
            self._rows += 1
            if self._rows >= self.max_rows:
                self._spill()

    def bind(self, **constants: Any) -> Callable[..., None]:
        """A fast appender for rows whose other columns are fixed (a subscribed track's room,
        publisher, track, ...): call it with the remaining columns' values, in column order,
        already typed (times as int ns, ints, floats; no None). Constants are encoded once."""
        names = [c.name for c in self.columns]
        unknown = set(constants) - set(names)
        if unknown:
            raise ValueError(f"{self.name} has no column(s) {sorted(unknown)}")
        encoded: dict[int, Any] = {}
        for number, column in enumerate(self.columns):
            if column.name in constants:
                value = constants[column.name]
                if column.kind == "str":
                    encoded[number] = self._buffers[number].code(value)
                else:
                    encoded[number] = _encode(column.kind, value)
        # one straight-line function per binding (a loop over the columns costs more than the
        # appends themselves); its buffers' append methods are re-fetched after a spill
        free = [n for n in range(len(self.columns)) if n not in encoded]
        arguments = ", ".join(f"v{n}" for n in free)
        body = [
            f"def append({arguments}):",
            "    with lock:",
            "        if generation[0] != table._generation:",
            "            rebind()",
        ]
        for number in range(len(self.columns)):
            body.append(f"        a{number}({'k' + str(number) if number in encoded else 'v' + str(number)})")
        body += ["        table._rows += 1", "        if table._rows >= table.max_rows:", "            table._spill()"]
        namespace: dict[str, Any] = {"lock": self._lock, "table": self, "generation": [None]}
        namespace.update({f"k{n}": value for n, value in encoded.items()})

        def rebind() -> None:
            for number, (column, buffer) in enumerate(zip(self.columns, self._buffers, strict=True)):
                namespace[f"a{number}"] = buffer.codes.append if column.kind == "str" else buffer.append
            namespace["generation"][0] = self._generation

        namespace["rebind"] = rebind
        rebind()
        exec("\n".join(body), namespace)  # noqa: S102 - code built above from column numbers only
        return namespace["append"]  # type: ignore[no-any-return]

    def extend(self, rows: Iterable[Sequence[Any]]) -> None:
        for row in rows:
            self.append(*row)

    def _spill(self) -> None:
        if self._spill_dir is None:
            self._spill_dir = Path(tempfile.mkdtemp(prefix="roomlab-telemetry-"))
        path = self._spill_dir / f"{self.name}-{len(self._spilled):05d}.parquet"
        self._frame_of_buffers(0).to_parquet(path)
        self._spilled.append(path)
        self._spilled_rows += self._rows
        self._reset()

    def _frame_of_buffers(self, start: int) -> pd.DataFrame:
        import pandas as pd

        data: dict[str, Any] = {}
        for column, buffer in zip(self.columns, self._buffers, strict=True):
            data[column.name] = _column_values(column, buffer, start)
        return pd.DataFrame(data)

    def frame(self) -> pd.DataFrame:
        """Every row so far, as a DataFrame with the table's dtypes."""
        with self._lock:
            current = self._frame_of_buffers(0)
            spilled = list(self._spilled)
        if not spilled:
            return current
        parts = [read_parquet(p) for p in spilled] + [current]
        return _concat(parts, self.columns)

    def rows_since(self, start: int) -> tuple[dict[str, list[Any]], int]:
        """Rows from index `start` on, as JSON-ready columns, and the index to continue from."""
        with self._lock:
            total = self._spilled_rows + self._rows
            if start >= total:
                return {}, total
            if start >= self._spilled_rows:
                # straight from the buffers: this runs every half second in every bot worker
                offset = start - self._spilled_rows
                return {
                    column.name: _buffer_values(column, buffer, offset)
                    for column, buffer in zip(self.columns, self._buffers, strict=True)
                }, total
        older = self.frame().iloc[start:]
        return _jsonable(older), total


def _buffer_values(column: Column, buffer: Any, start: int) -> list[Any]:
    """Rows from `start` of one column, as JSON-ready values (None where unknown)."""
    if column.kind == "str":
        values = buffer.values
        return [None if code == NULL_CODE else values[code] for code in buffer.codes[start:]]
    raw = buffer[start:].tolist()
    if column.kind == "float":
        return [None if value != value else value for value in raw]
    if column.kind == "bool":
        return [None if value < 0 else bool(value) for value in raw]
    return [None if value == NULL_INT else value for value in raw]


def _encode(kind: str, value: Any) -> Any:
    """A value as its column's buffer stores it."""
    if kind == "time":
        return to_ns(value)
    if kind == "int":
        return NULL_INT if value is None else int(value)
    if kind == "float":
        return float("nan") if value is None else float(value)
    return -1 if value is None else int(bool(value))


def _column_values(column: Column, buffer: Any, start: int) -> Any:
    import numpy as np
    import pandas as pd

    if column.kind == "str":
        return buffer.series(start)
    if column.kind == "time":
        ns = np.frombuffer(buffer, dtype=np.int64)[start:].copy()
        return pd.DatetimeIndex(ns.view("datetime64[ns]")).tz_localize("UTC")
    if column.kind == "float":
        return np.frombuffer(buffer, dtype=np.float64)[start:].copy()
    if column.kind == "bool":
        raw = np.frombuffer(buffer, dtype=np.int8)[start:]
        return pd.arrays.BooleanArray(raw == 1, raw < 0)
    raw = np.frombuffer(buffer, dtype=np.int64)[start:]
    return pd.arrays.IntegerArray(raw.copy(), raw == NULL_INT)


def empty_frame(table: str) -> pd.DataFrame:
    return Table(table).frame()


def read_parquet(path: Path | str) -> pd.DataFrame:
    """A table written by roomlab, with its dtypes as the recorder makes them (Parquet gives an
    empty category list back as object; roomlab's are always str)."""
    import pandas as pd

    frame = pd.read_parquet(path)
    for name in frame.columns:
        series = frame[name]
        if isinstance(series.dtype, pd.CategoricalDtype) and series.cat.categories.dtype != "str":
            categories = pd.Index(series.cat.categories.astype("str"), dtype="str")
            frame[name] = pd.Categorical.from_codes(series.cat.codes.to_numpy(), categories=categories)
    return frame


def concat_frames(parts: list[pd.DataFrame], table: str) -> pd.DataFrame:
    """Rows of one table from several recorders, in time order, with the table's dtypes."""
    frame = _concat([p for p in parts if len(p)] or [Table(table).frame()], columns(table))
    return frame.sort_values("time", kind="stable", ignore_index=True)


def _concat(parts: list[pd.DataFrame], table_columns: tuple[Column, ...]) -> pd.DataFrame:
    import pandas as pd

    frame = pd.concat(parts, ignore_index=True)
    for column in table_columns:
        if column.kind == "str" and not isinstance(frame[column.name].dtype, pd.CategoricalDtype):
            values = frame[column.name].astype("str").where(frame[column.name].notna())
            frame[column.name] = pd.Categorical(
                values, categories=pd.Index(sorted(values.dropna().unique()), dtype="str")
            )
    return frame


def _jsonable(frame: pd.DataFrame) -> dict[str, list[Any]]:
    import pandas as pd

    out: dict[str, list[Any]] = {}
    for name in frame.columns:
        series = frame[name]
        if isinstance(series.dtype, pd.DatetimeTZDtype):
            values = series.array.asi8.tolist()
            out[name] = [None if v == NULL_INT else v for v in values]
        else:
            out[name] = [None if pd.isna(v) else (v.item() if hasattr(v, "item") else v) for v in series.tolist()]
    return out


class Telemetry:
    """The live tables of one server, room or simulation."""

    def __init__(self, spill_dir: str | Path | None = None, max_rows: int = DEFAULT_MAX_ROWS) -> None:
        directory = None if spill_dir is None else Path(spill_dir)
        self.tables: dict[str, Table] = {name: Table(name, directory, max_rows) for name in TABLES}

    def record(self, table: str, *values: Any) -> None:
        self.tables[table].append(*values)

    def frame(self, name: str) -> pd.DataFrame:
        """The table `name` as a DataFrame, at any moment, without stopping anything."""
        columns(name)
        return self.tables[name].frame()

    def frames(self) -> dict[str, pd.DataFrame]:
        return {name: table.frame() for name, table in self.tables.items()}

    def __repr__(self) -> str:
        sizes = ", ".join(f"{name}={len(table)}" for name, table in self.tables.items())
        return f"<Telemetry {sizes}>"
