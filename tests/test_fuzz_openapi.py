"""Schemathesis fuzzes every route of /openapi.json on a real server: no answer may be a 5xx."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from bitpatch.testing import ServerProcess

from tiny import make_model, random_patch

TOKEN = "fuzz-admin-token"
SECONDS = os.environ.get("BITPATCH_FUZZ_SECONDS", "20")


@pytest.mark.slow
def test_fuzzing_finds_no_server_error(tiny_bert_dir, tmp_path):
    cli = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    assert cli, "schemathesis is a dev dependency: pip install -e '.[dev]'"
    model = make_model("bert")[0]
    flags = ("--no-demo-patches", "--admin-token", TOKEN, "--max-inputs", "8")
    with ServerProcess(tiny_bert_dir, tmp_path / "store", *flags) as srv:
        with httpx.Client(base_url=srv.url, headers={"Authorization": f"Bearer {TOKEN}"}) as http:
            for task, labels in (("a", 2), ("b", 1)):
                data = random_patch(model, task, labels, "mean", seed=labels).to_bytes()
                assert http.put(f"/tasks/{task}/patch", content=data).status_code == 201
        run = subprocess.run(
            [cli, "run", f"{srv.url}/openapi.json", "--checks", "not_a_server_error"]
            + ["--max-time", SECONDS, "--header", f"Authorization: Bearer {TOKEN}"]
            + ["--workers", "1", "--request-timeout", "30", "--suppress-health-check", "all"],
            capture_output=True,
            text=True,
            timeout=int(SECONDS) * 4 + 120,
        )
        assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:] + srv.logs()[-3000:]
        assert "event=unexpected_error" not in srv.logs()
        print(run.stdout[-3000:])
