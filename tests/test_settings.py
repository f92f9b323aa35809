"""Settings: environment, flags, validation, and the README documents every field."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from bitpatch.patches.tuning import KERNEL_CACHE_VARIABLES, bound_kernel_caches
from bitpatch.server.settings import Settings, add_settings_args, settings_from_args


def parse(argv: list[str]) -> Settings:
    parser = argparse.ArgumentParser()
    add_settings_args(parser)
    return settings_from_args(parser.parse_args(argv))


def test_flags_override_environment(monkeypatch):
    monkeypatch.setenv("BITPATCH_PORT", "9001")
    monkeypatch.setenv("BITPATCH_MAX_BATCH_SIZE", "8")
    settings = parse(["--port", "9002", "--no-demo-patches"])
    assert settings.port == 9002 and settings.max_batch_size == 8
    assert settings.demo_patches is False


def test_bad_values_are_refused():
    with pytest.raises(ValidationError, match="dtype must be one of"):
        Settings(dtype="int8")
    with pytest.raises(ValidationError, match="at least 8 characters"):
        Settings(admin_token="short")
    with pytest.raises(ValidationError):
        Settings(max_batch_size=0)
    with pytest.raises(ValidationError, match="forward must be one of"):
        Settings(forward="unpadded")
    with pytest.raises(ValidationError, match="greater than 0"):
        Settings(gil_switch_ms=0)


def test_readme_documents_every_setting():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    for name in Settings.model_fields:
        assert f"`BITPATCH_{name.upper()}`" in readme, name
        assert f"`--{name.replace('_', '-')}" in readme, name


def test_kernel_cache_bounds_both_cpu_kernel_caches(monkeypatch):
    for name in KERNEL_CACHE_VARIABLES:
        monkeypatch.setenv(name, "1024")  # restored after the test
    settings = parse(["--kernel-cache", "8"])
    bound_kernel_caches(settings.kernel_cache)
    assert {os.environ[name] for name in KERNEL_CACHE_VARIABLES} == {"8"}
    with pytest.raises(ValidationError):
        Settings(kernel_cache=-1)
