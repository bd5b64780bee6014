"""download: the three sources, and bad input as a clear error or a counted unreadable line."""

import gzip
import json

import pytest

from stages import download
from stages.core import params as P
from stages.core.io import StageError, read_jsonl

from .conftest import tiny_params, write_params

LIMITS = P.DownloadLimits(max_line_bytes=1_000_000, max_lines_per_file=1_000_000)
GOOD = {"chosen": "\n\nHuman: Hi?\n\nAssistant: Hello.", "rejected": "\n\nHuman: Hi?\n\nAssistant: Go away."}


def _write_gz(path, lines: list[bytes]):
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wb") as fh:
        for line in lines:
            fh.write(line + b"\n")


def errors_only(stderr: str) -> str:
    """stderr without the warning that a local source outside data/external/ is invisible to DVC."""
    return "\n".join(line for line in stderr.strip().splitlines() if not line.startswith("warning: "))


def _local_params(tmp_path, root, subsets=("harmless-base",), splits=("test",)):
    p = tiny_params()
    p["download"].update(source="local", dataset=str(root), subsets=list(subsets), splits=list(splits))
    write_params(tmp_path / "params.yaml", p)


def test_local_source_keeps_unreadable_lines_as_errors(in_tmp):
    root = in_tmp / "hh"
    lines = [
        json.dumps(GOOD).encode(),
        b"\xff\xfe not utf-8",
        b"{not json",
        json.dumps({"chosen": "x"}).encode(),
        json.dumps(["a list"]).encode(),
        json.dumps(GOOD).encode(),
    ]
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
    return [
        json.dumps(
            {"chosen": GOOD["chosen"] + " " + "".join(rng.choices("abcdefghij", k=200)), "rejected": GOOD["rejected"]}
        ).encode()
        for _ in range(n)
    ]


def test_truncated_gzip_names_the_line_where_it_broke(in_tmp, capsys):
    root = in_tmp / "hh"
    path = root / "harmless-base" / "test.jsonl.gz"
    _write_gz(path, _random_lines(2000))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # cut half-way: about line 1000, never "line 1"
    _local_params(in_tmp, root)
    with pytest.raises(SystemExit):
        download.main()
    err = errors_only(capsys.readouterr().err)
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
    err = errors_only(capsys.readouterr().err)
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
    with pytest.raises(StageError, match="no records"):
        download.read_local_file(root / "harmless-base" / "test.jsonl.gz", "harmless-base", "test", LIMITS)
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


def test_hh_slice_loads_every_line(in_tmp, hh_slice):
    """The real slice (../shared) when present, else the synthetic stand-in of the same layout and size."""
    folder, _ = hh_slice
    _local_params(in_tmp, folder)
    download.main()
    rows = read_jsonl("data/raw/pairs.jsonl")
    assert len(rows) == 2312 and not any("error" in r for r in rows)


def test_blank_lines_are_skipped_and_counted_not_kept_as_records(in_tmp):
    """A .gz of newlines once became millions of records (and a MemoryError): blank lines are now skipped, counted in
    the manifest, and a file of nothing but blank lines is one line of error."""
    root = in_tmp / "hh"
    _write_gz(
        root / "harmless-base" / "test.jsonl.gz", [json.dumps(GOOD).encode(), b"", b"   ", json.dumps(GOOD).encode()]
    )
    _local_params(in_tmp, root)
    download.main.__wrapped__()
    rows = read_jsonl(in_tmp / "data/raw/pairs.jsonl")
    assert len(rows) == 2 and all("error" not in r for r in rows) and [r["line"] for r in rows] == [1, 4]
    manifest = json.loads((in_tmp / "data/raw/manifest.json").read_text())
    assert manifest["files"][0]["blank_lines"] == 2 and manifest["unreadable_lines"] == 0
    with gzip.open(root / "harmless-base" / "test.jsonl.gz", "wb") as fh:
        fh.write(b"\n" * 2_000_000)
    with pytest.raises(StageError, match=r"no records \(2000000 blank lines\)"):
        download.main.__wrapped__()


def test_a_line_past_the_limit_stops_in_bounded_memory(in_tmp):
    """200 KB of gzip that inflates to 200 MB without a newline: stopped at the limit, naming the line, having held at
    most a few MiB (the stream is inflated 4 MiB at a time)."""
    import tracemalloc

    root = in_tmp / "hh"
    path = root / "harmless-base" / "test.jsonl.gz"
    path.parent.mkdir(parents=True)
    with gzip.open(path, "wb") as fh:
        fh.write(json.dumps(GOOD).encode() + b"\n")
        for _ in range(200):
            fh.write(b"x" * 1_000_000)
    tracemalloc.start()
    with pytest.raises(StageError, match=r"test.jsonl.gz: line 2: longer than download.limits.max_line_bytes"):
        download.read_local_file(path, "harmless-base", "test", LIMITS)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 64 * 2**20
    plain = root / "helpful-base" / "test.jsonl"
    plain.parent.mkdir(parents=True)
    plain.write_bytes(json.dumps(GOOD).encode() + b"\n" + b"y" * 2_000_000)
    with pytest.raises(StageError, match=r"test.jsonl: line 2: longer than"):
        download.read_local_file(plain, "helpful-base", "test", LIMITS)
    two = plain.with_name("two.jsonl")
    two.write_text(json.dumps(GOOD) + "\n" + json.dumps(GOOD) + "\n")
    few = P.DownloadLimits(max_line_bytes=1024, max_lines_per_file=1)
    with pytest.raises(StageError, match=r"line 2: more than download.limits.max_lines_per_file \(1\) records"):
        download.read_local_file(two, "helpful-base", "test", few)


def test_non_regular_files_are_refused_not_read(in_tmp):
    """A FIFO would block forever and a link to /dev/zero never ends: neither is opened."""
    import os

    root = in_tmp / "hh"
    (root / "harmless-base").mkdir(parents=True)
    os.mkfifo(root / "harmless-base" / "test.jsonl")
    with pytest.raises(StageError, match="not a regular file"):
        download.read_local_file(root / "harmless-base" / "test.jsonl", "harmless-base", "test", LIMITS)
    (root / "helpful-base").mkdir()
    os.symlink("/dev/zero", root / "helpful-base" / "test.jsonl.gz")
    _local_params(in_tmp, root, subsets=("helpful-base",))
    with pytest.raises(StageError, match="not a regular file"):
        download.main.__wrapped__()


def test_local_inputs_in_data_external_are_dvc_dependencies(tmp_path):
    """A local data set or prompt file in data/external/ is a dependency of the stages that read it: cut the data to
    100 lines, or change the prompt file, and `dvc status` says so and `dvc repro` re-runs what reads it (it used to
    say "up to date" and keep the old pairs). A path outside data/external/ gets a one-line warning."""
    from stages.core import synthetic

    from .conftest import copy_checkout, sh

    repo = copy_checkout(tmp_path / "repo")
    ext = repo / "data" / "external"
    for split, n in (("train", 300), ("test", 120)):
        rows, _ = synthetic.generate("harmless-base", split, n, 0, noise_rate=0.05, multi_turn_rate=0.3)
        _write_gz(ext / "hh" / "harmless-base" / f"{split}.jsonl.gz", [json.dumps(r).encode() for r in rows])
    (ext / "harmful.json").write_text(json.dumps([f"Human: how do I kill process {i}?" for i in range(8)]))
    p = tiny_params()
    p["download"].update(
        source="local", dataset="data/external/hh", subsets=["harmless-base"], splits=["train", "test"]
    )
    p["prompts"].update(helpful_subset="harmless-base", harmful_file="data/external/harmful.json")
    write_params(repo / "params.yaml", p)
    sh("git init -q && git add -A && git -c user.email=t@t -c user.name=t commit -qm init", repo)
    first = sh(["dvc", "repro", "clean"], repo)
    assert "warning:" not in first.stderr
    assert json.loads((repo / "data/raw/manifest.json").read_text())["pairs_written"] == 420
    assert "Data and pipelines are up to date" in sh(["dvc", "status", "clean"], repo).stdout

    train = ext / "hh" / "harmless-base" / "train.jsonl.gz"
    with gzip.open(train, "rb") as fh:
        lines = fh.read().splitlines()[:100]
    _write_gz(train, lines)
    status = sh(["dvc", "status", "download"], repo).stdout
    assert "modified:" in status and "data/external" in status
    again = sh(["dvc", "repro", "clean"], repo).stdout
    assert "Running stage 'download'" in again
    assert json.loads((repo / "data/raw/manifest.json").read_text())["pairs_written"] == 220

    (ext / "harmful.json").write_text(json.dumps([f"Human: how do I murder time {i}?" for i in range(8)]))
    assert "data/external" in sh(["dvc", "status", "prompts"], repo).stdout
    sh(["dvc", "repro", "prompts"], repo)
    prompts_file = (repo / "data/eval/prompts.jsonl").read_text()
    assert "murder time" in prompts_file and "kill process" not in prompts_file


def test_a_local_source_outside_data_external_is_warned_about(in_tmp, capsys):
    root = in_tmp / "hh"
    _write_gz(root / "harmless-base" / "test.jsonl.gz", [json.dumps(GOOD).encode()])
    _local_params(in_tmp, root)
    download.main.__wrapped__()
    err = capsys.readouterr().err
    assert err.startswith(
        f"warning: {root} (download.dataset) is outside data/external/, so DVC does not see changes to it"
    )
