"""The batcher: one forward for many tasks' rows, length bucketing, overload, draining stop."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import httpx
import pytest
import torch

from bitpatch.patches.backbone import backbone_from_model
from bitpatch.patches.encoding import encode_inputs
from bitpatch.patches.engine import MultiTaskEngine
from bitpatch.server.core.batcher import DEFAULT_EXPRESS_ROWS, WIDEN_ROWS, Batcher, BatchPlan
from bitpatch.server.core.registry import Lease
from bitpatch.server.core.scheduling import Flow, pick_rows
from bitpatch.server.errors import DeadlineExceeded, Overloaded, TaskQueueFull
from bitpatch.server.metrics import Metrics
from bitpatch.server.settings import Settings
from bitpatch.testing import ServerProcess

from tiny import make_model, random_patch


class RecordingEngine(MultiTaskEngine):
    """The real engine, recording each forward's keys; can be held at a gate."""

    def __init__(self, backbone, forward="packed"):
        super().__init__(backbone, forward)
        self.calls: list[list[str]] = []
        self.threads: list[tuple[int, int]] = []  # (worker thread, its torch threads) per forward
        self.lengths: list[list[int]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.delay = 0.0
        self.inside = 0  # forwards waiting at the gate right now
        self.held: set[str] | None = None  # keys whose forwards wait at the gate (None: all)
        self._count_lock = threading.Lock()

    def forward_by_task(self, batch, keys):
        with self._count_lock:
            self.inside += 1
        if self.held is None or self.held & set(keys):
            self.gate.wait(10)
        with self._count_lock:
            self.inside -= 1
        time.sleep(self.delay)
        self.calls.append(list(keys))
        self.threads.append((threading.get_ident(), torch.get_num_threads()))
        self.lengths.append(batch["attention_mask"].sum(1).tolist())
        return super().forward_by_task(batch, keys)


def recording_engine(forward: str) -> RecordingEngine:
    """A tiny BERT engine with four tasks, t0..t3."""
    model, tokenizer = make_model("bert")
    engine = RecordingEngine(backbone_from_model(model, tokenizer, "tiny"), forward)
    for i in range(4):
        engine.register(f"t{i}", random_patch(model, f"t{i}", 2, "cls", seed=i))
    return engine


@pytest.fixture(scope="module")
def engine():
    """Its forward (the packed walk) has layer breaks."""
    return recording_engine("packed")


@pytest.fixture(scope="module")
def unbroken_engine():
    """Its forward (the padded one) has no layer breaks: express forwards get a thread."""
    return recording_engine("padded")


def lease(engine, key: str) -> Lease:
    return Lease(key, 1, key, engine.state.heads[key])


def rows(engine, texts):
    return encode_inputs(engine.backbone.tokenizer, texts, 48)


def test_requests_of_different_tasks_share_one_forward(engine):
    async def scenario():
        batcher = Batcher(engine, Metrics(), BatchPlan(32, 50, 100))
        batcher.start()
        engine.gate.clear()
        engine.calls.clear()
        for _ in range(4):  # four requests admitted, still "tokenizing"
            batcher.admit(1, "t0")
        futures = [
            batcher.submit(lease(engine, f"t{i}"), rows(engine, ["a cat sat"])) for i in range(4)
        ]
        engine.gate.set()
        results = await asyncio.gather(*futures)
        await batcher.stop()
        return results

    results = asyncio.run(scenario())
    assert engine.calls == [["t0", "t1", "t2", "t3"]]
    assert all(len(r) == 1 and "label" in r[0] for r in results)


def test_rows_of_similar_length_are_batched_together(engine):
    async def scenario():
        batcher = Batcher(engine, Metrics(), BatchPlan(2, 0, 100, policy="arrival"))
        short, long = "a cat", "the big red dog runs fast on the green mat at night " * 2
        order = [short, long, short, long]
        futures = []
        for text in order:
            batcher.admit(1, "t0")
            futures.append(batcher.submit(lease(engine, "t0"), rows(engine, [text])))
        engine.lengths.clear()
        batcher.start()
        await asyncio.gather(*futures)
        await batcher.stop()
        return engine.lengths

    lengths = asyncio.run(scenario())
    assert len(lengths) == 2  # two forwards: the two short rows, then the two long ones
    assert lengths[0][0] == lengths[0][1] < lengths[1][0] == lengths[1][1]


def test_pick_rows_keeps_the_oldest_and_its_nearest_lengths():
    lengths = [10, 40, 11, 9, 30, 10, 12]  # arrival order
    assert pick_rows(lengths, 4) == [0, 5, 2, 3]  # 10 itself, 10, then 11 before 9 (older)
    assert pick_rows([50, 5, 6], 2) == [0, 2]  # the oldest row always goes, however long
    assert pick_rows([7], 32) == [0]


def test_queue_full_is_503_with_retry_after(engine):
    async def scenario():
        batcher = Batcher(engine, Metrics(), BatchPlan(4, 0, 3))
        batcher.admit(2, "t0")
        batcher.submit(lease(engine, "t0"), rows(engine, ["a", "b"]))
        with pytest.raises(Overloaded) as err:
            batcher.admit(2, "t0")
        return err.value

    err = asyncio.run(scenario())
    assert err.headers == {"Retry-After": "1"} and "limit 3" in err.message


def test_stop_finishes_every_admitted_request(engine):
    async def scenario():
        batcher = Batcher(engine, Metrics(), BatchPlan(2, 0, 100))
        batcher.start()
        engine.gate.clear()
        futures = []
        for i in range(6):
            batcher.admit(1, "t0")
            futures.append(batcher.submit(lease(engine, f"t{i % 4}"), rows(engine, ["x y"])))
        stopping = asyncio.create_task(batcher.stop())
        await asyncio.sleep(0.05)
        assert not stopping.done()  # waits for the held forward and the queued rows
        engine.delay = 0.1  # the last batch is still computing when the queue runs empty
        engine.gate.set()
        await stopping
        engine.delay = 0.0
        return futures

    futures = asyncio.run(scenario())
    assert all(f.done() and not f.exception() for f in futures)


@pytest.mark.parametrize("workers", [1, 2])
def test_each_worker_runs_a_forward_at_once(engine, workers):
    async def scenario():
        batcher = Batcher(engine, Metrics(), BatchPlan(2, 0, 100, workers))
        engine.gate.clear()
        futures = []
        for i in range(6):  # three batches of two rows
            batcher.admit(1, "t0")
            futures.append(batcher.submit(lease(engine, f"t{i % 4}"), rows(engine, ["x y"])))
        batcher.start()
        deadline = time.monotonic() + 5
        while engine.inside < workers and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)  # a third forward would have started by now
        held = engine.inside
        engine.gate.set()
        results = await asyncio.gather(*futures)
        await batcher.stop()
        return held, results

    held, results = asyncio.run(scenario())
    assert held == workers
    assert all(len(r) == 1 and "label" in r[0] for r in results)


def test_workers_go_on_while_the_event_loop_is_busy(engine):
    async def scenario():
        batcher = Batcher(engine, Metrics(), BatchPlan(2, 0, 100))
        futures = []
        for i in range(6):  # three batches of two rows
            batcher.admit(1, "t0")
            futures.append(batcher.submit(lease(engine, f"t{i % 4}"), rows(engine, ["x y"])))
        engine.calls.clear()
        batcher.start()
        deadline = time.monotonic() + 10
        while len(engine.calls) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)  # the event loop is blocked: no callback of it can run
        done_while_blocked = len(engine.calls)
        results = await asyncio.gather(*futures)
        await batcher.stop()
        return done_while_blocked, results

    done_while_blocked, results = asyncio.run(scenario())
    assert done_while_blocked == 3  # each forward began without the event loop's help
    assert all(len(r) == 1 and "label" in r[0] for r in results)


def test_a_worker_whose_rows_were_taken_waits_again(engine):
    async def scenario():
        batcher = Batcher(engine, Metrics(), BatchPlan(4, 2000, 100, 2))
        batcher.start()
        batcher.admit(1, "t0")
        batcher.admit(1, "t0")
        first = batcher.submit(lease(engine, "t0"), rows(engine, ["a b"]))
        await asyncio.sleep(0.2)  # both workers now wait for the second request to fill
        second = batcher.submit(lease(engine, "t1"), rows(engine, ["c d"]))
        await asyncio.gather(first, second)  # one worker takes both rows, the other none
        batcher.admit(1, "t0")
        third = await batcher.submit(lease(engine, "t2"), rows(engine, ["e f"]))
        await batcher.stop()  # raises if a worker thread died
        return third

    assert len(asyncio.run(scenario())) == 1


def one_thread_workers(n: int) -> ThreadPoolExecutor:
    """Inference threads that each run torch on one thread, as the server's do on 2 cores."""
    return ThreadPoolExecutor(n, initializer=torch.set_num_threads, initargs=(1,))


def test_a_lone_forward_gets_every_workers_threads_and_then_gives_them_back(engine):
    async def scenario():
        batcher = Batcher(engine, Metrics(), BatchPlan(2, 0, 100, 2, 1, 3), one_thread_workers(2))
        batcher.start()
        engine.threads.clear()
        for i in range(3):  # sequential requests: each forward runs alone
            batcher.admit(1, "t0")
            await batcher.submit(lease(engine, "t0"), rows(engine, [f"x{i}"]))
        lone = list(engine.threads)
        engine.threads.clear()
        engine.gate.clear()
        futures = []
        for i in range(6):  # three batches of two rows queued at once: none runs alone
            batcher.admit(1, "t0")
            futures.append(batcher.submit(lease(engine, f"t{i % 4}"), rows(engine, ["x y"])))
        await asyncio.sleep(0.1)
        engine.gate.set()
        await asyncio.gather(*futures)
        await batcher.stop()
        return lone, engine.threads, batcher.metrics.lone_forwards._value.get()

    lone, loaded, counted = asyncio.run(scenario())
    assert [n for _, n in lone] == [3, 3, 3]
    assert len({ident for ident, _ in lone}) == 1  # at low load the first worker serves alone
    assert [n for _, n in loaded][:2] == [1, 1]  # rows were left queued: each worker's own thread
    assert counted == 3 + sum(n == 3 for _, n in loaded[2:])


def test_a_large_batch_alone_keeps_its_workers_own_threads(engine):
    async def scenario():
        size = WIDEN_ROWS + 2
        batcher = Batcher(
            engine, Metrics(), BatchPlan(size, 0, 100, 2, 1, 3), one_thread_workers(2)
        )
        batcher.start()
        engine.threads.clear()
        batcher.admit(size, "t0")
        await batcher.submit(lease(engine, "t0"), rows(engine, [f"x{i}" for i in range(size)]))
        batcher.admit(1, "t0")
        await batcher.submit(lease(engine, "t1"), rows(engine, ["y"]))
        await batcher.stop()
        return list(engine.threads), batcher.metrics.lone_forwards._value.get()

    threads, lone = asyncio.run(scenario())
    assert [n for _, n in threads] == [1, 3]  # the large batch alone: not widened; one row: widened
    assert lone == 1


def test_no_forward_starts_while_a_lone_forward_runs(engine):
    async def scenario():
        batcher = Batcher(engine, Metrics(), BatchPlan(2, 0, 100, 2, 1, 2), one_thread_workers(2))
        batcher.start()
        engine.gate.clear()
        batcher.admit(1, "t0")
        first = batcher.submit(lease(engine, "t0"), rows(engine, ["a b"]))  # runs alone
        await asyncio.sleep(0.1)
        batcher.admit(1, "t0")
        second = batcher.submit(lease(engine, "t1"), rows(engine, ["c d"]))
        await asyncio.sleep(0.2)  # the idle second worker would have started it by now
        held = engine.inside
        engine.gate.set()
        await asyncio.gather(first, second)
        await batcher.stop()
        return held

    assert asyncio.run(scenario()) == 1


def plan(settings: Settings, on_gpu: bool, cores: int) -> tuple[int, int, int | None]:
    p = BatchPlan.from_settings(settings, on_gpu, cores)
    return p.workers, p.threads_per_worker, p.lone_threads


def test_the_plan_splits_the_cores_between_workers():
    assert plan(Settings(), on_gpu=False, cores=2) == (2, 1, 2)
    assert plan(Settings(), on_gpu=False, cores=16) == (2, 8, 16)
    assert plan(Settings(), on_gpu=False, cores=1) == (1, 1, None)
    assert plan(Settings(), on_gpu=True, cores=16) == (1, 16, None)
    assert plan(Settings(workers=4, threads=8), on_gpu=False, cores=2) == (4, 2, 8)
    assert plan(Settings(workers=3), on_gpu=False, cores=2) == (3, 1, 3)
    assert plan(Settings(widen_lone_forwards=False), on_gpu=False, cores=2) == (2, 1, None)
    express = Settings(express_rows=4)
    assert BatchPlan.from_settings(express, on_gpu=False, cores=2).threads == 3  # and its thread
    assert BatchPlan.from_settings(express, on_gpu=True, cores=2).express_rows == 0
    default = BatchPlan.from_settings(Settings(), on_gpu=False, cores=2)
    assert (default.express_rows, default.threads) == (None, 2)  # only in layer breaks


def test_express_forwards_default_to_forwards_with_layer_breaks(engine, unbroken_engine):
    default = BatchPlan.from_settings(Settings(), on_gpu=False, cores=2)
    assert Batcher(engine, Metrics(), default).express_rows == DEFAULT_EXPRESS_ROWS == 8
    assert Batcher(unbroken_engine, Metrics(), default).express_rows == 0  # it would add a thread
    chosen = replace(default, express_rows=4)
    assert Batcher(unbroken_engine, Metrics(), chosen).express_rows == 4
    assert Batcher(engine, Metrics(), replace(default, express_rows=0)).express_rows == 0


def test_one_task_over_its_queue_bound_gets_429_and_others_go_on(engine):
    async def scenario():
        batcher = Batcher(engine, Metrics(), BatchPlan(4, 0, 100, max_queue_per_task=3))
        batcher.admit(2, "t0")
        batcher.submit(lease(engine, "t0"), rows(engine, ["a", "b"]))
        with pytest.raises(TaskQueueFull) as refused:
            batcher.admit(2, "t0")
        batcher.admit(3, "t1")  # another task is unaffected
        batcher.withdraw(3, "t1")
        batcher.admit(1, "t0")  # within t0's bound
        batcher.withdraw(1, "t0")
        return refused.value

    err = asyncio.run(scenario())
    assert err.headers == {"Retry-After": "1"} and "limit 3" in err.message


def test_a_deadline_that_cannot_be_met_is_refused_before_any_work(engine):
    async def scenario():
        batcher = Batcher(engine, Metrics(), BatchPlan(1, 0, 100, workers=1))
        batcher.start()
        engine.calls.clear()
        batcher.admit(1, "t0")
        await batcher.submit(lease(engine, "t0"), rows(engine, ["warm"]))  # a forward time
        engine.gate.clear()
        batcher.admit(1, "t0")
        held = batcher.submit(lease(engine, "t0"), rows(engine, ["held"]))
        while engine.inside == 0:
            await asyncio.sleep(0.01)
        for _ in range(5):  # five forwards queued behind the held one
            batcher.admit(1, "t0")
            batcher.submit(lease(engine, "t0"), rows(engine, ["q"]))
        batcher._row_seconds = 0.2  # as if each row took 200 ms
        with pytest.raises(DeadlineExceeded):
            batcher.admit(1, "t0", time.monotonic() + 0.5)
        batcher.admit(1, "t1", time.monotonic() + 60)  # room enough: admitted
        late = batcher.submit(lease(engine, "t1"), rows(engine, ["late"]),
                              deadline=time.monotonic() + 0.05)  # fmt: skip
        await asyncio.sleep(0.1)  # its deadline passes while it waits
        calls_before = len(engine.calls)
        engine.gate.set()
        with pytest.raises(DeadlineExceeded):
            await late
        await held
        await batcher.stop()
        computed = [keys for keys in engine.calls[calls_before:] if "t1" in keys]
        return computed

    assert asyncio.run(scenario()) == []  # the late row never ran


def test_a_forward_shares_its_rows_between_tenants_by_weight(engine):
    gold, basic = Flow("token:gold", 3.0), Flow("token:basic", 1.0)

    async def scenario():
        batcher = Batcher(engine, Metrics(), BatchPlan(8, 0, 100, workers=1))
        batcher.start()
        engine.gate.clear()
        batcher.admit(1, "t3")
        held = batcher.submit(lease(engine, "t3"), rows(engine, ["held"]))
        while engine.inside == 0:
            await asyncio.sleep(0.01)
        engine.calls.clear()
        queued = []
        for task, flow in (("t0", gold), ("t1", gold), ("t2", basic), ("t2", basic)):
            batcher.admit(6, task, flow=flow)  # gold: two tasks, basic: one
            queued.append(batcher.submit(lease(engine, task), rows(engine, ["x"] * 6), flow=flow))
        engine.gate.set()
        await asyncio.gather(held, *queued)
        await batcher.stop()
        return engine.calls

    calls = [keys for keys in asyncio.run(scenario()) if keys != ["t3"]]  # after the held one
    first = calls[0]
    assert len(first) == 8 and first.count("t2") == 2  # 6 of gold's rows, 2 of basic's
    assert sum(len(keys) for keys in calls) == 24


async def held_flood(engine, batch_size: int = 4) -> tuple[Batcher, asyncio.Future]:
    """A one-worker batcher with express forwards whose worker holds a 4-row forward of t0."""
    plan = BatchPlan(batch_size, 0, 100, express_rows=2)
    batcher = Batcher(engine, Metrics(), plan, one_thread_workers(2))
    batcher.start()
    engine.calls.clear()
    engine.held, engine.gate = {"t0"}, threading.Event()
    batcher.admit(4, "t0")
    first = batcher.submit(lease(engine, "t0"), rows(engine, list("abcd")))
    await asyncio.sleep(0.1)  # the one worker holds the flood's first forward
    return batcher, first


def test_a_light_tasks_row_runs_in_an_express_forward_beside_a_busy_worker(unbroken_engine):
    engine = unbroken_engine

    async def scenario():
        batcher, first = await held_flood(engine)
        flood = [first]
        batcher.admit(8, "t0")  # a backlog of two full forwards
        flood.append(batcher.submit(lease(engine, "t0"), rows(engine, list("efghijkl"))))
        batcher.admit(1, "t1")
        quiet = await asyncio.wait_for(
            batcher.submit(lease(engine, "t1"), rows(engine, ["q"])), 5
        )  # answered while the worker's forward is still held
        held = engine.inside
        engine.gate.set()
        await asyncio.gather(*flood)
        await batcher.stop()
        engine.held = None
        return quiet, held, engine.calls, batcher.metrics.express_forwards._value.get()

    quiet, held, calls, express = asyncio.run(scenario())
    assert len(quiet) == 1 and held == 1
    assert calls[0] == ["t1"] and calls[1:] == [["t0"] * 4] * 3
    assert express == 1


class BreakHeldBatcher(Batcher):
    """Holds its worker at the first layer break it reaches until `gate` opens."""

    def __init__(self, *args):
        super().__init__(*args)
        self.reached, self.gate = threading.Event(), threading.Event()

    def _express_in_break(self):
        if not self.reached.is_set():
            self.reached.set()
            self.gate.wait(10)
        super()._express_in_break()


def test_a_light_row_runs_in_a_layer_break_of_the_floods_forward(engine):
    async def scenario():
        plan = BatchPlan(4, 0, 100, express_rows=2)
        batcher = BreakHeldBatcher(engine, Metrics(), plan, one_thread_workers(1))
        batcher.start()
        engine.calls.clear()
        done: list[str] = []
        batcher.admit(4, "t0")
        flood = [batcher.submit(lease(engine, "t0"), rows(engine, list("abcd")))]
        await asyncio.to_thread(batcher.reached.wait, 5)  # after the forward's first layer
        batcher.admit(8, "t0")  # a backlog of two full forwards
        flood.append(batcher.submit(lease(engine, "t0"), rows(engine, list("efghijkl"))))
        batcher.admit(1, "t1")
        quiet = batcher.submit(lease(engine, "t1"), rows(engine, ["q"]))
        for name, future in (("flood", flood[0]), ("quiet", quiet)):
            future.add_done_callback(lambda _, name=name: done.append(name))
        batcher.gate.set()
        replies = await asyncio.gather(*flood, quiet)
        await batcher.stop()
        return done, replies, engine.calls, batcher.metrics.express_forwards._value.get()

    done, replies, calls, express = asyncio.run(scenario())
    assert done == ["quiet", "flood"]  # answered before the forward it broke into
    assert calls == [["t0"] * 4, ["t1"], ["t0"] * 4, ["t0"] * 4] and express == 1
    texts = list("abcdefghijkl")
    alone = [engine.predict("t0", [text])[0] for text in texts]
    assert_all_close(replies[0] + replies[1], alone)
    assert_all_close(replies[2], engine.predict("t1", ["q"]))


def assert_all_close(got: list[dict], want: list[dict]) -> None:
    """Classification predictions equal one by one up to float32 rounding."""
    assert len(got) == len(want)
    for one, other in zip(got, want, strict=True):
        assert_close(one, other)


def test_while_no_flow_is_heavy_a_light_row_waits_for_the_next_full_forward(unbroken_engine):
    engine = unbroken_engine

    async def scenario():
        batcher, first = await held_flood(engine, batch_size=8)
        batcher.admit(4, "t0")  # 4 running and 4 queued: one forward's rows, not more
        second = batcher.submit(lease(engine, "t0"), rows(engine, list("efgh")))
        batcher.admit(1, "t1")
        quiet = batcher.submit(lease(engine, "t1"), rows(engine, ["q"]))
        await asyncio.sleep(0.2)
        early = quiet.done()
        engine.gate.set()
        await asyncio.gather(first, second, quiet)
        await batcher.stop()
        engine.held = None
        return early, engine.calls, batcher.metrics.express_forwards._value.get()

    early, calls, express = asyncio.run(scenario())
    assert not early and express == 0
    assert sorted(calls[1]) == ["t0"] * 4 + ["t1"]  # it rode in the next full forward


@pytest.mark.parametrize("forward", ["packed", "padded"])  # in layer breaks; on a thread
def test_a_server_with_express_forwards_answers_a_flood_and_a_quiet_task_alike(
    tiny_bert_dir, tmp_path, forward
):
    model = make_model("bert")[0]
    flags = ("--no-demo-patches", "--express-rows", "2", "--max-batch-size", "4")
    flags += ("--forward", forward, "--gil-switch-ms", "0.5")
    with ServerProcess(tiny_bert_dir, tmp_path / "store", *flags) as server:
        with httpx.Client(base_url=server.url, timeout=60) as http:
            for i in range(2):
                patch = random_patch(model, f"t{i}", 2, "cls", seed=i).to_bytes()
                assert http.put(f"/tasks/t{i}/patch", content=patch).status_code == 201
            info = http.get("/info").json()
            assert (info["express_rows"], info["gil_switch_ms"]) == (2, 0.5)
            texts = [f"text number {i}" for i in range(8)]
            alone = {
                (t, x): http.post(f"/tasks/{t}/predict", json={"inputs": [x]}).json()
                for t in ("t0", "t1")
                for x in texts
            }

        async def together():
            async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
                flood = [client.post("/tasks/t0/predict", json={"inputs": texts})] * 12
                quiet = [client.post("/tasks/t1/predict", json={"inputs": [x]}) for x in texts]
                return await asyncio.gather(*flood, *quiet)

        replies = asyncio.run(together())
    for reply in replies[:12]:
        for text, prediction in zip(texts, reply.json()["predictions"], strict=True):
            assert_close(prediction, alone[("t0", text)]["predictions"][0])
    for text, reply in zip(texts, replies[12:], strict=True):
        assert_close(reply.json()["predictions"][0], alone[("t1", text)]["predictions"][0])


def assert_close(got: dict, want: dict) -> None:
    """One classification prediction equal to another up to float32 rounding."""
    assert got["label"] == want["label"]
    for label, p in want["scores"].items():
        assert abs(got["scores"][label] - p) <= 1e-5


def test_the_express_thread_leaves_the_workers_their_own_torch_threads(unbroken_engine):
    engine = unbroken_engine

    async def scenario():
        plan = BatchPlan(4, 0, 100, workers=1, threads_per_worker=2, express_rows=2)
        batcher = Batcher(engine, Metrics(), plan)  # fresh threads: none set its torch threads
        batcher.start()
        await asyncio.sleep(0.1)  # the express thread has set its own (one)
        engine.threads.clear()
        batcher.admit(1, "t0")
        await batcher.submit(lease(engine, "t0"), rows(engine, ["a"]))
        await batcher.stop()
        return list(engine.threads)

    before = torch.get_num_threads()
    try:
        assert [n for _, n in asyncio.run(scenario())] == [2]
    finally:
        torch.set_num_threads(before)
