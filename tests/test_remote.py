"""Sharing results through a DVC remote, as a team would (docs/sharing.md), with a real local-folder remote:
`dvc push`, a fresh clone, `dvc pull`, then nothing is stale, `dvc repro` runs nothing, and `dvc plots diff`
against the pushed revision works on a machine that never ran the pipeline."""

import json

from .conftest import sh

GIT = "git -c user.email=t@t -c user.name=t"


def test_push_clone_pull_round_trip(tiny_repo, tmp_path):
    repo, _ = tiny_repo
    remote = tmp_path / "dvc-remote"
    sh(["dvc", "remote", "add", "--default", "--force", "shared", str(remote)], repo)
    sh(f"git add .dvc/config && {GIT} commit -qm 'DVC remote'", repo)
    pushed = sh(["dvc", "push"], repo).stdout
    assert "pushed" in pushed and remote.is_dir()
    pushed_rev = sh(["git", "rev-parse", "HEAD"], repo).stdout.strip()

    clone = tmp_path / "clone"  # a teammate's machine: the git repository only, an empty DVC cache
    sh(["git", "clone", "-q", str(repo), str(clone)], tmp_path)
    assert not (clone / "models").exists()
    sh(["dvc", "pull"], clone)
    assert (clone / "models/sft_dpo/model.safetensors").exists()
    assert "Data and pipelines are up to date" in sh(["dvc", "status"], clone).stdout
    assert "Running stage" not in sh(["dvc", "repro"], clone).stdout

    # another teammate who has not pulled: the plots of the pushed revision still come (from the remote)
    fresh = tmp_path / "fresh"
    sh(["git", "clone", "-q", str(repo), str(fresh)], tmp_path)
    sh(f"{GIT} commit -q --allow-empty -m 'a change'", fresh)
    plots = json.loads(sh(["dvc", "plots", "diff", pushed_rev, "--json"], fresh).stdout)["data"]
    loss = plots["Training loss"][0]
    assert pushed_rev in loss["revisions"] or pushed_rev[:7] in loss["revisions"]
    assert any(v["rev"] in (pushed_rev, pushed_rev[:7]) for v in loss["content"]["data"]["values"])
