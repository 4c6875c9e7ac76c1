"""The process one launched training run lives in: ``python -m core.training.worker --db URL --run NAME``.

It reads the run's config from storage, trains with ``core.training.train.train`` (which
writes progress and the result there), and turns every way of ending into a run status: a
cancel flag set in storage stops it at the next step (``cancelled``); a user mistake or a
crash is stored as ``failed`` with its message, so the studio shows the reason instead of a
run stuck in ``running``.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import traceback

from core.errors import EmbtuneError
from core.progress import CancelToken

CANCEL_POLL_S = 1.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core.training.worker")
    parser.add_argument("--db", required=True)
    parser.add_argument("--run")
    parser.add_argument("--standby", action="store_true",
                        help="import everything a run needs, then read the run's name from stdin")
    args = parser.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.standby:
        args.run = _wait_for_a_run()
        if not args.run:
            return 0  # the studio that started this standby has gone
    elif not args.run:
        parser.error("--run NAME or --standby")

    from storage.db import Database
    from storage.runs import RunStore

    runs = RunStore(Database(args.db))
    run = runs.get(args.run)
    if run is None:
        print(f"error: training run {args.run!r} does not exist")
        return 1
    cancel = CancelToken()
    stop_watching = threading.Event()

    def watch_cancel() -> None:
        while not stop_watching.wait(CANCEL_POLL_S):
            process = runs.process(args.run)
            if process is not None and process.cancel_requested:
                cancel.cancel()
                return

    watcher = threading.Thread(target=watch_cancel, name="embtune-cancel-watch", daemon=True)
    watcher.start()
    try:
        process = runs.process(args.run)
        if process is not None and process.cancel_requested:
            runs.update(args.run, status="cancelled")
            return 0
        from core.training.callbacks import console_progress
        from core.training.config import TrainingConfig
        from core.training.train import train

        def say(line: str) -> None:
            print(line, flush=True)

        result = train(TrainingConfig.from_dict(dict(run.config)), db=runs.db, cancel=cancel, show_progress=False,
                       progress=console_progress(say), notice=say, queued=True)
        say(f"run {args.run}: {result.status} after {result.train_seconds:.0f} s of training"
            + (f" — {result.gate.get('reason')}" if result.gate else ""))
        return 0
    except EmbtuneError as exc:
        print(f"error: {exc}")
        runs.update(args.run, status="failed", error=str(exc))
        return 1
    except BaseException as exc:
        traceback.print_exc()
        runs.update(args.run, status="failed", error=f"{type(exc).__name__}: {exc}")
        return 1
    finally:
        stop_watching.set()


def _wait_for_a_run() -> str:
    """A standby worker: the imports a run would wait for happen now, before anyone clicks Launch."""
    import sentence_transformers  # noqa: F401
    import transformers.trainer  # noqa: F401

    import core.embedders
    import core.training.train  # noqa: F401

    print("standby ready", flush=True)
    return sys.stdin.readline().strip()


if __name__ == "__main__":
    raise SystemExit(main())
