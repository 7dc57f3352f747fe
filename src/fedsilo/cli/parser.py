"""The ``fedsilo`` argument parser."""

from __future__ import annotations

import argparse

from fedsilo import __version__
from fedsilo.cli.commands import (
    cmd_audit,
    cmd_compare,
    cmd_config_docs,
    cmd_data,
    cmd_demo,
    cmd_deploy,
    cmd_export,
    cmd_predict,
    cmd_report,
    cmd_run,
    cmd_sample,
    cmd_sweep,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fedsilo", description="Cross-silo federated learning for medical imaging.")
    parser.add_argument("--version", action="version", version=f"fedsilo {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logs and tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run (or resume) one experiment")
    run.add_argument("config", nargs="?", help="experiment TOML file")
    run.add_argument("--out", help="run folder (must not exist or be empty; default runs/<name>-<time>)")
    run.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from its last checkpoint")
    run.add_argument("--engine", choices=["local", "simulation"], help="override experiment.engine")
    run.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                     help="override a config key, e.g. --set federation.rounds=10 (repeatable)")
    run.set_defaults(func=cmd_run)

    sw = sub.add_parser("sweep", help="grid x modes x seeds, then a comparison table")
    sw.add_argument("config", help="experiment TOML file")
    sw.add_argument("--out", help="sweep folder (default runs/sweep-<time>)")
    sw.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2",
                    help="config key and the values to sweep (repeatable: the product is run)")
    sw.add_argument("--modes", default="federated,centralised,local", help="comma-separated modes")
    sw.add_argument("--seeds", type=int, default=1, help="number of seeds (experiment.seed, +1, ...)")
    sw.add_argument("--seed-base", type=int, default=0, help="first seed")
    sw.add_argument("--seed-list", type=lambda s: [int(x) for x in s.split(",")], help="explicit seeds, e.g. 0,7,9")
    sw.add_argument("--engine", choices=["local", "simulation"], help="override experiment.engine")
    sw.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                    help="override a config key for every run (repeatable)")
    sw.add_argument("--audit", action="store_true", help="audit each finished run (audit_* columns in the table)")
    sw.set_defaults(func=cmd_sweep)

    au = sub.add_parser("audit", help="measure what a finished run leaks (membership, inversion, ...)")
    au.add_argument("run_dir", help="a finished run folder")
    au.add_argument("--attacks", help="comma-separated audits of the task (default: audit.attacks, or all)")
    au.add_argument("--set", dest="sets", action="append", default=[], metavar="audit.KEY=VALUE",
                    help="override an [audit] setting, e.g. --set audit.reference_models=8 (repeatable)")
    au.add_argument("--device", help="torch device (default: the run's experiment.device)")
    au.set_defaults(func=cmd_audit)

    data = sub.add_parser("data", help="phantoms, inspection, de-identification")
    dsub = data.add_subparsers(dest="data_command", required=True)
    ph = dsub.add_parser("phantom", help="write built-in phantoms in the layouts the loaders read")
    ph.add_argument("--kind", choices=["abdomen", "fundus"], required=True)
    ph.add_argument("--modality", choices=["ct", "mr"], default="ct", help="abdomen only")
    ph.add_argument("--n", type=int, default=4, help="patients (abdomen) or images (fundus)")
    ph.add_argument("--out", required=True, help="folder to create (must be new or empty)")
    ph.add_argument("--seed", type=int, default=0)
    ph.add_argument("--shape", default="32x128x128", help="abdomen volume DxHxW")
    ph.add_argument("--size", type=int, default=128, help="fundus image size in pixels")
    ins = dsub.add_parser("inspect", help="table of patients/slices/spacings/organs and a preview PNG")
    ins.add_argument("path", help="data folder, NIfTI file, manifest CSV or experiment config (.toml)")
    ins.add_argument("--preview", help="PNG to write (default runs/inspect/inspect-<name>.png)")
    ins.add_argument("--modality", choices=["ct", "mr"], help="modality when the files do not say")
    ins.add_argument("--mapping", help="label table (chaos_mr, amos, totalsegmentator_v2, fedsilo or a .toml)")
    de = dsub.add_parser("deidentify", help="remove patient-identifying DICOM attributes (PS3.15 basic profile)")
    de.add_argument("dicom_dir")
    de.add_argument("--out", required=True, help="new or empty output folder")
    de.add_argument("--log-format", choices=["csv", "json"], default="csv")
    data.set_defaults(func=cmd_data)

    dep = sub.add_parser("deploy", help="multi-site deployment on Flower (TLS + SuperNode authentication)")
    dsub2 = dep.add_subparsers(dest="deploy_command", required=True)
    ce = dsub2.add_parser("certs", help="CA, SuperLink certificate and one SuperNode key pair per site")
    ce.add_argument("--out", required=True, help="folder to write (existing keys are never overwritten)")
    ce.add_argument("--sites", required=True, help="comma-separated site names, e.g. hospital-a,hospital-b")
    ce.add_argument("--hosts", help="comma-separated host names/IPs of the SuperLink (default localhost,127.0.0.1,::1)")
    ce.add_argument("--days", type=int, default=825, help="certificate validity in days")
    sl = dsub2.add_parser("superlink", help="start the coordinator's SuperLink and register the sites' keys")
    sl.add_argument("--certs", required=True, help="the `deploy certs` folder")
    sl.add_argument("--address", default="0.0.0.0:9093", help="HOST:PORT to listen on (default 0.0.0.0:9093)")
    sl.add_argument("--database", help="SuperLink state file (default CERTS/superlink/state.db)")
    sn = dsub2.add_parser("supernode", help="start a site's SuperNode next to its data")
    sn.add_argument("--certs", required=True, help="the site's certificate folder (or the whole `deploy certs` folder)")
    sn.add_argument("--site", required=True, help="the site's name")
    sn.add_argument("--data", required=True, help="the site's data: a MedMNIST-layout .npz or an image folder + CSV")
    sn.add_argument("--superlink", default="127.0.0.1:9093", help="HOST:PORT of the SuperLink")
    sn.add_argument("--port", type=int, default=9094, help="local ClientApp API port (distinct per SuperNode on a host)")
    sn.add_argument("--ledger", help="folder of the site's own privacy ledger (default: privacy-ledger/ beside its key)")
    sn.add_argument("--max-epsilon", type=float, default=0.0,
                    help="the site's own epsilon cap per study, whatever the coordinator's config says (0 = none)")
    sn.add_argument("--isolation", choices=["worker", "subprocess"], default="worker",
                    help="worker (default): one long-lived ClientApp process keeps data, model and caches warm; "
                         "subprocess: Flower's own, a new ClientApp process per message")
    dr = dsub2.add_parser("run", help="run an experiment on the deployment; results in a run folder")
    dr.add_argument("config", nargs="?", help="experiment TOML file")
    dr.add_argument("--superlink", default="127.0.0.1:9093", help="HOST:PORT of the SuperLink")
    dr.add_argument("--certs", required=True, help="`deploy certs` folder (or any folder with ca.pem)")
    dr.add_argument("--out", help="run folder to create on this (the coordinator's) host")
    dr.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted deployment run")
    dr.add_argument("--timeout", type=float, help="give up waiting after this many seconds")
    dr.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                    help="override a config key (repeatable)")
    sp = dsub2.add_parser("split-data", help="rehearsal: write each site's share of a config's data to a folder")
    sp.add_argument("config", help="experiment TOML file")
    sp.add_argument("--out", required=True, help="new folder; one sub-folder per site")
    sp.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    dep.set_defaults(func=cmd_deploy)

    dm = sub.add_parser("demo", help="the headline demo on built-in phantoms (what `make demo` runs)")
    dm.add_argument("--out", help="new folder for the demo (default runs/demo-<time>)")
    dm.add_argument("--seed", type=int, default=0, help="experiment.seed of every run (default 0)")
    dm.set_defaults(func=cmd_demo)

    cd = sub.add_parser("config-docs", help="print (or write) the reference of every config key")
    cd.add_argument("--out", help="file to write, e.g. docs/CONFIG.md")
    cd.set_defaults(func=cmd_config_docs)

    rep = sub.add_parser("report", help="(re)write report.html of a run or sweep folder")
    rep.add_argument("path", help="run folder or sweep folder")
    rep.set_defaults(func=cmd_report)

    ex = sub.add_parser("export", help="export a trained model to ONNX or TorchScript with its input contract")
    ex.add_argument("run_dir", help="a finished run folder")
    ex.add_argument("--format", choices=["onnx", "torchscript"], default="onnx")
    ex.add_argument("--out", help="folder for the model and contract (default RUN_DIR/export)")
    _add_weights_args(ex)
    ex.set_defaults(func=cmd_export)

    sa = sub.add_parser("sample", help="write a synthetic data set from a trained generator")
    sa.add_argument("run_dir", help="a finished synthesis run folder")
    sa.add_argument("--n", type=int, required=True, help="number of images")
    sa.add_argument("--out", required=True, help="new or empty folder")
    sa.add_argument("--grade", type=int, help="only this DR grade 0-4 (conditional generators)")
    sa.add_argument("--seed", type=int, default=0, help="seed of the latent codes")
    sa.add_argument("--device", help="torch device (default: the run's experiment.device)")
    _add_weights_args(sa)
    sa.set_defaults(func=cmd_sample)

    pr = sub.add_parser("predict", help="segment NIfTI volumes or DICOM series with a trained segmentation run")
    pr.add_argument("run_dir", help="a finished segmentation run folder")
    pr.add_argument("--input", required=True, help="a .nii/.nii.gz file, a DICOM series folder, or a folder of them")
    pr.add_argument("--out", required=True, help="new or empty folder for label maps, volumes.csv and overlays")
    pr.add_argument("--modality", choices=["ct", "mr"], help="modality of the inputs (NIfTI does not record it)")
    pr.add_argument("--device", help="torch device (default: the run's experiment.device)")
    _add_weights_args(pr)
    pr.set_defaults(func=cmd_predict)

    cmp_ = sub.add_parser("compare", help="side-by-side table and overlaid curves of runs")
    cmp_.add_argument("runs", nargs="+", help="run folders")
    cmp_.add_argument("--out", help="HTML file to write (default compare-<time>.html in the runs' common folder)")
    cmp_.set_defaults(func=cmd_compare)
    return parser


def _add_weights_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--round", type=int, help="a kept evaluation round (default: the final model)")
    p.add_argument("--site", help="a site's own model (local mode, site-local layers; default: global)")
