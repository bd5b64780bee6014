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


def test_truncated_gzip_is_a_one_line_error(in_tmp, capsys):
    root = in_tmp / "hh"
    path = root / "harmless-base" / "test.jsonl.gz"
    _write_gz(path, [json.dumps(GOOD).encode()] * 200)
    path.write_bytes(path.read_bytes()[:-40])
    _local_params(in_tmp, root)
    with pytest.raises(SystemExit):
        download.main()
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "test.jsonl.gz" in err and "truncated" in err and "line" in err


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
