"""The command line: help text on every option, and server errors as one clear line."""

from __future__ import annotations

import argparse

import pytest

from bitpatch.cli import build_parser
from bitpatch.cli import main as cli_main
from bitpatch.testing import ServerProcess

from tiny import make_model, random_patch


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_every_option_has_help_text():
    for name, sub in subcommands(build_parser()).items():
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            assert action.help, f"bitpatch {name} {action.option_strings or action.dest}"


def test_serve_help_shows_each_default_once():
    text = subcommands(build_parser())["serve"].format_help()
    assert "default default" not in text
    assert "(env BITPATCH_BACKBONE; default 'default')" in " ".join(text.split())


def test_push_reads_the_token_from_the_environment(tiny_bert_dir, tmp_path, monkeypatch, capsys):
    token = "env-admin-token"
    path = tmp_path / "envtask.safetensors"
    random_patch(make_model("bert")[0], "envtask", 2, "cls", seed=1).save(path)
    store = tmp_path / "store"
    with ServerProcess(tiny_bert_dir, store, "--no-demo-patches", "--admin-token", token) as srv:
        with pytest.raises(SystemExit) as refused:
            cli_main(["push", str(path), "--url", srv.url])
        assert refused.value.code == 1
        err = capsys.readouterr().err
        assert "401" in err and "Bearer" in err and "Traceback" not in err
        monkeypatch.setenv("BITPATCH_ADMIN_TOKEN", token)
        with pytest.raises(SystemExit) as pushed:
            cli_main(["push", str(path), "--url", srv.url])
        assert pushed.value.code == 0
        assert '"version": 1' in capsys.readouterr().out


def test_unreachable_server_is_one_line(tmp_path, capsys):
    path = tmp_path / "t.safetensors"
    random_patch(make_model("bert")[0], "t", 2, "cls", seed=1).save(path)
    with pytest.raises(SystemExit) as done:
        cli_main(["push", str(path), "--url", "http://127.0.0.1:9"])
    assert done.value.code == 1 and "cannot reach the server" in capsys.readouterr().err


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as done:
        cli_main(argv)
    out, err = capsys.readouterr()
    return done.value.code, out, err


def test_push_a_candidate_roll_it_out_and_promote_it(tiny_bert_dir, tmp_path, capsys):
    import json

    model = make_model("bert")[0]
    paths = []
    for seed in (1, 2):
        paths.append(tmp_path / f"v{seed}.safetensors")
        random_patch(model, "roll", 2, "cls", seed=seed).save(paths[-1])
    with ServerProcess(tiny_bert_dir, tmp_path / "store", "--no-demo-patches") as srv:
        url = ["--url", srv.url]
        assert run_cli(["push", str(paths[0]), *url], capsys)[0] == 0
        code, out, _ = run_cli(["push", str(paths[1]), "--candidate", *url], capsys)
        assert code == 0 and json.loads(out)["active"] is False
        code, _, err = run_cli(["rollout", "roll", "--canary", "2", *url], capsys)
        assert code == 2 and "--percent" in err
        code, out, _ = run_cli(
            ["rollout", "roll", "--canary", "2", "--percent", "30", *url], capsys
        )
        assert code == 0 and json.loads(out)["canary"] == {"version": 2, "percent": 30.0}
        code, out, _ = run_cli(["rollout", "roll", "--status", *url], capsys)
        assert json.loads(out)["active"] == 1
        code, out, _ = run_cli(["rollout", "roll", "--promote", *url], capsys)
        assert code == 0 and json.loads(out)["active"] == 2
        code, _, err = run_cli(["rollout", "roll", "--promote", *url], capsys)
        assert code == 1 and "409" in err and "no rollout" in err
