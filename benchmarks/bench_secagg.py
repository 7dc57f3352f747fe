"""Cost of secure aggregation: round time and bytes a site sends, with and without SecAgg+.

quick-classify (phantom fundus grading, 28 px CNN) at 3, 10 and 50 sites holding the same 1000
training images, 2 rounds, local engine, one torch thread; both settings run side by side in this
process, so the ratios compare like with like. Bytes are the serialised size (Flower's protobuf)
of every training-type reply a site sends in a round: one reply without secure aggregation, the
four SecAgg+ exchanges with it (public keys, encrypted key shares, the masked update, the shares
that unmask the sum). ``num_shares = 1.0``: every site is every site's neighbour (classic SecAgg),
the most expensive graph.
"""

from __future__ import annotations

import statistics
import tempfile
from collections import defaultdict
from pathlib import Path

from flwr.common.serde import message_to_proto

from benchmarks.common import REPO, table
from fedsilo.config import load_config
from fedsilo.federation import client_app
from fedsilo.federation.inprocess import InProcessGrid, run_on_grid
from fedsilo.run.app import make_server_app
from fedsilo.run.folder import RunDir

NAME = "secagg"
TITLE = "Secure aggregation cost: round time and bytes per site, with and without SecAgg+ (issue 21)"


class CountingGrid(InProcessGrid):
    """An in-process grid that adds up the serialised size of the training replies per node."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.sent: dict[int, int] = defaultdict(int)

    def _deliver(self, msg):  # noqa: ANN001, ANN202
        reply = super()._deliver(msg)
        if msg.metadata.message_type == "train" and not reply.has_error():
            self.sent[msg.metadata.dst_node_id] += message_to_proto(reply).ByteSize()
        return reply


def _run(sites: int, secure: bool, rounds: int, out: Path) -> tuple[float, float]:
    cfg = load_config(REPO / "configs" / "quick-classify.toml", [
        "experiment.threads=1", f"federation.num_sites={sites}", f"federation.rounds={rounds}",
        f"federation.eval_every={rounds}", "partition.name=iid", "data.phantom.n_train=1000",
        "data.phantom.n_test=200", "eval.keep_models=false", f"federation.secure_aggregation={str(secure).lower()}"])
    run = RunDir.create(out, cfg, "local")
    grid = CountingGrid(client_app.app, [{"partition-id": i, "num-partitions": sites} for i in range(sites)])
    run_on_grid(make_server_app(run.path), grid)
    seconds = [r["round_seconds"] for r in run.read_metrics() if r["scope"] == "global" and "round_seconds" in r]
    return statistics.median(seconds), statistics.fmean(grid.sent.values()) / rounds


def run(quick: bool = False) -> str:
    counts = (3, 10) if quick else (3, 10, 50)
    rounds = 2
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for sites in counts:
            plain_t, plain_b = _run(sites, False, rounds, Path(tmp) / f"plain-{sites}")
            secure_t, secure_b = _run(sites, True, rounds, Path(tmp) / f"secure-{sites}")
            print(f"  {sites} sites: {plain_t:.2f} s vs {secure_t:.2f} s per round; {plain_b / 1e3:.1f} kB vs "
                  f"{secure_b / 1e3:.1f} kB per site", flush=True)
            rows.append([sites, f"{plain_t:.2f}", f"{secure_t:.2f}", f"{secure_t / plain_t:.2f}",
                         f"{plain_b / 1e3:.1f}", f"{secure_b / 1e3:.1f}", f"{secure_b / plain_b:.2f}"])
    header = ["sites", "round s (plain)", "round s (SecAgg+)", "time ratio", "kB sent per site (plain)",
              "kB sent per site (SecAgg+)", "bytes ratio"]
    return ("quick-classify, 1000 training images split over the sites, 2 rounds, median round time "
            "(training, aggregation and evaluation) and mean bytes a site sends per round.\n\n"
            + table(header, rows)
            + f"\n\nAt {counts[-1]} sites SecAgg+ takes {float(rows[-1][3]):.2f}x the round time and each site sends "
              f"{float(rows[-1][6]):.2f}x the bytes; with every site every other's neighbour (num_shares = 1.0) the "
              "key exchanges grow with the number of sites, which `federation.secagg.num_shares` below 1 bounds "
              "(SecAgg+'s sparse graph).")
