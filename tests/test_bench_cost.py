"""The cost benchmark's readings: CPU by thread from /proc (named threads land in their group)
and py-spy stacks filed under request stages."""

from __future__ import annotations

import os
import threading
import time

from bitpatch.patches.tuning import name_os_thread

from bench.cost import thread_cpu
from bench.profile import summarize


def burn(name: str, seconds: float, done: threading.Event, release: threading.Event) -> None:
    name_os_thread(name)
    while time.thread_time() < seconds:
        pass
    done.set()
    release.wait(30)  # alive until read: /proc lists live threads only


def test_a_named_forward_thread_is_counted_as_forward():
    before = thread_cpu(os.getpid())
    done, release = threading.Event(), threading.Event()
    worker = threading.Thread(target=burn, args=("bp-forward-7", 0.3, done, release))
    worker.start()
    done.wait(30)
    after = thread_cpu(os.getpid())
    release.set()
    worker.join()
    assert after["forward"] - before["forward"] >= 0.2
    assert after["process"] >= after["forward"] + after["event_loop"]


def test_stacks_are_filed_under_the_first_stage_they_show(tmp_path):
    raw = tmp_path / "profile.raw"
    raw.write_text(
        "thread (1): bitpatch-inference_0;_work (server/batcher.py:1);"
        "MultiTaskEngine._run_backbone (patches/engine.py:2) 30\n"
        "thread (2): MainThread;run (uvicorn/main.py:1);RowEncoder.encode (x.py:3) 10\n"
        "thread (2): MainThread;run (uvicorn/main.py:1);handle (starlette/routing.py:4) 10\n"
    )
    found = summarize(raw)
    assert found["samples"] == 50
    assert found["threads"] == {"bitpatch-inference": 0.6, "MainThread": 0.4}
    assert found["stages"]["bitpatch-inference / forward: backbone"] == 0.6
    assert found["stages"]["MainThread / tokenize"] == 0.2
    assert found["stages"]["MainThread / ASGI: uvicorn, starlette, middleware"] == 0.2
