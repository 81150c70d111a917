"""SQLite storage for rooms, participants, tracks, subscriptions, events and callback deliveries.

`Store(None)` keeps everything in memory; `Store(path)` writes a file so that a restarted server
still lists every room with its history. One table per record type of `model.py`; a record's
fields are the table's columns. Only the server's event-loop thread touches a Store.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import typing
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from .model import (
    CallbackDelivery,
    Participant,
    PublishedTrack,
    Room,
    RoomEvent,
    SubscribeRules,
    Subscription,
)

Record = TypeVar("Record")

#: record type -> (table, primary-key columns); tables with an `id` key number their rows.
TABLES: dict[type, tuple[str, tuple[str, ...]]] = {
    Room: ("rooms", ("sid",)),
    Participant: ("participants", ("sid",)),
    PublishedTrack: ("published_tracks", ("sid",)),
    Subscription: ("subscriptions", ("participant_sid", "sid")),
    SubscribeRules: ("subscribe_rules", ("participant_sid",)),
    RoomEvent: ("events", ("id",)),
    CallbackDelivery: ("callback_deliveries", ("id",)),
}

INDEXES = (
    "CREATE INDEX IF NOT EXISTS rooms_by_name ON rooms(unique_name, status)",
    "CREATE INDEX IF NOT EXISTS participants_by_room ON participants(room_sid, status)",
    "CREATE INDEX IF NOT EXISTS tracks_by_participant ON published_tracks(participant_sid)",
    "CREATE INDEX IF NOT EXISTS events_by_room ON events(room_sid)",
    "CREATE INDEX IF NOT EXISTS deliveries_by_room ON callback_deliveries(room_sid)",
)


@dataclasses.dataclass
class Page(typing.Generic[Record]):
    """One page of a listing and the key to continue after it (None on the last page)."""

    records: list[Record]
    next_key: int | None


def _column_kind(annotation: Any) -> str:
    text = str(annotation)
    if text.startswith(("list", "dict")):
        return "json"
    if "bool" in text:
        return "bool"
    if "int" in text:
        return "INTEGER"
    if "float" in text:
        return "REAL"
    return "TEXT"


class Store:
    def __init__(self, path: str | Path | None) -> None:
        self.path = None if path is None else Path(path)
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        target = ":memory:" if self.path is None else str(self.path)
        self._db = sqlite3.connect(target, isolation_level=None, check_same_thread=False)
        if self.path is not None:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
        self._columns: dict[type, dict[str, str]] = {}
        for record_type, (table, key) in TABLES.items():
            hints = typing.get_type_hints(record_type)
            columns = {f.name: _column_kind(hints[f.name]) for f in dataclasses.fields(record_type)}
            self._columns[record_type] = columns
            defs = []
            for name, kind in columns.items():
                if key == ("id",) and name == "id":
                    defs.append("id INTEGER PRIMARY KEY AUTOINCREMENT")
                else:
                    sql_type = {"json": "TEXT", "bool": "INTEGER"}.get(kind, kind)
                    defs.append(f"{name} {sql_type}")
            if key != ("id",):
                defs.append(f"PRIMARY KEY ({', '.join(key)})")
            self._db.execute(f"CREATE TABLE IF NOT EXISTS {table} ({', '.join(defs)})")
            self._add_missing_columns(table, columns)
        for statement in INDEXES:
            self._db.execute(statement)
        self._db.execute("CREATE TABLE IF NOT EXISTS settings (name TEXT PRIMARY KEY, value TEXT)")

    def _add_missing_columns(self, table: str, columns: dict[str, str]) -> None:
        """A file written by an older roomlab lacks the fields added since: add them (empty)."""
        present = {row[1] for row in self._db.execute(f"PRAGMA table_info({table})")}
        for name, kind in columns.items():
            if name not in present:
                sql_type = {"json": "TEXT", "bool": "INTEGER"}.get(kind, kind)
                self._db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {sql_type}")

    def close(self) -> None:
        self._db.close()

    # settings -------------------------------------------------------------------------------
    def setting(self, name: str) -> str | None:
        row = self._db.execute("SELECT value FROM settings WHERE name = ?", (name,)).fetchone()
        return None if row is None else row[0]

    def set_setting(self, name: str, value: str) -> None:
        self._db.execute(
            "INSERT INTO settings(name, value) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value = excluded.value",
            (name, value),
        )

    # records --------------------------------------------------------------------------------
    def save(self, record: Any) -> None:
        """Insert or update a record (its row keeps its place in listings)."""
        record_type = type(record)
        table, key = TABLES[record_type]
        columns = self._columns[record_type]
        names = [n for n in columns if not (key == ("id",) and n == "id")]
        values = [self._encode(columns[n], getattr(record, n)) for n in names]
        if key == ("id",) and record.id is None:
            cursor = self._db.execute(
                f"INSERT INTO {table} ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})",
                values,
            )
            record.id = cursor.lastrowid
            return
        if key == ("id",):
            names, values = ["id", *names], [record.id, *values]
        updates = ", ".join(f"{n} = excluded.{n}" for n in names if n not in key)
        self._db.execute(
            f"INSERT INTO {table} ({', '.join(names)}) VALUES ({', '.join('?' * len(names))}) "
            f"ON CONFLICT({', '.join(key)}) DO UPDATE SET {updates}",
            values,
        )

    def get(self, record_type: type[Record], **key: Any) -> Record | None:
        found = self.select(record_type, key, limit=1).records
        return found[0] if found else None

    def select(
        self,
        record_type: type[Record],
        where: dict[str, Any] | None = None,
        *,
        conditions: Sequence[tuple[str, Any]] = (),
        newest_first: bool = False,
        after: int | None = None,
        limit: int | None = None,
    ) -> Page[Record]:
        """Records matching `where` (equality) and `conditions` ((sql, value) pairs), in insertion
        order (or newest first), continuing after the row key `after`, at most `limit` of them."""
        table, _ = TABLES[record_type]
        columns = self._columns[record_type]
        clauses: list[str] = []
        params: list[Any] = []
        for name, value in (where or {}).items():
            if name not in columns:
                raise KeyError(name)
            clauses.append(f"{name} = ?")
            params.append(self._encode(columns[name], value))
        for sql, value in conditions:
            clauses.append(sql)
            params.append(value)
        if after is not None:
            clauses.append("rowid < ?" if newest_first else "rowid > ?")
            params.append(after)
        sql = f"SELECT rowid, {', '.join(columns)} FROM {table}"
        if clauses:
            sql += " WHERE " + " AND ".join(clauses)
        sql += " ORDER BY rowid " + ("DESC" if newest_first else "ASC")
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit + 1)
        rows = self._db.execute(sql, params).fetchall()
        more = limit is not None and len(rows) > limit
        rows = rows[:limit] if limit is not None else rows
        records = [self._decode(record_type, row[1:]) for row in rows]
        next_key = rows[-1][0] if more and rows else None
        return Page(records, next_key)

    def save_all(self, records: Iterable[Any]) -> None:
        self._db.execute("BEGIN")
        try:
            for record in records:
                self.save(record)
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # encoding -------------------------------------------------------------------------------
    @staticmethod
    def _encode(kind: str, value: Any) -> Any:
        if value is None:
            return None
        if kind == "json":
            return json.dumps(value, separators=(",", ":"))
        if kind == "bool":
            return int(bool(value))
        return value

    def _decode(self, record_type: type[Record], row: Sequence[Any]) -> Record:
        columns = self._columns[record_type]
        values = {}
        for (name, kind), value in zip(columns.items(), row, strict=True):
            if value is not None and kind == "json":
                value = json.loads(value)
            elif value is not None and kind == "bool":
                value = bool(value)
            values[name] = value
        return record_type(**values)
