"""Runs: the folder a run writes, the round loop, start and resume, the centralised reference,
and loading what a finished run trained.

- :mod:`.folder`: :class:`RunDir` (config, env.json, metrics.jsonl, atomic checkpoints);
- :mod:`.loop`: :func:`run_rounds`, the round loop every mode shares;
- :mod:`.start`: :func:`start_run` / :func:`resume_run` on an engine;
- :mod:`.app`: the ServerApp bound to a run folder (``flwr run .`` in deployments);
- :mod:`.centralised`: the centralised reference (all sites' data pooled);
- :mod:`.load`: :func:`load_trained`, a finished run's model at a round.
- :mod:`.tracking`: the same metrics, config and report also in TensorBoard or MLflow
  (``experiment.tracking``).
"""

from fedsilo.run.folder import RunDir, RunDirError
from fedsilo.run.load import TrainedModel, load_trained
from fedsilo.run.loop import RunInterrupted, run_rounds
from fedsilo.run.start import ENGINES, resume_run, start_run

__all__ = ["ENGINES", "RunDir", "RunDirError", "RunInterrupted", "TrainedModel", "load_trained", "resume_run",
           "run_rounds", "start_run"]
