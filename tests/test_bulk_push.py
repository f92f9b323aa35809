"""`bitpatch push` with many files against a real server: folders expanded, concurrent uploads,
a summary of created / unchanged / refused with reasons, exit 1 when any is refused."""

from __future__ import annotations

import json

import httpx
import pytest

from bitpatch.bulk_push import outcome_of, patch_files, retry_after
from bitpatch.cli import main as cli_main
from bitpatch.testing import ServerProcess

from tiny import make_model, random_patch

TOKEN = "bulk-admin-token"


def run_cli(argv: list[str], capsys) -> tuple[int, dict | None, str]:
    with pytest.raises(SystemExit) as done:
        cli_main(argv)
    out, err = capsys.readouterr()
    return done.value.code, json.loads(out) if out.strip() else None, err


@pytest.fixture(scope="module")
def server(tiny_bert_dir, tmp_path_factory):
    store = tmp_path_factory.mktemp("bulk") / "store"
    with ServerProcess(tiny_bert_dir, store, "--no-demo-patches", "--admin-token", TOKEN) as srv:
        yield srv


def test_a_folder_is_pushed_concurrently_and_summarised(server, tmp_path, capsys):
    model = make_model("bert")[0]
    folder = tmp_path / "patches"
    (folder / "nested").mkdir(parents=True)
    for i in range(24):
        where = folder / "nested" if i % 3 else folder
        name = f"bulk{i:02d}"
        random_patch(model, name, 2, "cls", seed=i).save(where / f"{name}.safetensors")
    (folder / "notes.txt").write_text("not a patch: not pushed")
    url = ("--url", server.url, "--token", TOKEN, "--jobs", "6")
    code, summary, err = run_cli(["push", str(folder), *url], capsys)
    assert code == 0, err
    assert summary["files"] == 24 and summary["created"] == 24 and summary["refused"] == 0
    assert "24/24" in err  # the progress bar
    listed = httpx.get(f"{server.url}/tasks", params={"prefix": "bulk"},
                       headers={"Authorization": f"Bearer {TOKEN}"}).json()  # fmt: skip
    assert listed["total"] == 24
    code, again, _ = run_cli(["push", str(folder), *url], capsys)
    assert code == 0 and again["unchanged"] == 24 and again["created"] == 0


def test_refusals_are_counted_with_their_reasons_and_exit_1(server, tmp_path, capsys):
    good = tmp_path / "good.safetensors"
    random_patch(make_model("bert")[0], "mixed-good", 2, "cls", seed=1).save(good)
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"\x00" * 40)
    foreign = tmp_path / "foreign.safetensors"
    random_patch(make_model("roberta")[0], "mixed-foreign", 2, "cls", seed=2).save(foreign)
    url = ("--url", server.url, "--token", TOKEN)
    code, summary, _ = run_cli(["push", str(good), str(corrupt), str(foreign), *url], capsys)
    assert code == 1
    assert summary["created"] == 1 and summary["refused"] == 2
    reasons = {r["file"].rsplit("/", 1)[1]: r for r in summary["refusals"]}
    assert reasons["corrupt.safetensors"]["code"] == "unreadable"
    assert reasons["foreign.safetensors"]["status"] == 409  # another backbone's patch
    assert "backbone" in reasons["foreign.safetensors"]["message"]
    code, summary, _ = run_cli(["push", str(good), str(good), "--url", server.url], capsys)
    assert code == 1 and {r["status"] for r in summary["refusals"]} == {401}  # no token


def test_bad_arguments_are_one_clear_line(tmp_path, capsys):
    code, _, err = run_cli(["push", str(tmp_path / "absent"), "--url", "http://127.0.0.1:9"],
                           capsys)  # fmt: skip
    assert code == 2 and "no such file or folder" in err
    (tmp_path / "a.safetensors").write_bytes(b"x")
    argv = ["push", str(tmp_path), "--task", "t", "--url", "http://127.0.0.1:9"]
    code, _, err = run_cli(argv, capsys)
    assert code == 2 and "--task names the task of one file" in err


def test_transient_answers_are_retried_after_the_servers_delay():
    busy = httpx.Response(503, headers={"Retry-After": "2"})
    assert retry_after(busy, 0) == 2.0 and retry_after(None, 2) == 1.0
    refused = httpx.Response(429, json={"error": {"code": "rate_limited", "message": "slow"}})
    pushed = outcome_of("f", "t", refused, "")
    assert pushed.outcome == "refused" and pushed.code == "rate_limited" and pushed.status == 429
    assert outcome_of("f", "t", None, "ConnectError").code == "unreachable"


def test_folders_expand_to_their_patch_files(tmp_path):
    (tmp_path / "b").mkdir()
    for name in ("b/2.safetensors", "1.safetensors", "b/readme.md"):
        (tmp_path / name).write_bytes(b"")
    assert [p.relative_to(tmp_path).as_posix() for p in patch_files([tmp_path])] == [
        "1.safetensors",
        "b/2.safetensors",
    ]
