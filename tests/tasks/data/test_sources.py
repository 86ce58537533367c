"""Tables as they are now: a folder of table parts and a SQL source, read afresh, with a content digest.

The SQL tests run against the machine's PostgreSQL (127.0.0.1:5432, trust auth, database `test`), each on a table of
its own that it drops; a bad source goes through the CLI in a subprocess, as a user meets it."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tasks.data.datasets import load_cached, prepare, resolve_source
from tasks.data.sources import content_digest, masked, parse_sql, read_parts, read_sql
from tests.conftest import require, run_loop_cli
from thresholds.errors import InputError

PG_DATABASE = "postgresql://postgres@127.0.0.1:5432/test"


def _rows(start: int, n: int) -> pd.DataFrame:
    rng = np.random.default_rng(start)
    return pd.DataFrame(
        {"x0": rng.normal(size=n), "x1": rng.normal(size=n), "label": (np.arange(start, start + n) % 2).astype(int)}
    )


def _feedback(folder: Path, parts: list[pd.DataFrame]) -> Path:
    """Parts as `energy-loop serve --feedback-dir` writes them, plus what a reader must skip."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, part in enumerate(parts):
        part.to_parquet(folder / f"part-{1_700_000_000_000 + i}-{i:06d}.parquet", index=False)
    (folder / ".part-1800000000000-000099.parquet.tmp").write_bytes(b"half a part")  # a part being written
    (folder / ".DS_Store").write_bytes(b"\0")
    return folder


def test_parts_are_concatenated_in_name_order_skipping_hidden_and_tmp(tmp_path: Path) -> None:
    a, b = _rows(0, 30), _rows(30, 20)
    folder = _feedback(tmp_path / "feedback", [a, b])
    b.to_csv(folder / "part-1700000000002-000002.csv", index=False)  # a CSV part beside the Parquet ones
    read = read_parts(folder)
    expected = pd.concat([a, b, b], ignore_index=True)
    pd.testing.assert_frame_equal(read.frame, expected)
    assert read.source == str(folder.resolve()) and read.name == "feedback" and read.source_type == "local"
    assert read.record()["rows"] == 70 and read.digest == content_digest(expected)


def test_digest_follows_the_content_not_the_path(tmp_path: Path) -> None:
    a = _feedback(tmp_path / "a", [_rows(0, 30)])
    b = _feedback(tmp_path / "b", [_rows(0, 30)])
    assert read_parts(a).digest == read_parts(b).digest  # same rows, another folder
    before = read_parts(a).digest
    _rows(30, 1).to_parquet(a / "part-1700000000005-000005.parquet", index=False)  # one labelled row more
    assert read_parts(a).digest != before
    changed = _rows(0, 30)
    changed.loc[3, "label"] = 1 - changed.loc[3, "label"]  # one label corrected
    assert content_digest(changed) != content_digest(_rows(0, 30))
    assert content_digest(_rows(0, 30).rename(columns={"x0": "z"})) != content_digest(_rows(0, 30))


def test_a_parts_folder_is_prepared_afresh_on_every_run(tmp_path: Path) -> None:
    folder = _feedback(tmp_path / "feedback", [_rows(0, 40)])
    assert resolve_source(str(folder)) == ("feedback", folder)
    first = prepare(str(folder), tmp_path / "cache", target="label")
    data = load_cached(str(first))
    assert data.task == "classification" and len(data.y_train) + len(data.y_val) + len(data.y_test) == 40
    assert data.source["rows"] == 40 and data.source["source"] == str(folder.resolve())
    assert prepare(str(folder), tmp_path / "cache", target="label") == first  # unchanged: the same cache
    _rows(40, 20).to_parquet(folder / "part-1700000000009-000009.parquet", index=False)
    second = prepare(str(folder), tmp_path / "cache", target="label")
    assert second != first
    assert load_cached(str(second)).source["rows"] == 60
    assert load_cached(str(second)).source["digest"] != data.source["digest"]


def test_an_image_folder_stays_an_image_folder(tmp_path: Path) -> None:
    (tmp_path / "imgs" / "cat").mkdir(parents=True)
    (tmp_path / "imgs" / "dog").mkdir()
    with pytest.raises(InputError, match="class folder = 'cat': expected at least one PNG or JPEG image"):
        prepare(str(tmp_path / "imgs"), tmp_path / "cache")


@pytest.mark.parametrize(
    ("make", "needle"),
    [
        (lambda d: None, "expected a folder of table parts (*.parquet, *.csv) or an image folder"),
        (lambda d: (d / "notes.txt").write_text("x"), "part = 'notes.txt': expected a table part"),
        (
            lambda d: (
                _rows(0, 30).to_parquet(d / "part-1.parquet", index=False),
                _rows(0, 30).rename(columns={"x1": "z"}).to_parquet(d / "part-2.parquet", index=False),
            ),
            "part = 'part-2.parquet': expected the columns of part-1.parquet (it lacks ['x1'], has ['z'] beside them)",
        ),
    ],
    ids=["empty", "not a table", "mismatched columns"],
)
def test_bad_parts_folders_are_one_line(tmp_path: Path, make: object, needle: str) -> None:
    folder = tmp_path / "feedback"
    folder.mkdir()
    (folder / ".part-9.parquet.tmp").write_bytes(b"")  # only a part being written: still empty
    make(folder)  # type: ignore[operator]
    with pytest.raises(InputError) as caught:
        prepare(str(folder), tmp_path / "cache", target="label")
    assert needle in str(caught.value) and "\n" not in str(caught.value)


def test_sql_urls_are_parsed_and_their_password_masked() -> None:
    table = parse_sql("postgresql://ana:s3cret@db.example:5432/shop?sslmode=require&table=public.feedback")
    assert table.table == "public.feedback" and table.query is None and table.name == "feedback"
    assert table.shown == "postgresql://ana:***@db.example:5432/shop?sslmode=require&table=public.feedback"
    assert table.url.query == {"sslmode": "require"}
    query = parse_sql("postgresql://ana@db/shop?query=SELECT a+b AS s, c FROM t WHERE d LIKE 'x%' AND e = 1")
    assert query.query == "SELECT a+b AS s, c FROM t WHERE d LIKE 'x%' AND e = 1" and query.name == "shop"
    assert masked("postgresql://ana:s3cret@db/shop?table=t") == "postgresql://ana:***@db/shop?table=t"
    assert masked("digits") == "digits"
    for bad in ("postgresql://ana:s3cret@db/shop", "postgresql://ana:s3cret@db/shop?table=&query="):
        with pytest.raises(InputError, match="expected a SQLAlchemy URL ending in") as caught:
            parse_sql(bad)
        assert "s3cret" not in str(caught.value)


def _psql(sql: str) -> None:
    subprocess.run(
        ["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", "test", "-v", "ON_ERROR_STOP=1", "-qc", sql],
        check=True,
        capture_output=True,
    )


@pytest.fixture
def pg_table() -> Iterator[str]:
    """A table of its own in the machine's PostgreSQL database `test`, dropped after the test."""
    try:
        _psql("select 1")
    except (OSError, subprocess.CalledProcessError):
        require(False, "PostgreSQL on 127.0.0.1:5432 with trust auth for user postgres and a database `test`")
    name = f"energy_loop_{uuid.uuid4().hex[:10]}"
    _psql(f"CREATE TABLE {name} (id serial PRIMARY KEY, x0 double precision, x1 double precision, label int)")
    try:
        yield name
    finally:
        _psql(f"DROP TABLE IF EXISTS {name}")


def _insert(table: str, frame: pd.DataFrame) -> None:
    values = ", ".join(f"({r.x0!r}, {r.x1!r}, {int(r.label)})" for r in frame.itertuples())
    _psql(f"INSERT INTO {table} (x0, x1, label) VALUES {values}")


def test_a_postgres_table_is_read_afresh_with_a_new_digest(pg_table: str, tmp_path: Path) -> None:
    _insert(pg_table, _rows(0, 30))
    url = f"{PG_DATABASE}?table={pg_table}"
    first = read_sql(url)
    assert len(first.frame) == 30 and list(first.frame.columns) == ["id", "x0", "x1", "label"]
    assert first.source == url and first.source_type == "sql" and first.name == pg_table
    # verbatim after query=: a `+`, a `%` and a `::` cast reach PostgreSQL as written
    again = read_sql(
        f"{PG_DATABASE}?query=SELECT x0 + 0 AS x0, x1, label::int FROM {pg_table} WHERE 'ab' LIKE 'a%' ORDER BY id"
    )
    np.testing.assert_allclose(again.frame["x0"], _rows(0, 30)["x0"])
    cache = prepare(url, tmp_path / "cache", target="label")
    _insert(pg_table, _rows(30, 10))
    second = read_sql(url)
    assert len(second.frame) == 40 and second.digest != first.digest
    fresh = prepare(url, tmp_path / "cache", target="label")  # read again, not the earlier cache
    assert fresh != cache and load_cached(str(fresh)).source["digest"] == second.digest


@pytest.mark.parametrize(
    ("dataset", "needle"),
    [
        (  # nothing listens on port 9
            "postgresql://ana:s3cret@127.0.0.1:9/test?table=t",
            "dataset = 'postgresql://ana:***@127.0.0.1:9/test?table=t': expected a reachable database (",
        ),
        (
            f"{PG_DATABASE}?query=SELECT no_such_column FROM pg_class",
            f"dataset {PG_DATABASE}: query = 'SELECT no_such_column FROM pg_class': expected a query that runs (",
        ),
        ("empty-folder", "dataset = 'empty-folder': expected a folder of table parts"),
    ],
    ids=["unreachable", "failing query", "empty parts folder"],
)
def test_a_bad_source_is_one_line_exit_2_before_the_flow(tmp_path: Path, dataset: str, needle: str) -> None:
    (tmp_path / "empty-folder").mkdir()
    done = run_loop_cli(tmp_path, "--dataset", dataset, "--target", "label")
    output = done.stdout + done.stderr
    assert done.returncode == 2, output
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("energy-loop: error: ") and needle in lines[0], output
    assert "s3cret" not in output and "Traceback" not in output
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "prefect-home").exists()  # nothing logged
