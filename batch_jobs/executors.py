"""Where tasks run: one small interface, and a local process pool as the default.

An executor takes a run's ``TaskSpec``s, stores each spec in its model store
(``runs/<run>/tasks/<task>.json``), has every task run from its spec URL
(what ``sensorflow task run SPEC_URL`` does on a remote node) and returns one
``TaskResult`` per spec, in spec order. A task that cannot run at all (its
worker died, its spec could not be stored) comes back with every sensor
failed and the reason, so a run always has an outcome for each sensor.
``sensorflow.assembly.open_executor`` picks the local pool or Azure Batch
(``sensorflow.batch_jobs.azure_batch``) from the sidecar's settings.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Self

from sensorflow.batch_jobs.model_store import open_model_store
from sensorflow.batch_jobs.tasks import TaskResult, TaskSpec, run_task_at
from sensorflow.lifecycle import die_with_parent

__all__ = ["Executor", "LocalPoolExecutor", "report", "store_specs"]

Callback = Callable[[TaskResult], None]


class Executor(ABC):
    """Runs a run's tasks and waits for all of them."""

    @abstractmethod
    def run(self, specs: Sequence[TaskSpec], on_done: Callback | None = None) -> list[TaskResult]:
        """Run every spec; ``on_done`` is called (in this thread) as each task finishes. Results in spec order."""

    @property
    def parallelism(self) -> int:
        """Tasks that run at once on warm workers: the sidecar splits a run's sensors at least this many ways.

        1 (chunks of ``chunk_size`` only) where tasks have a start-up cost of their own, as
        Batch tasks on nodes that autoscale from zero do.
        """
        return 1

    def run_detail(self) -> dict[str, Any]:
        """What the last ``run`` adds to its run record's detail (e.g. the Batch job id); nothing by default."""
        return {}

    def close(self) -> None:
        """Release workers."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def report(results: list[TaskResult], on_done: Callback | None) -> list[TaskResult]:
    """Hand each finished result to ``on_done`` (if any); ``results`` unchanged."""
    if on_done:
        for result in results:
            on_done(result)
    return results


def store_specs(specs: Sequence[TaskSpec]) -> list[str]:
    """Write each spec to its model store; their URLs, in order."""
    by_store: dict[str, list[TaskSpec]] = {}
    for spec in specs:
        by_store.setdefault(spec.model_store, []).append(spec)
    located: dict[str, str] = {}
    for url, group in by_store.items():
        with open_model_store(url) as store:
            store.put_many([(spec.spec_name, spec.to_json()) for spec in group])
            located.update({spec.task_id: store.object_url(spec.spec_name) for spec in group})
    return [located[spec.task_id] for spec in specs]


def _prepare_worker(parent: int, environ: Mapping[str, str], threads: int) -> None:
    """A pool worker's set-up: its environment, and its share of the cores for BLAS/OpenMP.

    Each worker runs one task at a time on about one core; numpy's BLAS otherwise starts a
    thread per core in every worker, and the workers' threads then spin against each other.
    A worker dies with the process that started it: a SIGKILLed sidecar leaves no worker behind.
    """
    die_with_parent(parent)
    os.environ.update(environ)
    from threadpoolctl import threadpool_limits

    threadpool_limits(threads)


class LocalPoolExecutor(Executor):
    """A pool of ``workers`` spawned Python processes, kept warm between runs.

    ``environ`` is added to the workers' environment: what ``env:NAME``
    store references and Blob access resolve against, when the values came
    from flags or a config file rather than this process's environment.
    """

    def __init__(self, workers: int | None = None, environ: Mapping[str, str] | None = None):
        self.workers = workers or os.cpu_count() or 1
        if self.workers < 1:
            raise ValueError("workers must be >= 1")
        self._environ = dict(environ or {})
        self._pool: ProcessPoolExecutor | None = None

    @property
    def parallelism(self) -> int:
        return self.workers

    def run(self, specs: Sequence[TaskSpec], on_done: Callback | None = None) -> list[TaskResult]:
        if len({spec.task_id for spec in specs}) != len(specs):
            raise ValueError("task ids of a run must be unique")
        started = time.perf_counter()
        try:
            urls = store_specs(specs)
        except Exception as e:  # noqa: BLE001 - no spec stored: every task fails with the reason
            return report([TaskResult.all_failed(spec, f"cannot store the task spec: {e}") for spec in specs], on_done)
        pool = self._ensure_pool()
        futures: dict[Future, int] = {pool.submit(run_task_at, url): i for i, url in enumerate(urls)}
        results: list[TaskResult | None] = [None] * len(specs)
        broken = False
        try:
            for future in as_completed(futures):
                i = futures[future]
                result, died = self._result(future, specs[i], started)
                broken = broken or died
                results[i] = report([result], on_done)[0]
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM: stop now, not when the running tasks end
            self._kill()
            raise
        if broken:  # a dead pool takes no more work: the next run starts a fresh one
            self.close()
        return [r for r in results if r is not None]

    @staticmethod
    def _result(future: Future, spec: TaskSpec, started: float) -> tuple[TaskResult, bool]:
        """The task's result, and whether its worker died (the pool is broken)."""
        try:
            return future.result(), False
        except BrokenProcessPool as e:
            return TaskResult.all_failed(spec, f"worker process died: {e}", time.perf_counter() - started), True
        except Exception as e:  # noqa: BLE001 - e.g. the spec could not be read back
            return TaskResult.all_failed(spec, f"{type(e).__name__}: {e}", time.perf_counter() - started), False

    def _kill(self) -> None:
        """End the workers at once (their tasks are lost; the run is recorded as interrupted)."""
        if self._pool is None:
            return
        for process in list(getattr(self._pool, "_processes", {}).values()):  # no public handle on the workers
            process.kill()
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._pool = None

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def _ensure_pool(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                self.workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_prepare_worker,
                initargs=(os.getpid(), self._environ, max(1, (os.cpu_count() or 1) // self.workers)),
            )
        return self._pool
