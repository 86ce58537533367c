"""Tables as they are now: a file, a folder of table parts, or a SQL source, read afresh with a content digest.

    --dataset FOLDER                          every `*.parquet`, `*.pq`, `*.csv` file in it (hidden files and `*.tmp`
                                              skipped), read in name order and concatenated; the parts share columns.
                                              `energy-loop serve --feedback-dir` writes such a folder.
    --dataset 'postgresql://USER[:PASSWORD]@HOST[:PORT]/DB?table=NAME'    a whole table (`SCHEMA.NAME` allowed)
    --dataset 'postgresql://USER@HOST/DB?query=SELECT ...'                what the query returns

A SQL source is any SQLAlchemy URL whose driver is installed; a bare `postgresql://` uses psycopg2 (a dependency;
SQLAlchemy 2.1 would pick psycopg 3), `postgresql+DRIVER://` names another. Other
parameters before `table=`/`query=` go to the driver (`?sslmode=require&table=t`). Everything after `query=` is the
query, verbatim (no URL decoding), so it comes last. A password is better left to libpq (`PGPASSWORD`, `~/.pgpass`):
in a URL it is masked as `***` wherever the source is shown, logged or tagged.

The digest (`content_digest`) is of the columns, their types and every row in the order read: the same data gives
the same digest, any changed, added or removed row another. The data cache is keyed on it, so a source is read on
every run and a change is never hidden behind a cache; rows come back from SQL in no set order unless the query
says `ORDER BY`.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from thresholds.errors import InputError

if TYPE_CHECKING:
    import pandas as pd

PART_SUFFIXES = (".parquet", ".pq", ".csv")
SQL_FORM = "a SQLAlchemy URL ending in ?table=NAME or ?query=SELECT ..., e.g. postgresql://user@host:5432/db?table=t"
CONNECT_TIMEOUT_S = 10  # an unreachable host is one line after this long, not a hang
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


@dataclass(frozen=True)
class TableRead:
    """A table as read now: the frame, where it came from (a path, or a URL without its password) and its digest."""

    frame: pd.DataFrame
    source: str
    source_type: str  # "local" (a file or a folder of parts) or "sql"
    name: str
    digest: str

    def record(self) -> dict[str, Any]:
        """What the loop run logs as its dataset input (registry `log_data_source`)."""
        return {
            "name": self.name,
            "source": self.source,
            "source_type": self.source_type,
            "digest": self.digest,
            "rows": len(self.frame),
            "columns": {str(c): str(t) for c, t in self.frame.dtypes.items()},
        }


def is_sql(dataset: str) -> bool:
    """A URL (`scheme://...`) rather than a name, a path or `PKG.MODULE:FUNCTION`."""
    return bool(_SCHEME.match(dataset))


def is_parts_folder(path: Path) -> bool:
    """A folder without sub-folders: table parts (a folder with class sub-folders is an image folder)."""
    return path.is_dir() and not any(p.is_dir() and not p.name.startswith(".") for p in path.iterdir())


def content_digest(frame: pd.DataFrame) -> str:
    """16 hex digits of SHA-256 over the column names and types and every row's hash, in order."""
    import pandas as pd

    digest = hashlib.sha256(json.dumps([[str(c), str(t)] for c, t in frame.dtypes.items()]).encode())
    try:
        rows = pd.util.hash_pandas_object(frame, index=False)
    except TypeError:  # unhashable cells (lists from a Parquet part): hashed as text
        rows = pd.util.hash_pandas_object(frame.astype(str), index=False)
    digest.update(rows.to_numpy().tobytes())
    return digest.hexdigest()[:16]


def read_table(path: Path) -> pd.DataFrame:
    """One CSV or Parquet file; an unreadable one is one `InputError` line."""
    import pandas as pd

    from tasks.data.preprocess import MIN_ROWS

    where = f"dataset {path}"
    if path.stat().st_size == 0:
        raise InputError(
            "file", path.name, f"a table with a header row and at least {MIN_ROWS} rows (the file is empty)", where
        )
    try:
        return pd.read_parquet(path) if path.suffix.lower() in (".parquet", ".pq") else pd.read_csv(path)
    except UnicodeDecodeError as exc:
        raise InputError("encoding", str(exc.reason), "a UTF-8 text file", where) from None
    except Exception as exc:  # pandas raises many types; one line for the user is what matters
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError("file", path.name, f"a readable CSV/Parquet table ({first})", where) from None


def part_files(folder: Path) -> list[Path]:
    """A parts folder's parts in name order (the order they are concatenated in); one line if there are none, or a
    file that is not one."""
    where = f"dataset {folder}"
    files = sorted(
        p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and not p.name.endswith(".tmp")
    )
    if not files:
        raise InputError(
            "dataset",
            str(folder),
            "a folder of table parts (*.parquet, *.csv) or an image folder (one subfolder per class); it is empty",
        )
    for path in files:
        if path.suffix.lower() not in PART_SUFFIXES:
            raise InputError(
                "part",
                path.name,
                f"a table part ({', '.join(PART_SUFFIXES)}); an image folder has one subfolder per class",
                where,
            )
    return files


def read_parts(folder: Path) -> TableRead:
    """Every part of a parts folder, concatenated in name order; parts with other columns are one line naming the
    part."""
    import pandas as pd

    where = f"dataset {folder}"
    files = part_files(folder)
    frames = [read_table(path) for path in files]
    columns = list(frames[0].columns)
    for path, frame in zip(files[1:], frames[1:], strict=True):
        if set(frame.columns) != set(columns):
            missing = [c for c in columns if c not in frame.columns]
            extra = [c for c in frame.columns if c not in columns]
            raise InputError(
                "part",
                path.name,
                f"the columns of {files[0].name} (it lacks {missing}, has {extra} beside them)",
                where,
            )
    frame = pd.concat([f[columns] for f in frames], ignore_index=True)
    name = folder.resolve().name
    return TableRead(frame, str(folder.resolve()), "local", name, content_digest(frame))


@dataclass(frozen=True)
class SqlSource:
    """A SQL source parsed: the engine's URL, the table or the query, and the source as shown (password masked)."""

    url: Any  # sqlalchemy.engine.URL
    table: str | None
    query: str | None
    shown: str
    shown_base: str  # the URL without table= or query=, password masked

    @property
    def name(self) -> str:
        """A name for the cache file and the default model name: the table's, else the database's."""
        raw = (self.table or "").rsplit(".", 1)[-1] or self.url.database or "query"
        return re.sub(r"[^A-Za-z0-9_.]", "_", raw)


def masked(dataset: str) -> str:
    """`dataset` as it may be shown: a URL's password replaced by `***`; anything else as it is."""
    if not is_sql(dataset):
        return dataset
    try:
        return parse_sql(dataset).shown
    except InputError:
        return _masked_text(dataset)


def _masked_text(url: str) -> str:
    """A URL's password masked in its text, for one that does not parse."""
    base, sep, rest = url.partition("?")
    return re.sub(r"(://[^:/@?]*:)[^@/?]*@", r"\1***@", base) + sep + rest


def parse_sql(dataset: str) -> SqlSource:
    """`URL?table=NAME` or `URL?query=SQL` (SQL verbatim, last); one line if it is neither."""
    from urllib.parse import parse_qsl, urlencode

    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    shown = _masked_text(dataset)
    base, _, params = dataset.partition("?")
    at = re.search(r"(^|&)query=", params)
    query = params[at.end() :].strip() if at else None
    driver_params = parse_qsl(params[: at.start()] if at else params)
    table = next((v for k, v in driver_params if k == "table"), None)
    driver_params = [(k, v) for k, v in driver_params if k != "table"]
    if (table is None) == (query is None) or not (table or query):
        raise InputError("dataset", shown, f"{SQL_FORM} (one of table= or query=, not empty)")
    try:
        url = make_url(base + ("?" + urlencode(driver_params) if driver_params else ""))
    except ArgumentError:
        raise InputError("dataset", shown, SQL_FORM) from None
    shown_base = url.render_as_string(hide_password=True)
    if url.drivername == "postgresql":
        url = url.set(drivername="postgresql+psycopg2")  # the driver the project installs (SQLAlchemy 2.1: psycopg)
    joiner = "&" if "?" in shown_base else "?"
    shown = shown_base + joiner + ("table=" + table if table else "query=" + str(query))
    return SqlSource(url, table, query, shown, shown_base)


def read_sql(dataset: str) -> TableRead:
    """The table or the query's result, read now; an unreachable database, a missing driver or a failing query is one
    line naming the source (password masked)."""
    import pandas as pd
    import sqlalchemy
    from sqlalchemy.pool import NullPool

    source = parse_sql(dataset)
    password = source.url.password

    def first_line(exc: BaseException) -> str:
        inner = getattr(exc, "orig", None) or exc
        line = (str(inner).strip().splitlines() or [type(inner).__name__])[0][:200]
        return line.replace(str(password), "***") if password else line

    connect_args = {"connect_timeout": CONNECT_TIMEOUT_S} if source.url.get_backend_name() == "postgresql" else {}
    try:
        engine = sqlalchemy.create_engine(source.url, poolclass=NullPool, connect_args=connect_args)
    except (ImportError, sqlalchemy.exc.NoSuchModuleError, sqlalchemy.exc.ArgumentError) as exc:
        raise InputError("dataset", source.shown, f"a SQL URL whose driver is installed ({first_line(exc)})") from None
    try:
        with engine.connect() as connection:
            if source.table is not None:
                schema, _, table = source.table.rpartition(".")
                frame = pd.read_sql_table(table, connection, schema=schema or None)
            else:
                frame = pd.read_sql_query(sqlalchemy.text(str(source.query)), connection)
    except (sqlalchemy.exc.SQLAlchemyError, ValueError, pd.errors.DatabaseError) as raised:
        # pandas wraps a failing query in its DatabaseError (an OSError); ValueError: its "Table ... not found"
        cause = raised.__cause__ if isinstance(raised, pd.errors.DatabaseError) and raised.__cause__ else raised
        if isinstance(cause, sqlalchemy.exc.OperationalError):  # unreachable, refused, no such database or user
            raise InputError("dataset", source.shown, f"a reachable database ({first_line(cause)})") from None
        field, value, what = (
            ("table", source.table, "a table that exists")
            if source.table
            else ("query", source.query, "a query that runs")
        )
        raise InputError(field, value, f"{what} ({first_line(cause)})", f"dataset {source.shown_base}") from None
    finally:
        engine.dispose()
    return TableRead(frame, source.shown, "sql", source.name, content_digest(frame))
