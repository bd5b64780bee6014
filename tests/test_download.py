"""download: the three sources, and bad input as a clear error or a counted unreadable line."""
import gzip
import json

import pytest

from stages import download
from stages.core import params as P
from stages.core.io import StageError, read_jsonl

from .conftest import HH_DIR, tiny_params, write_params

GOOD = {"chosen": "\n\nHuman: Hi?\n\nAssistant: Hello.", "rejected": "\n\nHuman: Hi?\n\nAssistant: Go away."}


def _write_gz(path, lines: list[bytes]):
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wb") as fh:
        for line in lines:
            fh.write(line + b"\n")


def _local_params(tmp_path, root, subsets=("harmless-base",), splits=("test",)):
    p = tiny_params()
    p["download"].update(source="local", dataset=str(root), subsets=list(subsets), splits=list(splits))
    write_params(tmp_path / "params.yaml", p)


def test_local_source_keeps_unreadable_lines_as_errors(in_tmp):
    root = in_tmp / "hh"
    lines = [json.dumps(GOOD).encode(), b"\xff\xfe not utf-8", b"{not json", json.dumps({"chosen": "x"}).encode(),
             json.dumps(["a list"]).encode(), json.dumps(GOOD).encode()]
    _write_gz(root / "harmless-base" / "test.jsonl.gz", lines)
    _local_params(in_tmp, root)
    download.main()
    rows = read_jsonl("data/raw/pairs.jsonl")
    assert len(rows) == 6  # nothing lost
    errors = {r["line"]: r["error"] for r in rows if "error" in r}
    assert set(errors) == {2, 3, 4, 5}
    assert "UTF-8" in errors[2] and "JSON" in errors[3] and "rejected" in errors[4]
    manifest = json.loads((in_tmp / "data/raw/manifest.json").read_text())
    assert manifest["files"][0]["lines"] == 6 and len(manifest["files"][0]["sha256"]) == 64
    assert manifest["unreadable_lines"] == 4


def _random_lines(n: int) -> list[bytes]:
    """Lines that do not compress away, so a cut in the file lands among them."""
    import random

    rng = random.Random(0)
    return [json.dumps({"chosen": GOOD["chosen"] + " " + "".join(rng.choices("abcdefghij", k=200)),
                        "rejected": GOOD["rejected"]}).encode() for _ in range(n)]


def test_truncated_gzip_names_the_line_where_it_broke(in_tmp, capsys):
    root = in_tmp / "hh"
    path = root / "harmless-base" / "test.jsonl.gz"
    _write_gz(path, _random_lines(2000))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # cut half-way: about line 1000, never "line 1"
    _local_params(in_tmp, root)
    with pytest.raises(SystemExit):
        download.main()
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "test.jsonl.gz" in err and "truncated" in err
    line = int(err.split(": line ")[1].split(":")[0])
    assert 800 < line < 1200
    assert not (in_tmp / "data/raw/pairs.jsonl").exists()  # nothing written


def test_corrupt_gzip_is_a_one_line_error(in_tmp, capsys):
    root = in_tmp / "hh"
    path = root / "harmless-base" / "test.jsonl.gz"
    _write_gz(path, _random_lines(300))
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte: the CRC or the deflate stream breaks
    path.write_bytes(bytes(data))
    _local_params(in_tmp, root)
    with pytest.raises(SystemExit):
        download.main()
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "corrupt" in err and ": line " in err


def test_lone_surrogate_is_a_counted_malformed_line(in_tmp):
    """Valid JSON ("\\ud800"), but no UTF-8 file can hold it: writing it raised UnicodeEncodeError."""
    root = in_tmp / "hh"
    bad = b'{"chosen": "\\n\\nHuman: hi\\ud800\\n\\nAssistant: yo", "rejected": "\\n\\nHuman: hi\\n\\nAssistant: no"}'
    _write_gz(root / "harmless-base" / "test.jsonl.gz", [json.dumps(GOOD).encode(), bad])
    _local_params(in_tmp, root)
    download.main()
    rows = read_jsonl("data/raw/pairs.jsonl")
    assert len(rows) == 2 and "lone surrogate \\ud800" in rows[1]["error"] and "chosen" in rows[1]["error"]


def test_a_folder_named_like_the_data_file_and_an_unreadable_file(in_tmp, monkeypatch):
    root = in_tmp / "hh"
    (root / "harmless-base" / "test.jsonl.gz").mkdir(parents=True)
    _local_params(in_tmp, root)
    with pytest.raises(StageError) as exc:
        download.main.__wrapped__()
    assert str(exc.value) == f"{root / 'harmless-base' / 'test.jsonl.gz'}: is a folder, not a file"
    (root / "harmless-base" / "test.jsonl.gz").rmdir()
    _write_gz(root / "harmless-base" / "test.jsonl.gz", [json.dumps(GOOD).encode()])

    def denied(path, *a, **k):  # chmod 000 does not stop root, which CI runs as
        raise PermissionError(13, "Permission denied", str(path))

    from stages.core import io as sio

    monkeypatch.setattr(sio, "open", denied, raising=False)
    with pytest.raises(StageError) as exc:
        download.main.__wrapped__()
    assert str(exc.value) == f"{root / 'harmless-base' / 'test.jsonl.gz'}: permission denied (cannot read it)"
    assert not (in_tmp / "data/raw/pairs.jsonl").exists()


def test_empty_file_and_missing_paths_are_errors(in_tmp):
    root = in_tmp / "hh"
    _write_gz(root / "harmless-base" / "test.jsonl.gz", [])
    with pytest.raises(StageError, match="no lines"):
        download.read_local_file(root / "harmless-base" / "test.jsonl.gz", "harmless-base", "test")
    _local_params(in_tmp, in_tmp / "nowhere")
    with pytest.raises(StageError, match="data directory not found"):
        download.main.__wrapped__()
    _local_params(in_tmp, root, subsets=("helpful-base",))
    with pytest.raises(StageError, match="helpful-base.*not found"):
        download.main.__wrapped__()


def test_unknown_subset_is_rejected_by_params(in_tmp):
    p = tiny_params()
    p["download"]["subsets"] = ["harmles-base"]
    with pytest.raises(StageError, match="download.subsets.0"):
        P.validate(p)


def test_synthetic_source_is_deterministic_and_labelled(in_tmp):
    download.main()
    first = (in_tmp / "data/raw/pairs.jsonl").read_bytes()
    manifest = json.loads((in_tmp / "data/raw/manifest.json").read_text())
    assert manifest["synthetic"] is True and "synthetic" in manifest["dataset"]
    injected = sum(sum(f["noise_injected"].values()) for f in manifest["files"])
    assert injected > 0
    download.main()
    assert (in_tmp / "data/raw/pairs.jsonl").read_bytes() == first


def test_cap_per_file_is_a_seeded_sample_in_file_order():
    rows = [{"subset": "a", "split": "train", "line": i} for i in range(50)]
    capped = download.cap_per_file(rows, 10, seed=1)
    assert len(capped) == 10 and capped == sorted(capped, key=lambda r: r["line"])
    assert capped == download.cap_per_file(rows, 10, seed=1) != download.cap_per_file(rows, 10, seed=2)


@pytest.mark.skipif(not HH_DIR.exists(), reason="../shared/data/hh-rlhf not present")
def test_real_hh_slice_loads_every_line(in_tmp):
    _local_params(in_tmp, HH_DIR)
    download.main()
    rows = read_jsonl("data/raw/pairs.jsonl")
    assert len(rows) == 2312 and not any("error" in r for r in rows)
