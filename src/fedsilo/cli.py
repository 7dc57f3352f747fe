"""The ``fedsilo`` command.

::

    fedsilo run CONFIG --out RUN_DIR [--engine local|simulation] [--set key=value ...]
    fedsilo run --resume RUN_DIR [--engine ...]
    fedsilo sweep CONFIG --out DIR [--grid key=v1,v2 ...] [--modes m1,m2] [--seeds N] [--set ...] [--audit]
    fedsilo report RUN_OR_SWEEP_DIR
    fedsilo data phantom --kind abdomen|fundus --modality ct|mr --n N --out DIR
    fedsilo data inspect PATH_OR_CONFIG [--preview PNG]
    fedsilo data deidentify DICOM_DIR --out DIR
    fedsilo compare RUN_A RUN_B ... [--out FILE]
    fedsilo audit RUN_DIR [--attacks a,b] [--set audit.key=value ...] [--device DEV]
    fedsilo deploy certs --out DIR --sites a,b,c [--hosts host1,10.0.0.5]
    fedsilo deploy superlink --certs DIR [--address 0.0.0.0:9093]
    fedsilo deploy supernode --certs DIR --site NAME --data PATH --superlink HOST:PORT [--port 9094]
    fedsilo deploy run CONFIG --superlink HOST:PORT --certs DIR --out RUN_DIR   (or --resume RUN_DIR)
    fedsilo deploy split-data CONFIG --out DIR   (rehearsal: each site's share of a config's data)

User errors (bad config, bad data, an existing run folder) print one clear line and exit with
status 2; ``-v`` shows debug logs and tracebacks.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from fedsilo import __version__

logger = logging.getLogger("fedsilo.cli")

EXIT_USER_ERROR = 2


class UsageError(Exception):
    """A bad command-line value (reported like other user errors: one line, exit code 2)."""


def _user_errors() -> tuple[type[BaseException], ...]:
    from fedsilo.config import ConfigError
    from fedsilo.data.errors import DataError
    from fedsilo.deploy.certs import DeployError
    from fedsilo.rounds import FederationError
    from fedsilo.run.folder import RunDirError

    return (
        ConfigError,
        DataError,
        RunDirError,
        FederationError,
        FileNotFoundError,
        UsageError,
        DeployError,
    )


def setup_logging(verbose: bool) -> bool:
    """Rich logging on a terminal, plain lines elsewhere; returns whether stderr is a terminal."""
    tty = sys.stderr.isatty()
    level = logging.DEBUG if verbose else logging.INFO
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    if tty:
        from rich.logging import RichHandler

        handler: logging.Handler = RichHandler(show_path=False, rich_tracebacks=verbose, markup=False)
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    root.addHandler(handler)
    root.setLevel(level)
    # Flower logs every sampling step at INFO through its own handler; keep it to warnings.
    # (Import it first: importing flwr resets its logger to DEBUG.)
    import flwr.supercore.logger  # noqa: F401

    flwr = logging.getLogger("flwr")
    flwr.setLevel(logging.DEBUG if verbose else logging.WARNING)
    flwr.propagate = False
    for name in ("ray", "matplotlib", "PIL", "filelock", "urllib3", "opacus"):
        logging.getLogger(name).setLevel(logging.WARNING)
    return tty


def _reporter(tty: bool):
    from fedsilo.progress import Reporter, RichReporter

    return RichReporter() if tty else Reporter()


# --------------------------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace, tty: bool) -> int:
    from fedsilo import progress
    from fedsilo.config import load_config
    from fedsilo.report import write_run_files
    from fedsilo.run.start import resume_run, start_run

    if args.resume:
        if args.config or args.sets:
            raise UsageError("fedsilo run --resume takes only the run folder (its config is fixed)")
        with progress.use(_reporter(tty)):
            run = resume_run(args.resume, args.engine)
        write_run_files(run.path)
    else:
        if not args.config:
            raise UsageError("fedsilo run needs a CONFIG file (or --resume RUN_DIR)")
        cfg = load_config(args.config, args.sets)
        out = args.out or str(Path("runs") / f"{cfg.experiment.name}-{time.strftime('%Y%m%d-%H%M%S')}")
        with progress.use(_reporter(tty)):
            run = start_run(cfg, out, args.engine)
        write_run_files(run.path)
    _print_run_summary(run)
    return 0


def _print_run_summary(run) -> None:
    from fedsilo.report.summary import headline_columns, scope_table, text_table
    from fedsilo.tasks import make_task

    header, rows = scope_table(run, headline_columns(run, make_task(run.cfg)))
    if rows:
        print(f"\nFinal metrics ({run.cfg.experiment.mode}, {run.cfg.federation.rounds} rounds):")
        print(text_table(header, rows))
    print(f"\nResults: {run.path}")


def cmd_sweep(args: argparse.Namespace, tty: bool) -> int:
    from fedsilo import progress
    from fedsilo.sweep import SweepSpec, parse_grid, run_sweep

    seeds = args.seed_list or list(range(args.seed_base, args.seed_base + args.seeds))
    spec = SweepSpec(config=args.config, grid=parse_grid(args.grid), modes=args.modes.split(","),
                     seeds=seeds, overrides=list(args.sets), engine=args.engine, audit=args.audit)
    out = args.out or str(Path("runs") / f"sweep-{time.strftime('%Y%m%d-%H%M%S')}")
    with progress.use(_reporter(tty)):
        md = run_sweep(spec, out)
    print(md.read_text(encoding="utf-8"))
    print(f"Results: {out}")
    return 0


def cmd_audit(args: argparse.Namespace, tty: bool) -> int:
    from fedsilo.audit.registry import AUDIT_MD, run_audit

    attacks = [a.strip() for a in args.attacks.split(",") if a.strip()] if args.attacks else None
    run_audit(args.run_dir, attacks, args.sets, args.device)
    from fedsilo.report.modelcard import write_model_card

    write_model_card(args.run_dir)  # the card quotes the measured leakage
    print((Path(args.run_dir) / AUDIT_MD).read_text(encoding="utf-8"))
    print(f"Audit: {Path(args.run_dir) / 'audit.json'}")
    return 0


def cmd_export(args: argparse.Namespace, tty: bool) -> int:
    from fedsilo.inference.export import export_run

    path = export_run(args.run_dir, args.format, args.out, round_=args.round, site=args.site)
    print(f"Exported: {path} (contract: {path.parent / f'contract-{args.format}.json'})")
    return 0


def cmd_sample(args: argparse.Namespace, tty: bool) -> int:
    from fedsilo.inference.sample import sample_run

    try:
        out = sample_run(args.run_dir, args.n, args.out, grade=args.grade, seed=args.seed, round_=args.round,
                         site=args.site, device=args.device)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    print(f"Wrote {args.n} synthetic images to {out} (images/ + labels.csv, synthetic.npz, provenance.json)")
    return 0


def cmd_predict(args: argparse.Namespace, tty: bool) -> int:
    from fedsilo.inference.predict import predict_path

    summary = predict_path(args.run_dir, args.input, args.out, modality=args.modality, round_=args.round,
                           site=args.site, device=args.device)
    print(f"Segmented {len(summary.written)} case(s) into {summary.out} (label maps, volumes.csv, overlays/)")
    for name, err in summary.failed.items():
        print(f"fedsilo: case {name} failed: {err}", file=sys.stderr)
    return 1 if summary.failed else 0


def cmd_report(args: argparse.Namespace, tty: bool) -> int:
    from fedsilo.report import run_report, sweep_report
    from fedsilo.run.folder import RunDirError

    path = Path(args.path)
    if (path / "sweep.json").is_file():
        out = sweep_report(path)
    elif (path / "config.toml").is_file():
        from fedsilo.report.modelcard import write_model_card

        print(f"Model card: {write_model_card(path)}")
        out = run_report(path)
    else:
        raise RunDirError(f"{str(path)!r} is neither a run folder (config.toml) nor a sweep folder (sweep.json)")
    print(f"Report: {out}")
    return 0


def cmd_compare(args: argparse.Namespace, tty: bool) -> int:
    from fedsilo.report import compare_report

    out = args.out or f"compare-{time.strftime('%Y%m%d-%H%M%S')}.html"
    if Path(out).exists():
        from fedsilo.run.folder import RunDirError

        raise RunDirError(f"{out} exists; choose another --out")
    print(f"Comparison: {compare_report(args.runs, out)}")
    return 0


def cmd_data(args: argparse.Namespace, tty: bool) -> int:
    from fedsilo.data import tools

    if args.data_command == "phantom":
        if args.kind == "abdomen":
            try:
                shape = tuple(int(v) for v in args.shape.split("x"))
            except ValueError:
                shape = ()
            if len(shape) != 3 or min(shape) < 1:
                raise UsageError(f"--shape must look like DxHxW, e.g. 32x128x128, got {args.shape!r}")
            paths = tools.write_abdomen_phantom(args.out, args.n, args.modality, seed=args.seed, shape=shape)
            print(f"Wrote {len(paths)} {args.modality.upper()} phantom patients (CHAOS layout) to {args.out}")
        else:
            csv_path = tools.write_fundus_phantom(args.out, args.n, size=args.size, seed=args.seed)
            print(f"Wrote {args.n} fundus phantom images (APTOS layout) and {csv_path}")
        return 0
    if args.data_command == "inspect":
        out_png = Path(args.preview or f"inspect-{Path(args.path).stem.split('.')[0]}.png")
        if out_png.exists():
            from fedsilo.run.folder import RunDirError

            raise RunDirError(f"{out_png} exists; choose another --preview")
        text, png = tools.inspect_path(args.path, out_png, args.modality, args.mapping)
        print(text)
        print(f"\nPreview: {png}")
        return 0
    from fedsilo.data.deidentify import deidentify

    report = deidentify(args.dicom_dir, args.out, log_format=args.log_format)
    print(f"De-identified {len(report.files)} DICOM file(s) into {args.out}; log: {report.log_path}")
    if report.burned_in:
        print(f"Warning: {len(report.burned_in)} file(s) declare burned-in annotations; check their pixels by hand")
    return 0


def cmd_demo(args: argparse.Namespace, tty: bool) -> int:
    from fedsilo import progress
    from fedsilo.demo import run_demo

    out = args.out or str(Path("runs") / f"demo-{time.strftime('%Y%m%d-%H%M%S')}")
    with progress.use(_reporter(tty)):
        index = run_demo(out)
    for summary in sorted(Path(out).glob("*/summary.md")):
        print(summary.read_text(encoding="utf-8"))
    print(f"Demo report: {index}")
    return 0


def cmd_deploy(args: argparse.Namespace, tty: bool) -> int:
    from fedsilo.deploy import launch

    if args.deploy_command == "certs":
        from fedsilo.deploy.certs import make_certs

        hosts = [h for h in args.hosts.split(",") if h.strip()] if args.hosts else ["localhost", "127.0.0.1", "::1"]
        bundles = make_certs(args.out, args.sites.split(","), hosts, days=args.days)
        print(f"Wrote the CA, the SuperLink certificate ({', '.join(hosts)}) and {len(bundles)} site key(s) to "
              f"{args.out}")
        for b in bundles:
            print(f"  give {b.private_key.parent} to site {b.name} (index {b.index}); its key stays private")
        return 0
    if args.deploy_command == "superlink":
        return launch.run_superlink(args.certs, args.address, database=args.database)
    if args.deploy_command == "supernode":
        return launch.run_supernode(args.certs, args.site, args.data, args.superlink, port=args.port)
    if args.deploy_command == "split-data":
        from fedsilo.config import load_config
        from fedsilo.deploy.sites import write_site_folders

        folders = write_site_folders(load_config(args.config, args.sets), args.out)
        for name, folder in folders.items():
            print(f"{name}: {folder}")
        return 0
    from fedsilo import progress
    from fedsilo.config import load_config
    from fedsilo.deploy.run import deploy_run
    from fedsilo.report import write_run_files

    if args.resume and (args.config or args.out):
        raise UsageError("fedsilo deploy run --resume takes only the run folder (its config is fixed)")
    if not args.resume and not (args.config and args.out):
        raise UsageError("fedsilo deploy run needs CONFIG and --out RUN_DIR (or --resume RUN_DIR)")
    cfg = load_config(args.config, args.sets) if args.config else None
    ca = Path(args.certs) / "ca.pem" if (Path(args.certs) / "ca.pem").is_file() else \
        Path(args.certs) / "superlink" / "ca.pem"
    with progress.use(_reporter(tty)):
        run = deploy_run(cfg, args.superlink, ca, args.resume or args.out, resume=bool(args.resume),
                         timeout=args.timeout)
    write_run_files(run.path)
    _print_run_summary(run)
    return 0


def cmd_config_docs(args: argparse.Namespace, tty: bool) -> int:
    from fedsilo.config.docs import config_reference

    text = config_reference()
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
        print(f"Wrote {args.out}")
    else:
        print(text, end="")
    return 0


# --------------------------------------------------------------------------------------------
# Parser
# --------------------------------------------------------------------------------------------


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
    ins.add_argument("--preview", help="PNG to write (default inspect-<name>.png)")
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
    cmp_.add_argument("--out", help="HTML file to write (default compare-<time>.html)")
    cmp_.set_defaults(func=cmd_compare)
    return parser


def _add_weights_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--round", type=int, help="a kept evaluation round (default: the final model)")
    p.add_argument("--site", help="a site's own model (local mode, site-local layers; default: global)")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    tty = setup_logging(args.verbose)
    try:
        return int(args.func(args, tty) or 0)
    except _user_errors() as exc:
        if args.verbose:
            logger.exception("failed")
        print(f"fedsilo: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("fedsilo: interrupted; resume with `fedsilo run --resume RUN_DIR`", file=sys.stderr)
        return 130
