"""read_artifact / write_artifact: validated, atomic, deterministic; read_pool formats."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import polars as pl
import pytest

from honing.artifacts.io import pool_text, read_artifact, read_pool, write_artifact, write_jsonl
from honing.artifacts.validation import ArtifactError
from schemas.registry import Prompts, SFTRecords


def prompts(n: int = 4) -> pl.DataFrame:
    return pl.DataFrame({
        "id": [f"{i:016x}" for i in range(n)],
        "prompt": [f"Ann has {i} coins ." for i in range(n)],
        "reference": [None] * n,
        "answer": [str(i) for i in range(n)],
        "task": ["micro"] * n,
        "metadata": [None] * n,
        "source": ["micro"] * n,
        "split": ["train"] * n,
    })


# ---------------------------------------------------------------- corrupt inputs


def corrupt(tmp_path, df: pl.DataFrame) -> str:
    """Write a frame as parquet bypassing validation (as a buggy stage or a hand edit would)."""
    path = tmp_path / "train.parquet"
    df.write_parquet(path)
    with pytest.raises(ArtifactError) as err:
        read_artifact(path, Prompts)
    return str(err.value).replace(str(tmp_path), "<tmp>")


def test_read_missing_column(tmp_path):
    assert "<tmp>/train.parquet: column 'split': missing column (expected String)" in corrupt(
        tmp_path, prompts().drop("split"))


def test_read_empty_prompt(tmp_path):
    df = prompts().with_columns(prompt=pl.Series(["a", "b", "", "d"]))
    assert ("<tmp>/train.parquet: row id '0000000000000002' column 'prompt': empty prompt "
            "(check not blank after stripping whitespace); found ''") in corrupt(tmp_path, df)


def test_read_wrong_type(tmp_path):
    df = prompts().with_columns(prompt=pl.Series([["a"], ["b"], ["c"], ["d"]]))
    text = corrupt(tmp_path, df)
    assert "<tmp>/train.parquet: row id '0000000000000000' column 'prompt': wrong type (expected String)" in text


def test_read_duplicate_id(tmp_path):
    df = prompts().with_columns(id=pl.Series(["a", "b", "c", "a"]))
    assert ("<tmp>/train.parquet: row id 'a' column 'id': duplicate id (check unique); "
            "found 'a' in rows 0, 3") in corrupt(tmp_path, df)


def test_read_missing_file(tmp_path):
    with pytest.raises(ArtifactError, match=r"nope\.parquet: no such file \(expected a parquet artifact of Prompts"):
        read_artifact(tmp_path / "nope.parquet", Prompts)


def test_read_a_file_that_is_not_parquet(tmp_path):
    path = tmp_path / "train.parquet"
    path.write_text('{"id": "x"}\n')
    with pytest.raises(ArtifactError, match=r"train\.parquet: not a readable parquet file"):
        read_artifact(path, Prompts)


# ---------------------------------------------------------------- atomic writes


def test_write_round_trips_in_schema_column_order(tmp_path):
    df = prompts().select(["split", "answer", "metadata", "id", "prompt", "source", "task", "reference"])
    path = tmp_path / "deep" / "train.parquet"
    write_artifact(df, path, Prompts)
    back = read_artifact(path, Prompts)
    assert back.columns == list(Prompts.to_schema().columns)
    assert back.equals(df.select(back.columns))


def test_failed_validation_writes_nothing(tmp_path):
    path = tmp_path / "train.parquet"
    bad = prompts().with_columns(split=pl.lit("test"))
    with pytest.raises(ArtifactError, match="unknown split"):
        write_artifact(bad, path, Prompts)
    assert list(tmp_path.iterdir()) == []


def test_failed_validation_leaves_an_existing_file_untouched(tmp_path):
    path = tmp_path / "train.parquet"
    write_artifact(prompts(), path, Prompts)
    before = path.read_bytes()
    with pytest.raises(ArtifactError):
        write_artifact(prompts(2).with_columns(prompt=pl.lit("")), path, Prompts)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["train.parquet"]


def test_failed_write_removes_its_temp_file(tmp_path, monkeypatch):
    path = tmp_path / "train.parquet"

    def explode(self, file, **kw):
        open(file, "wb").write(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(pl.DataFrame, "write_parquet", explode)
    with pytest.raises(OSError, match="disk full"):
        write_artifact(prompts(), path, Prompts)
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- determinism


def test_same_frame_same_bytes(tmp_path):
    a, b = tmp_path / "a.parquet", tmp_path / "b.parquet"
    write_artifact(prompts(100), a, Prompts)
    chunked = pl.concat([prompts(100)[:30], prompts(100)[30:]], rechunk=False)
    assert chunked.n_chunks() > 1
    write_artifact(chunked, b, Prompts)
    assert a.read_bytes() == b.read_bytes()


SFT_FRAME = (
    "import polars as pl\n"
    "m = lambda r, c: [{'role': r, 'content': c}]\n"
    "df = pl.DataFrame({'id': ['s1', 's2'], 'prompt': [m('user', 'q1'), m('user', 'q2')],\n"
    "    'completion': [m('assistant', 'a1'), m('assistant', 'a2')], 'kind': ['answer'] * 2,\n"
    "    'source_id': ['c1', 'c2'], 'iteration': ['it1'] * 2})\n"
)


def test_same_bytes_across_processes(tmp_path):
    """Another interpreter (another hash seed) writes the same bytes."""
    code = SFT_FRAME + (
        "import sys\n"
        "from honing.artifacts.io import write_artifact\n"
        "from schemas.registry import SFTRecords\n"
        "write_artifact(df, sys.argv[1], SFTRecords)\n"
    )
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "a.parquet")], check=True,
                   env={**os.environ, "PYTHONHASHSEED": "1"})
    scope: dict = {}
    exec(SFT_FRAME, scope)
    write_artifact(scope["df"], tmp_path / "b.parquet", SFTRecords)
    assert (tmp_path / "a.parquet").read_bytes() == (tmp_path / "b.parquet").read_bytes()
    back = read_artifact(tmp_path / "a.parquet", SFTRecords)
    assert back["completion"].to_list()[1] == [{"role": "assistant", "content": "a2"}]


def test_row_order_is_kept(tmp_path):
    df = prompts(10).reverse()
    write_artifact(df, tmp_path / "t.parquet", Prompts)
    assert read_artifact(tmp_path / "t.parquet", Prompts)["id"].to_list() == df["id"].to_list()


# ---------------------------------------------------------------- pools


def test_jsonl_round_trip_and_bad_lines(tmp_path):
    path = tmp_path / "pool.jsonl"
    write_jsonl([{"prompt": "a", "answer": 1}, {"prompt": "b"}], path)
    with open(path, "a") as f:
        f.write("\n{broken\n[1, 2]\n")
    records = read_pool(path)
    assert [r.where for r in records] == ["line 1", "line 2", "line 4", "line 5"]
    assert records[0].record == {"prompt": "a", "answer": 1}
    assert json.loads(records[1].raw) == {"prompt": "b"}
    assert records[2].record is None and records[2].error.startswith("invalid JSON")
    assert records[2].raw == "{broken"
    assert records[3].error == "not a JSON object (list)"


def test_json_csv_parquet_pools(tmp_path):
    (tmp_path / "p.json").write_text(json.dumps([{"prompt": "a"}, "x"]))
    records = read_pool(tmp_path / "p.json")
    assert records[0].record == {"prompt": "a"} and records[1].error == "not a JSON object (str)"

    (tmp_path / "p.csv").write_text('prompt,answer\n"hello, world",7\n,\n')
    records = read_pool(tmp_path / "p.csv")
    assert [r.where for r in records] == ["line 2", "line 3"]
    assert records[0].record == {"prompt": "hello, world", "answer": "7"}
    assert records[1].record == {"prompt": "", "answer": ""}  # empty cells stay empty strings

    pl.DataFrame({"prompt": ["a", None], "answer": [1, 2]}).write_parquet(tmp_path / "p.parquet")
    records = read_pool(tmp_path / "p.parquet")
    assert [r.where for r in records] == ["row 0", "row 1"]
    assert records[1].record == {"prompt": None, "answer": 2}


@pytest.mark.parametrize("name, content, words", [
    ("p.txt", "x", "unsupported prompt pool format '.txt'"),
    ("p.json", "{not json", "not valid JSON"),
    ("p.json", '{"prompt": "a"}', "expected a JSON array of objects, found dict"),
    ("p.parquet", "not parquet", "not a readable parquet file"),
])
def test_unreadable_pools_raise(tmp_path, name, content, words):
    (tmp_path / name).write_text(content)
    with pytest.raises(ArtifactError, match=words):
        read_pool(tmp_path / name)


def test_missing_pool_raises(tmp_path):
    with pytest.raises(ArtifactError, match="no such file"):
        read_pool(tmp_path / "none.jsonl")


def test_empty_pools_read_as_no_records(tmp_path):
    (tmp_path / "p.jsonl").write_text("\n  \n")
    (tmp_path / "p.csv").write_text("prompt,answer\n")
    pl.DataFrame({"prompt": pl.Series([], dtype=pl.String)}).write_parquet(tmp_path / "p.parquet")
    assert [read_pool(tmp_path / n) for n in ("p.jsonl", "p.csv", "p.parquet")] == [[], [], []]


@pytest.mark.parametrize("name, content", [
    ("p.jsonl", b'\xef\xbb\xbf{"prompt": "a"}\r\n{"prompt": "b"}\r\n'),
    ("p.json", b'\xef\xbb\xbf[{"prompt": "a"}, {"prompt": "b"}]'),
    ("p.csv", b"\xef\xbb\xbfprompt\r\na\r\nb\r\n"),
])
def test_a_byte_order_mark_is_skipped(tmp_path, name, content):
    (tmp_path / name).write_bytes(content)
    assert [r.record for r in read_pool(tmp_path / name)] == [{"prompt": "a"}, {"prompt": "b"}]


def test_invalid_utf8_in_jsonl_is_a_record_error_never_u_fffd(tmp_path):
    (tmp_path / "p.jsonl").write_bytes(b'{"prompt": "a"}\n{"prompt": "\xff\xfe"}\n{"prompt": "b"}\n')
    records = read_pool(tmp_path / "p.jsonl")
    assert [r.record for r in records] == [{"prompt": "a"}, None, {"prompt": "b"}]
    bad = records[1]
    assert (bad.where, bad.problem, bad.error) == ("line 2", "invalid_utf8", "invalid UTF-8 (byte 0xff at offset 12)")
    assert bad.raw == '{"prompt": "\\xff\\xfe"}' and "\ufffd" not in bad.raw


def test_invalid_utf8_in_csv_names_line_and_column(tmp_path):
    (tmp_path / "p.csv").write_bytes(b'prompt,answer\n"two\nlines",1\nok,caf\xe9\n')
    with pytest.raises(ArtifactError) as err:
        read_pool(tmp_path / "p.csv")
    assert str(err.value) == f"{tmp_path / 'p.csv'}: invalid UTF-8 at line 4, column 'answer' (byte 0xe9); " \
                             "the file must be UTF-8"
    (tmp_path / "h.csv").write_bytes(b"prompt,\xe9\nok,1\n")
    with pytest.raises(ArtifactError) as err:
        read_pool(tmp_path / "h.csv")
    assert str(err.value) == f"{tmp_path / 'h.csv'}: invalid UTF-8 at line 1 (the header) (byte 0xe9); " \
                             "the file must be UTF-8"


def test_invalid_utf8_in_a_parquet_string_column_names_row_and_column(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    bad = pa.array([b"fine", b"also fine", b"caf\xe9"], pa.binary()).view(pa.string())  # unchecked bytes
    pq.write_table(pa.table({"answer": ["1", "2", "3"], "prompt": bad}), tmp_path / "p.parquet")
    with pytest.raises(ArtifactError) as err:
        read_pool(tmp_path / "p.parquet")
    assert str(err.value) == f"{tmp_path / 'p.parquet'}: invalid UTF-8 at row 2, column 'prompt' " \
                             "(byte 0xe9 at offset 3)"


def test_csv_rows_are_named_by_the_line_they_start_on(tmp_path):
    long = "x" * 200_000  # over the csv module's default field limit
    (tmp_path / "p.csv").write_text(f'prompt,answer\n"one\n\ntwo",1\n\nthree,3,extra\nfour\n{long},5\n')
    records = read_pool(tmp_path / "p.csv")
    assert [r.where for r in records] == ["line 2", "line 6", "line 7", "line 8"]
    assert records[0].record == {"prompt": "one\n\ntwo", "answer": "1"}
    assert (records[1].problem, records[1].error) == ("wrong_field_count", "expected 2 fields (as the header), found 3")
    assert json.loads(records[1].raw) == ["three", "3", "extra"]
    assert records[2].error == "expected 2 fields (as the header), found 1"
    assert records[3].record == {"prompt": long, "answer": "5"}


def test_a_csv_header_naming_a_column_twice_is_an_error(tmp_path):
    (tmp_path / "p.csv").write_text("prompt,prompt\na,b\n")
    with pytest.raises(ArtifactError, match=r"line 1 \(the header\): column 'prompt' appears twice"):
        read_pool(tmp_path / "p.csv")


def test_invalid_utf8_in_json_names_the_line(tmp_path):
    (tmp_path / "p.json").write_bytes(b'[\n{"prompt": "a"},\n{"prompt": "\xc3("}\n]')
    with pytest.raises(ArtifactError) as err:
        read_pool(tmp_path / "p.json")
    assert str(err.value) == f"{tmp_path / 'p.json'}: invalid UTF-8 at line 3 (byte 0xc3 at offset 12 of the " \
                             "line); the file must be UTF-8"


def test_pool_text_is_strings_and_utf8_bytes_only():
    assert pool_text("a", "prompt") == ("a", None)
    assert pool_text("caf\u00e9".encode(), "prompt") == ("caf\u00e9", None)
    assert pool_text(b"caf\xe9", "prompt") == (None, ("invalid_utf8", "'prompt' is not valid UTF-8 (byte 0xe9 at "
                                                                     "offset 3)"))
    assert pool_text(42, "prompt") == (None, ("not_text", "'prompt' is not text: int"))
    assert pool_text("a\ud800", "prompt") == (None, ("invalid_utf8", "'prompt' is not valid Unicode (lone "
                                                                     "surrogate at offset 1)"))
