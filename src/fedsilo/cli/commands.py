"""The ``fedsilo`` subcommands: each parses nothing, calls the library, prints a short result."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from fedsilo.cli.common import UsageError, reporter


def cmd_run(args: argparse.Namespace, tty: bool) -> int:
    from fedsilo import progress
    from fedsilo.config import load_config
    from fedsilo.report import write_run_files
    from fedsilo.run.start import resume_run, start_run

    if args.resume:
        if args.config or args.sets:
            raise UsageError("fedsilo run --resume takes only the run folder (its config is fixed)")
        with progress.use(reporter(tty)):
            run = resume_run(args.resume, args.engine)
        write_run_files(run.path)
    else:
        if not args.config:
            raise UsageError("fedsilo run needs a CONFIG file (or --resume RUN_DIR)")
        cfg = load_config(args.config, args.sets)
        out = args.out or str(Path("runs") / f"{cfg.experiment.name}-{time.strftime('%Y%m%d-%H%M%S')}")
        with progress.use(reporter(tty)):
            run = start_run(cfg, out, args.engine)
        write_run_files(run.path)
    _print_run_summary(run)
    return 0


def _print_run_summary(run) -> None:
    from fedsilo.report.summary import headline_columns, scope_table, text_table
    from fedsilo.report.tasks import presenter_for

    header, rows = scope_table(run, headline_columns(run, presenter_for(run.cfg)))
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
    with progress.use(reporter(tty)):
        md = run_sweep(spec, out)
    print(md.read_text(encoding="utf-8"))
    print(f"Results: {out}")
    return 0


def cmd_audit(args: argparse.Namespace, tty: bool) -> int:
    from fedsilo import progress
    from fedsilo.audit.registry import AUDIT_MD, run_audit

    attacks = [a.strip() for a in args.attacks.split(",") if a.strip()] if args.attacks else None
    with progress.use(reporter(tty)):
        run_audit(args.run_dir, attacks, args.sets, args.device)
    from fedsilo.report import write_run_files

    write_run_files(args.run_dir)  # the model card and report.html show the measured leakage
    print((Path(args.run_dir) / AUDIT_MD).read_text(encoding="utf-8"))
    print(f"Audit: {Path(args.run_dir) / 'audit.json'}")
    return 0


def cmd_export(args: argparse.Namespace, tty: bool) -> int:
    from fedsilo.inference.export import export_run

    path = export_run(args.run_dir, args.format, args.out, round_=args.round, site=args.site)
    print(f"Exported: {path} (contract: {path.parent / f'contract-{args.format}.json'})")
    return 0


def cmd_sample(args: argparse.Namespace, tty: bool) -> int:
    from fedsilo import progress
    from fedsilo.inference.sample import sample_run

    try:
        with progress.use(reporter(tty)):
            out = sample_run(args.run_dir, args.n, args.out, grade=args.grade, seed=args.seed,
                             round_=args.round, site=args.site, device=args.device)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    print(f"Wrote {args.n} synthetic images to {out} (images/ + labels.csv, synthetic.npz, provenance.json)")
    return 0


def cmd_predict(args: argparse.Namespace, tty: bool) -> int:
    # the paths first: importing the model code alone takes seconds (the library checks the rest
    # of the arguments and the inputs before it loads the model)
    if not Path(args.input).exists():
        raise UsageError(f"--input {args.input}: not found (expected a .nii/.nii.gz file, a DICOM series "
                         f"folder or a folder of them)")
    if not (Path(args.run_dir) / "config.toml").is_file():
        raise UsageError(f"{args.run_dir!r} is not a fedsilo run folder (no config.toml)")
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
        from fedsilo.report import track_files
        from fedsilo.report.modelcard import write_model_card

        card = write_model_card(path)
        print(f"Model card: {card}")
        out = run_report(path)
        track_files(path, [card, out])  # the tracker run (experiment.tracking) gets the new files
    else:
        raise RunDirError(f"{str(path)!r} is neither a run folder (config.toml) nor a sweep folder (sweep.json)")
    print(f"Report: {out}")
    return 0


def cmd_compare(args: argparse.Namespace, tty: bool) -> int:
    from fedsilo.report import compare_report
    from fedsilo.run.folder import RunDir

    runs = [RunDir.open(p) for p in args.runs]
    tasks = {r.cfg.experiment.task for r in runs}
    if len(tasks) > 1:
        raise UsageError("compare needs runs of one task (their metrics differ), got "
                         + ", ".join(f"{r.path.name}: {r.cfg.experiment.task}" for r in runs))
    # beside the runs (their common folder), never into the current directory
    paths = [r.path.resolve() for r in runs]
    base = Path(os.path.commonpath(paths))
    if base in paths:
        base = base.parent
    out = args.out or base / f"compare-{time.strftime('%Y%m%d-%H%M%S')}.html"
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
        # with fedsilo's other outputs under runs/ (ignored by git), not loose in the current
        # directory, and never beside the data (a data folder may be read-only or shared)
        name = Path(args.path).resolve().stem.split(".")[0]
        out_png = Path(args.preview) if args.preview else Path("runs") / "inspect" / f"inspect-{name}.png"
        out_png.parent.mkdir(parents=True, exist_ok=True)
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
    with progress.use(reporter(tty)):
        index = run_demo(out, seed=args.seed)
    for summary in sorted(Path(out).glob("*/summary.md")):
        print(summary.read_text(encoding="utf-8"))
    claims = json.loads((Path(out) / "claims.json").read_text(encoding="utf-8"))["claims"]
    for c in claims:
        print(f"{'shown' if c['holds'] else 'NOT shown':>9}: {c['statement']} ({c['evidence']})")
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
        return launch.run_supernode(args.certs, args.site, args.data, args.superlink, port=args.port,
                                    ledger=args.ledger, max_epsilon=args.max_epsilon, isolation=args.isolation)
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
    with progress.use(reporter(tty)):
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
