"""A tracking writer process: the fold runs of restored fits are written beside the search, not in its path.

After fused training, the search's pass restores each fit and records its fold run: four MLflow
writes (~21 ms here) against ~12 ms to restore and score it, on one core while the other idles.
The pass hands each restored fit's whole fold run to this process instead, one JSON line, and it
writes them on the idle core; then the records' scores, counts and closes (:class:`WriterCalls`)
go the same way while the search draws its figures. The search waits for it only before it reads
its runs back and at the end of its records (or of its run, if it failed). Fits that train in the
search record their runs themselves, live.

Why a process: MLflow's calls are Python (SQLAlchemy) and a thread would take the interpreter from
the pass (docs/performance.md). Why spawned, not forked: a fork would share the parent's open SQLite
connections and TensorFlow's threads. It starts with the session, so its imports overlap the
session's own work, and in a session of its own: Ctrl-C stops the search, which then waits for what
it handed over; if the search is killed, the writer still writes every run it was given, then
exits when its input closes.

Nothing is lost or faked: each run is written whole (created with its tags, its inputs, params and
metrics, ended with its status and times) in the order given. An error comes back with the run it
failed on and is raised in the search: a lost store (:class:`TrackingStoreLost`) at its next
hand-over, any other at its next wait. A writer that ends early leaves its unanswered writes to the
search, which makes them itself; a run it left half-written (RUNNING) is ended, tagged lost, by the
search's records, as a dead worker's is. The URI goes over the pipe, never on a command line.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

from mnist_hpo.environment.quiet import routed_log
from mnist_hpo.tracking.redaction import redact
from mnist_hpo.tracking.store_loss import TrackingStoreLost

log = logging.getLogger(__name__)

WAIT_POLL_S = 1.0  # how often a waiting search checks that the writer still runs
STALL_NOTICE_S = 30.0  # a wait this long without a run written says so in the log
CLOSE_TIMEOUT_S = 60.0  # the writer's last runs, once its input is closed
PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])  # the folder holding mnist_hpo, for the child's imports
# The writer's entry: this package as the search imported it (appended to the path, so it shadows nothing).
BOOT = "import sys; sys.path.append(sys.argv[1]); from mnist_hpo.tracking.writer import main; main()"


class TrackingWriteError(RuntimeError):
    """The writer could not make a write (an error other than a lost store): the search's record would be incomplete."""


@dataclass(frozen=True)
class RunRecord:
    """One finished run, whole: what MLflow's ``create_run``, ``log_inputs``, ``log_batch`` and ``set_terminated`` take.

    Plain data, so it crosses the pipe as JSON.
    """

    experiment_id: str
    name: str
    tags: dict[str, str]
    params: dict[str, str]
    metrics: list[tuple[str, float, int, int]]  # key, value, timestamp in ms, step
    inputs: list[dict[str, Any]]  # each DatasetInput's ``to_dictionary()``: its dataset's fields and its tags
    status: str
    start_time: int
    end_time: int


class Replies:
    """What the writer has answered: the writes it has not yet answered, its first error, whether it has ended.

    Apart from :class:`RunWriter`, so the thread reading the answers does not keep the writer alive:
    a writer nobody closes is collected, which closes its input and ends the process.
    """

    def __init__(self) -> None:
        self.changed = threading.Condition()
        self.pending: dict[int, tuple[str, dict[str, Any]]] = {}  # id -> (call, args), until answered
        self.failure: dict[str, Any] | None = None
        self.ended = False

    def read(self, stream: IO[str]) -> None:
        """Take each reply (one per write) off :attr:`pending` until the process ends, keeping the first error."""
        for line in stream:
            reply = json.loads(line)
            with self.changed:
                self.pending.pop(reply["id"], None)
                if "error" in reply and self.failure is None:
                    self.failure = reply
                self.changed.notify_all()
        with self.changed:
            self.ended = True
            self.changed.notify_all()


class RunWriter:
    """The search's side of the writer process: hands writes over and waits for them to be made.

    It starts before the store is opened, so its imports overlap the session's; :meth:`open` gives it
    the store once the session has made it ready. If the process ends early (killed, or it could not
    start), what it had not written, and every later write, is made here instead: slower, not lost.
    """

    def __init__(self) -> None:
        log = routed_log()
        if log is not None:
            log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") if log is not None else contextlib.nullcontext() as errors:  # its warnings: the log's
            self.process = subprocess.Popen(
                [sys.executable, "-c", BOOT, PACKAGE_ROOT],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=errors,
                text=True,
                start_new_session=True,  # no Ctrl-C from the terminal: it ends when its input does
            )
        assert self.process.stdin is not None and self.process.stdout is not None
        self.input: IO[str] = self.process.stdin
        self.uri: str | None = None
        self.sent = 0
        self.taken_over = False  # the writer ended early: the search makes the writes
        self.replies = Replies()
        reader = threading.Thread(target=self.replies.read, args=(self.process.stdout,), daemon=True)
        reader.start()

    def open(self, uri: str) -> None:
        """Point the writer at the store ``uri``, its schema ready (sent over the pipe, never on a command line)."""
        self.uri = uri
        self.send({"uri": uri})

    def send(self, message: dict[str, Any]) -> None:
        """One line to the writer; if it has ended, its replies say so (and :meth:`drain` writes what it left)."""
        with contextlib.suppress(BrokenPipeError, ValueError):
            self.input.write(json.dumps(message) + "\n")
            self.input.flush()

    def submit(self, record: RunRecord) -> None:
        """Hand one finished run over; raise :class:`TrackingStoreLost` at once if the writer met a lost store."""
        self.call("run", asdict(record))

    def call(self, name: str, args: dict[str, Any]) -> None:
        """Hand one write over (``name``: a :class:`WriterCalls` method, or ``run``), as :meth:`submit` does."""
        self.check(lost_only=True)
        replies = self.replies
        with replies.changed:
            ended = replies.ended
            if not ended:
                self.sent += 1
                replies.pending[self.sent] = (name, args)
        if ended:  # it is gone: what it left first, then this, here
            self.write_left()
            self.write_here(name, args)
            return
        self.send({"id": self.sent, "call": name, "args": args})

    def write_left(self) -> None:
        """Make here, in order, the writes an ended writer did not answer (saying so once)."""
        with self.replies.changed:
            left = sorted(self.replies.pending.items())
            self.replies.pending.clear()
        if not self.taken_over:
            self.taken_over = True
            log.warning(
                "the tracking writer ended early (exit %s, %d write(s) unanswered); the search makes its writes itself",
                self.process.poll(),
                len(left),
            )
        for _, (name, args) in left:
            self.write_here(name, args)

    def write_here(self, name: str, args: dict[str, Any]) -> None:
        """One handed-over write, made in this process (the writer has ended)."""
        from mlflow import MlflowClient

        from mnist_hpo.tracking.store_loss import guarded

        assert self.uri is not None, "a write before the store was opened"
        with guarded():
            apply(MlflowClient(tracking_uri=self.uri), name, args)

    def drain(self, raise_errors: bool = True) -> None:
        """Wait until every write handed over is made; then raise its first error (unless ``raise_errors`` is off)."""
        replies = self.replies
        waited_since = time.monotonic()
        with replies.changed:
            left = len(replies.pending)
            while replies.pending and not replies.ended:
                replies.changed.wait(WAIT_POLL_S)
                if len(replies.pending) != left:
                    left, waited_since = len(replies.pending), time.monotonic()
                elif time.monotonic() - waited_since > STALL_NOTICE_S:
                    log.warning("waiting for the tracking writer: %d write(s) not yet made", left)
                    waited_since = time.monotonic()
            ended_early = replies.ended and replies.failure is None and bool(replies.pending)
        if ended_early:
            self.write_left()
        if raise_errors:
            self.check(lost_only=False)
        elif replies.failure is not None:
            log.warning("the tracking writer failed: %s", replies.failure["error"])

    def check(self, lost_only: bool) -> None:
        """Raise the writer's first error: a lost store always, any other unless ``lost_only``."""
        failure = self.replies.failure
        if failure is not None and failure["lost"]:
            raise TrackingStoreLost(failure["error"], failure["details"])
        if failure is not None and not lost_only:
            raise TrackingWriteError(f"the tracking writer could not make a write: {failure['error']}")

    def close(self, wait: bool = True) -> None:
        """Close its input: it writes what it has and exits. ``wait``: until it has (else it ends on its own)."""
        with contextlib.suppress(BrokenPipeError):
            self.input.close()
        if not wait or not self.replies.pending:  # nothing left to write: it ends on its own, reaped here
            threading.Thread(target=self.process.wait, daemon=True).start()
            return
        try:
            self.process.wait(CLOSE_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            log.warning("the tracking writer did not end within %.0f s; stopped", CLOSE_TIMEOUT_S)
            self.process.kill()
            self.process.wait()


class WriterCalls:
    """The writes of a finished search's records, as ``MlflowClient`` takes them, handed to the writer.

    The records' scores, counts and closes go over while the search draws and logs its figures, which
    is what the writer's time then overlaps; the search waits for them before its run ends.
    """

    def __init__(self, writer: RunWriter) -> None:
        self.writer = writer

    def log_batch(
        self, run_id: str, metrics: Sequence[Any] = (), params: Sequence[Any] = (), tags: Sequence[Any] = ()
    ) -> None:
        self.writer.call(
            "log_batch",
            {
                "run_id": run_id,
                "metrics": [(m.key, float(m.value), m.timestamp, m.step) for m in metrics],
                "params": [(p.key, str(p.value)) for p in params],
                "tags": [(t.key, str(t.value)) for t in tags],
            },
        )

    def set_tag(self, run_id: str, key: str, value: str) -> None:
        self.writer.call("set_tag", {"run_id": run_id, "key": key, "value": str(value)})

    def set_terminated(self, run_id: str, status: str | None = None, end_time: int | None = None) -> None:
        end = end_time if end_time is not None else int(time.time() * 1000)  # when it ended, not when written
        self.writer.call("set_terminated", {"run_id": run_id, "status": status, "end_time": end})


def apply(client: Any, name: str, args: dict[str, Any]) -> None:
    """Make one handed-over write with ``client``: a whole run, or one of :class:`WriterCalls`' calls."""
    from mlflow.entities import Metric, Param, RunTag

    if name == "run":
        write_run(client, RunRecord(**args))
    elif name == "log_batch":
        client.log_batch(
            args["run_id"],
            metrics=[Metric(*metric) for metric in args["metrics"]],
            params=[Param(*param) for param in args["params"]],
            tags=[RunTag(*tag) for tag in args["tags"]],
        )
    elif name == "set_tag":
        client.set_tag(args["run_id"], args["key"], args["value"])
    elif name == "set_terminated":
        client.set_terminated(args["run_id"], args["status"], end_time=args["end_time"])
    else:
        raise ValueError(f"unknown write {name!r}")


def write_run(client: Any, record: RunRecord) -> None:
    """Write ``record`` as one run: created with its tags, its inputs, params and metrics, then ended."""
    from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param

    from mnist_hpo.tracking.datasets import log_inputs

    run = client.create_run(record.experiment_id, start_time=record.start_time, tags=record.tags, run_name=record.name)
    run_id = run.info.run_id
    if record.inputs:
        inputs = [
            DatasetInput(Dataset.from_dictionary(item["dataset"]), [InputTag(k, v) for k, v in item["tags"].items()])
            for item in record.inputs
        ]
        log_inputs(client, run_id, inputs)
    if record.metrics or record.params:
        metrics = [Metric(key, value, timestamp, step) for key, value, timestamp, step in record.metrics]
        client.log_batch(run_id, metrics=metrics, params=[Param(key, value) for key, value in record.params.items()])
    client.set_terminated(run_id, record.status, end_time=record.end_time)


def failure(error: str, details: str, lost: bool) -> dict[str, Any]:
    """A reply's error: what failed, its traceback, whether the store is lost; credentials hidden."""
    return {"error": redact(error), "details": redact(details), "lost": lost}


def serve(requests: IO[str], replies: IO[str]) -> None:
    """The writer's loop: the store's URI, then one write a line, each answered by a line (its id, and any error).

    After a lost store every later write is answered with the same loss: nothing more can be written.
    """
    from mlflow import MlflowClient

    from mnist_hpo.tracking.store_loss import guarded

    line = requests.readline()
    if not line:  # the session ended before its store was ready
        return
    client = MlflowClient(tracking_uri=json.loads(line)["uri"])
    lost: dict[str, Any] | None = None
    answering = True
    try:  # connected now, while the session goes on: a database lost later is seen as lost, not made anew
        with guarded():
            client.search_experiments(max_results=1)
    except TrackingStoreLost as error:
        lost = failure(error.reason, error.details, lost=True)
    for line in requests:
        message = json.loads(line)
        reply: dict[str, Any] = {"id": message["id"]}
        if lost is not None:
            reply |= lost
        else:
            try:
                with guarded():
                    apply(client, message["call"], message["args"])
            except TrackingStoreLost as error:
                lost = failure(error.reason, error.details, lost=True)
                reply |= lost
            except Exception as error:  # reported to the search, which raises it
                reply |= failure(f"{type(error).__name__}: {error}", traceback.format_exc(), lost=False)
        if answering:
            try:
                replies.write(json.dumps(reply) + "\n")
                replies.flush()
            except BrokenPipeError:  # the search is gone (killed): what it handed over is still written
                answering = False


def main() -> None:
    """Entry of the writer process: replies on a private copy of stdout; anything a library prints goes to stderr.

    What a write needs is imported first, while the session that started it does its own work.
    """
    import mlflow.store.tracking.sqlalchemy_store  # noqa: F401 - MLflow loads it on the first write otherwise

    import mnist_hpo.tracking.datasets  # noqa: F401

    replies = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    serve(sys.stdin, replies)


if __name__ == "__main__":
    main()
