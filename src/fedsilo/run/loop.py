"""The round loop every mode shares: train, evaluate, log, checkpoint, resume.

Federated runs (inside the ServerApp), and the centralised and local references run the same
loop over a :class:`RoundExecutor`; only what a "round" does differs. After every round the
executor's whole state (global weights, strategy state, site state) and the process RNG states
are written atomically to ``checkpoints/latest.pt``; a resumed run restores them and continues
with round k+1, giving bit-identical final weights to an uninterrupted run.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
import torch

from fedsilo import progress
from fedsilo.rounds import FederationError, Row, SiteTable, StopTraining
from fedsilo.run.folder import RunDir
from fedsilo.run.tracking import Tracker, make_tracker

logger = logging.getLogger(__name__)


class RunInterrupted(RuntimeError):
    """Raised by a round callback to stop a run after a checkpoint (tests, budgets)."""


class RoundExecutor(Protocol):
    """What a mode does in a round. See :mod:`fedsilo.federation.server_app` and :mod:`fedsilo.run.centralised`."""

    label: str

    def setup(self) -> SiteTable: ...

    def train_round(self, rnd: int) -> list[Row]: ...

    def evaluate(self, rnd: int, *, sites: bool = True) -> list[Row]: ...

    def evaluate_pending(self) -> list[Row]:
        """A site evaluation deferred to the next round's training messages (fused evaluation), done
        now because the run stops before them; [] when none is pending."""
        ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...

    def final_state(self) -> dict[str, Any]: ...


def _rng_states() -> dict[str, Any]:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}


def _restore_rng(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    np.random.set_state(states["numpy"])
    random.setstate(states["python"])


def record_sites(run: RunDir, table: SiteTable) -> None:
    """Write ``sites.json`` and, when every site reported class counts, ``partition.csv``/``.png``."""
    from fedsilo.data.partition import format_partition_table, save_partition_table

    run.write_sites(table.rows)
    counts = [r.get("class_counts") for r in table.rows]
    if not counts or not all(counts):
        return
    matrix = np.array(counts)
    names = [str(r["name"]) for r in table.rows]
    logger.info("Partition (training samples per class and site):\n%s",
                format_partition_table(matrix, names, table.class_names))
    save_partition_table(matrix, names, table.class_names, run.artifact("partition.csv"),
                         run.artifact("partition.png"))


def _summary(rows: list[Row], key: str) -> str:
    for row in rows:
        if row.scope == "global" and key in row.values and row.values[key] is not None:
            return f"{key} {row.values[key]:.4f}"
    return ""


def _record(run: RunDir, tracker: Tracker, rnd: int, rows: list[Row]) -> None:
    """Append ``rows`` to metrics.jsonl and hand them, grouped by round and scope, to the experiment
    tracker; a row with its own ``round`` (fused evaluation's, of the round before) is logged as that round's."""
    rounds: dict[int, dict[str, dict[str, Any]]] = {}
    for row in rows:
        at = rnd if row.round is None else row.round
        run.log_metrics(at, row.scope, row.values)
        rounds.setdefault(at, {}).setdefault(row.scope, {}).update(row.values)
    for at, scopes in rounds.items():
        tracker.log_round(at, scopes)


def run_rounds(
    executor: RoundExecutor,
    run: RunDir,
    *,
    summary_key: str = "",
    on_round_end: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Run (or resume) all rounds of ``run.cfg`` with ``executor``; return the final state.

    Parameters
    ----------
    executor
        What happens in a round.
    run
        The run folder (config, metrics, checkpoints).
    summary_key
        Global metric shown in each round's progress line (e.g. ``test_kappa``).
    on_round_end
        Called with the round number after its checkpoint is written; raising
        :class:`RunInterrupted` there stops the run cleanly (the checkpoint stays).
    """
    record_sites(run, executor.setup())
    ckpt = run.load_checkpoint()
    tracker = make_tracker(run.cfg.experiment.tracking)  # its failures after start are logged, never fatal
    tracker.start(run.cfg, run.path, first_round=0 if ckpt is None else int(ckpt["round"]) + 1)
    try:
        final = _rounds(executor, run, ckpt, tracker, summary_key, on_round_end)
    except (RunInterrupted, KeyboardInterrupt):
        tracker.close("killed")
        raise
    except BaseException:
        tracker.close("failed")
        raise
    tracker.close("finished")
    return final


def _rounds(executor: RoundExecutor, run: RunDir, ckpt: dict[str, Any] | None, tracker: Tracker,
            summary_key: str, on_round_end: Callable[[int], None] | None) -> dict[str, Any]:
    cfg = run.cfg
    rounds, every = cfg.federation.rounds, cfg.federation.eval_every
    first = 1
    if ckpt is not None:
        executor.load_state_dict(ckpt["executor"])
        _restore_rng(ckpt["rng"])
        first = int(ckpt["round"]) + 1
        # (the lines written with the checkpoint: not a fused evaluation's rows of its round logged after it)
        run.truncate_metrics(int(ckpt["round"]), ckpt.get("metrics_lines"))
        logger.info("Resuming %s after round %d", run.path, first - 1)
    else:
        _record(run, tracker, 0, executor.evaluate(0, sites=False))
    reporter = progress.current()
    reporter.start(rounds, first, executor.label)
    last = first - 1
    stopped: str | None = None
    for rnd in range(first, rounds + 1):
        try:
            rows = executor.train_round(rnd)
        except StopTraining as exc:
            stopped = str(exc)
            break
        except FederationError as exc:
            raise FederationError(f"{exc}. The last good checkpoint (round {rnd - 1}) is intact in "
                                  f"{run.checkpoint_path}; continue with `fedsilo run --resume {run.path}`") from exc
        if rnd % every == 0 or rnd == rounds:
            rows += executor.evaluate(rnd)
            if cfg.eval.keep_models:
                run.save_round_model(rnd, executor.final_state())
        _record(run, tracker, rnd, rows)
        run.save_checkpoint({"round": rnd, "executor": executor.state_dict(), "rng": _rng_states(),
                             "metrics_lines": run.metrics_lines()})
        reporter.round_finished(rnd, _summary(rows, summary_key))
        last = rnd
        if on_round_end is not None:
            on_round_end(rnd)
    if stopped is not None:
        logger.warning("Stopping %s after round %d of %d: %s", run.path, last, rounds, stopped)
        rows = executor.evaluate(last) if last and last % every else []
        rows += executor.evaluate_pending()  # (fused evaluation: round `last`'s sites, when they still wait)
        rows.append(Row("global", {"stopped_early": 1, "stop_reason": stopped}))
        _record(run, tracker, last, rows)
    final = executor.final_state()
    run.save_final({"round": last if stopped is not None else rounds, **final,
                    **({"stopped_early": stopped} if stopped is not None else {})})
    logger.info("Finished %s: final weights in %s", run.path, run.final_path)
    return final
