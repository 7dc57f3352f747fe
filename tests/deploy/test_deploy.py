"""Deployment (issue 7): certificates, pre-flight checks, site folders, attack hook, bad input.

The multi-process tests (SuperLink + SuperNodes over TLS with SuperNode authentication) are in
``tests/test_deploy_e2e.py`` (marker ``deploy``, ``make test-deploy``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import socket
import ssl
import stat
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedsilo.cli import main
from fedsilo.data.errors import DataError
from fedsilo.deploy.certs import DeployError, issue_certificate, make_certs, read_site_bundle
from fedsilo.deploy.checks import check_auth_key, check_server_files, parse_address, san_names, tls_handshake
from fedsilo.deploy.sites import write_site_folders
from fedsilo.federation.poisoning import poison
from fedsilo.tasks import make_task
from helpers import REPO_ROOT, chaos_sites, phantom_classification_config, seg_config

SRC = REPO_ROOT / "src"


# -- certificates --------------------------------------------------------------------------------


def test_certs_layout_modes_and_flower_formats(tmp_path):
    bundles = make_certs(tmp_path / "c", ["a", "b", "c"], ["coordinator.example", "10.0.0.5"])
    root = tmp_path / "c"
    assert [(b.name, b.index) for b in bundles] == [("a", 0), ("b", 1), ("c", 2)]
    for key in [root / "ca/ca.key", root / "superlink/server.key", *[b.private_key for b in bundles]]:
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, key
    server = x509.load_pem_x509_certificate((root / "superlink/server.pem").read_bytes())
    assert sorted(san_names(server)) == ["10.0.0.5", "coordinator.example"]
    check_server_files(root / "superlink/ca.pem", root / "superlink/server.pem", root / "superlink/server.key",
                       ["coordinator.example"])
    # the formats Flower reads: OpenSSH EC private key (flower-supernode), OpenSSH public key (flwr supernode register)
    from flwr.cli.supernode.register import try_load_public_key

    key = serialization.load_ssh_private_key(bundles[0].private_key.read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp384r1"
    assert len(try_load_public_key(bundles[0].public_key)) > 0
    lines = (root / "public-keys.csv").read_text().splitlines()
    assert lines[0] == "site,index,public_key" and lines[2].startswith("b,1,ecdsa-sha2-nistp384 ")
    assert read_site_bundle(root, "b") == bundles[1] and read_site_bundle(root / "sites/b", "b") == bundles[1]
    check_auth_key(bundles[0].private_key)


def test_certs_never_overwrite_keys(tmp_path):
    make_certs(tmp_path / "c", ["a"])
    before = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in (tmp_path / "c").rglob("*") if p.is_file()}
    with pytest.raises(DeployError, match="refusing to overwrite existing keys: .*ca.key"):
        make_certs(tmp_path / "c", ["a", "z"])
    after = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in (tmp_path / "c").rglob("*") if p.is_file()}
    assert before == after
    assert main(["deploy", "certs", "--out", str(tmp_path / "c"), "--sites", "a"]) == 2


@pytest.mark.parametrize(("sites", "hosts", "match"), [
    ([], ["x"], "--sites must name at least one site"),
    (["a", "a"], ["x"], "site names must be unique"),
    (["a b"], ["x"], "site name must be letters"),
    (["a"], ["bad host!"], "--hosts entries must be host names or IP addresses"),
])
def test_certs_bad_input(tmp_path, sites, hosts, match):
    with pytest.raises(DeployError, match=match):
        make_certs(tmp_path / "c", sites, hosts)
    with pytest.raises(DeployError, match="days must be >= 1, got 0"):
        make_certs(tmp_path / "d", ["a"], days=0)


def test_read_site_bundle_errors(tmp_path):
    make_certs(tmp_path / "c", ["a"])
    with pytest.raises(DeployError, match="site.toml: no such file"):
        read_site_bundle(tmp_path / "c", "zz")
    with pytest.raises(DeployError, match="belongs to site 'a', not --site 'b'"):
        read_site_bundle(tmp_path / "c" / "sites" / "a", "b")
    (tmp_path / "c/sites/a/site.toml").write_text("name = [")
    with pytest.raises(DeployError, match="not a site description"):
        read_site_bundle(tmp_path / "c", "a")


def test_auth_key_checks(tmp_path):
    bundles = make_certs(tmp_path / "c", ["a"])
    bundles[0].private_key.chmod(0o644)
    with pytest.raises(DeployError, match="readable by others .*chmod 600"):
        check_auth_key(bundles[0].private_key)
    bad = tmp_path / "bad.key"
    bad.write_text("not a key")
    with pytest.raises(DeployError, match="bad.key: not an unencrypted OpenSSH private key"):
        check_auth_key(bad)
    with pytest.raises(DeployError, match="no such file"):
        check_auth_key(tmp_path / "missing.key")


@pytest.mark.parametrize(("text", "match"), [("localhost", "HOST:PORT"), ("h:0", "1..65535"), (":9", "HOST:PORT"),
                                             ("h:x", "HOST:PORT")])
def test_parse_address_errors(text, match):
    with pytest.raises(DeployError, match=match):
        parse_address(text)


def test_parse_address():
    assert parse_address("10.0.0.5:9093") == ("10.0.0.5", 9093)
    assert parse_address("[::1]:9093") == ("::1", 9093)


def _bad_server_cert(root: Path, *, hosts=("127.0.0.1",), expired=False) -> None:
    """Replace the SuperLink certificate of a certs folder (expired, or for other hosts)."""
    ca_key = serialization.load_pem_private_key((root / "ca/ca.key").read_bytes(), None)
    ca = x509.load_pem_x509_certificate((root / "ca/ca.pem").read_bytes())
    key = serialization.load_pem_private_key((root / "superlink/server.key").read_bytes(), None)
    start = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=30 if expired else 0, minutes=5)
    cert = issue_certificate("fedsilo superlink", key, ca_key, ca, hosts=list(hosts), not_before=start,
                             days=2 if expired else 30)
    (root / "superlink/server.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def test_server_files_expired_wrong_host_wrong_ca(tmp_path):
    make_certs(tmp_path / "c", ["a"])
    make_certs(tmp_path / "other", ["a"])
    d = tmp_path / "c/superlink"
    with pytest.raises(DeployError, match="does not name host.*db.example"):
        check_server_files(d / "ca.pem", d / "server.pem", d / "server.key", ["db.example"])
    with pytest.raises(DeployError, match="was not issued by the CA"):
        check_server_files(tmp_path / "other/ca/ca.pem", d / "server.pem", d / "server.key")
    with pytest.raises(DeployError, match="does not belong to the certificate"):
        check_server_files(d / "ca.pem", d / "server.pem", tmp_path / "other/superlink/server.key")
    _bad_server_cert(tmp_path / "c", expired=True)
    with pytest.raises(DeployError, match=r"server.pem expired on"):
        check_server_files(d / "ca.pem", d / "server.pem", d / "server.key")
    (d / "server.pem").write_text("garbage")
    with pytest.raises(DeployError, match="server.pem: not a PEM certificate"):
        check_server_files(d / "ca.pem", d / "server.pem", d / "server.key")


def _tls_server(cert: Path, key: Path) -> tuple[int, threading.Thread]:
    """A one-connection TLS server on a free loopback port (bounded: one accept, 20 s timeout)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(cert), str(key))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    sock.settimeout(20)

    def serve() -> None:
        try:
            conn, _ = sock.accept()
            try:
                ctx.wrap_socket(conn, server_side=True).close()
            except (ssl.SSLError, OSError):
                conn.close()
        except OSError:
            pass
        finally:
            sock.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return sock.getsockname()[1], thread


@pytest.mark.parametrize(("case", "match"), [("ok", None), ("wrong-ca", "failed TLS verification"),
                                             ("wrong-host", "failed TLS verification.*(mismatch|match)"),
                                             ("expired", "failed TLS verification.*expired")])
def test_tls_handshake(tmp_path, case, match):
    make_certs(tmp_path / "c", ["a"])
    make_certs(tmp_path / "other", ["a"])
    if case == "wrong-host":
        _bad_server_cert(tmp_path / "c", hosts=["db.example"])
    if case == "expired":
        _bad_server_cert(tmp_path / "c", expired=True)
    d = tmp_path / "c/superlink"
    port, thread = _tls_server(d / "server.pem", d / "server.key")
    ca = tmp_path / ("other" if case == "wrong-ca" else "c") / "sites/a/ca.pem"
    if match is None:
        assert tls_handshake("127.0.0.1", port, ca) is True
    else:
        with pytest.raises(DeployError, match=match):
            tls_handshake("127.0.0.1", port, ca)
    thread.join(timeout=20)
    free = socket.socket()
    free.bind(("127.0.0.1", 0))
    closed = free.getsockname()[1]
    free.close()
    assert tls_handshake("127.0.0.1", closed, ca, timeout=2) is False


def test_supernode_cli_refuses_bad_inputs(tmp_path, capsys):
    make_certs(tmp_path / "c", ["a"])
    site = str(tmp_path / "c/sites/a")
    code = main(["deploy", "supernode", "--certs", site, "--site", "a", "--data", str(tmp_path / "nope"),
                 "--superlink", "127.0.0.1:1"])
    err = capsys.readouterr().err
    assert code == 2 and "--data" in err and "nope: no such file" in err and "Traceback" not in err
    # a wrong-CA SuperLink: the handshake fails before Flower starts
    make_certs(tmp_path / "other", ["a"])
    d = tmp_path / "other/superlink"
    port, thread = _tls_server(d / "server.pem", d / "server.key")
    (tmp_path / "data").mkdir()
    code = main(["deploy", "supernode", "--certs", site, "--site", "a", "--data", str(tmp_path / "data"),
                 "--superlink", f"127.0.0.1:{port}"])
    err = capsys.readouterr().err
    assert code == 2 and "failed TLS verification" in err and "Traceback" not in err
    thread.join(timeout=20)


# -- site folders ----------------------------------------------------------------------------------


def test_site_folders_match_the_local_partition(tmp_path):
    cfg = phantom_classification_config()
    folders = write_site_folders(cfg, tmp_path / "data")
    task = make_task(cfg)
    for index, (name, folder) in enumerate(folders.items()):
        site = task.site_from_path(str(folder), name)
        ref = task.site_data(index)
        assert name == ref.name == f"site-{index + 1}"
        assert torch.equal(site.train.images, ref.train.images) and torch.equal(site.train.labels, ref.train.labels)
        assert torch.equal(site.val.images, ref.val.images) and site.info == ref.info
    with pytest.raises(DataError, match="exists and is not empty"):
        write_site_folders(cfg, tmp_path / "data")


def test_site_from_imagefolder_and_npz_without_val(tmp_path):
    from fedsilo.data.tools import write_fundus_phantom

    cfg = phantom_classification_config()
    task = make_task(cfg)
    write_fundus_phantom(tmp_path / "aptos", 10, size=28, seed=1)
    site = task.site_from_path(str(tmp_path / "aptos"), "h1")
    assert len(site.train) + len(site.val) == 10 and len(site.val) == 2
    assert tuple(site.train.images.shape[1:]) == (3, 28, 28) and sum(site.info["class_counts"]) == len(site.train)
    imgs = np.zeros((5, 28, 28, 3), np.uint8)
    np.savez(tmp_path / "one.npz", train_images=imgs, train_labels=np.array([0, 1, 2, 3, 4]))
    site = task.site_from_path(str(tmp_path / "one.npz"), "h2")
    assert (len(site.train), len(site.val)) == (4, 1)


def test_site_from_path_bad_data(tmp_path):
    task = make_task(phantom_classification_config())
    folders = write_site_folders(phantom_classification_config(), tmp_path / "data")
    npz = folders["site-1"] / "data.npz"
    data = npz.read_bytes()
    (tmp_path / "trunc").mkdir()
    (tmp_path / "trunc/data.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"trunc/data.npz: not a readable .npz file"):
        task.site_from_path(str(tmp_path / "trunc"), "x")
    np.savez(tmp_path / "shape.npz", train_images=np.zeros((4, 16), np.uint8), train_labels=np.zeros(4, int))
    with pytest.raises(DataError, match=r"shape.npz.*images must have shape"):
        task.site_from_path(str(tmp_path / "shape.npz"), "x")
    np.savez(tmp_path / "grades.npz", train_images=np.zeros((2, 28, 28, 3), np.uint8), train_labels=np.array([0, 9]))
    with pytest.raises(DataError, match="grades.npz"):
        task.site_from_path(str(tmp_path / "grades.npz"), "x")
    with pytest.raises(DataError, match="does not exist"):
        task.site_from_path(str(tmp_path / "missing"), "x")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no .npz file and no label CSV 'labels.csv'"):
        task.site_from_path(str(tmp_path / "empty"), "x")
    (tmp_path / "two").mkdir()
    for n in ("a.npz", "b.npz"):
        (tmp_path / "two" / n).write_bytes(data)
    with pytest.raises(DataError, match="holds 2 .npz files"):
        task.site_from_path(str(tmp_path / "two"), "x")
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(DataError, match="must be a MedMNIST-layout .npz"):
        task.site_from_path(str(tmp_path / "x.txt"), "x")
    assert zipfile.is_zipfile(npz)  # the intact file stays readable


def test_segmentation_site_from_path_matches_the_local_engine(tmp_path):
    from fedsilo.data.tools import write_abdomen_phantom

    write_abdomen_phantom(tmp_path / "ct", 4, "ct", seed=3, shape=(8, 32, 32))
    write_abdomen_phantom(tmp_path / "mr", 4, "mr", seed=4, shape=(8, 32, 32))
    local = seg_config(sites=chaos_sites({("ct-site", "ct"): str(tmp_path / "ct"), ("mr-site", "mr"): str(tmp_path / "mr")}))
    ref = make_task(local).federated_data()
    # the coordinator's config names the sites; their folders are only known at the sites
    coord = seg_config(sites=chaos_sites({("ct-site", "ct"): "/nowhere/ct", ("mr-site", "mr"): "/nowhere/mr"}))
    task = make_task(coord)
    for r in ref.sites:
        site = task.site_from_path(str(tmp_path / r.info["modality"]), r.name)
        assert site.name == r.name and site.info == r.info and (r.info["patients_train"], r.info["patients_val"]) == (3, 1)
        assert torch.equal(site.train.images, r.train.images) and torch.equal(site.train.labels, r.train.labels)
        assert torch.equal(site.val.images, r.val.images)
    # the coordinator evaluates on its own test set without any site's scans
    test = task.test_data()
    assert test is not None and len(test) == 24 and torch.equal(test.images, make_task(local).test_data().images)
    with pytest.raises(DataError, match=r"site-name 'other' is not a \[\[data.sites\]\] entry.*ct-site"):
        task.site_from_path(str(tmp_path / "ct"), "other")
    with pytest.raises(DataError, match=r"empty: no image_<id>.nii"):
        (tmp_path / "empty").mkdir()
        task.site_from_path(str(tmp_path / "empty"), "ct-site")
    phantom = seg_config(sites=[{"name": "p", "kind": "phantom", "count": 2, "shape": [8, 32, 32]}])
    with pytest.raises(DataError, match="built-in phantom"):
        make_task(phantom).site_from_path(str(tmp_path / "ct"), "p")


# -- attack hook -----------------------------------------------------------------------------------


def test_poison_signflip_and_nan():
    start = {"w": torch.tensor([1.0, 2.0]), "n": torch.tensor(3)}
    trained = {"w": torch.tensor([1.5, 1.0]), "n": torch.tensor(4)}
    flipped = poison("signflip10", trained, start)
    assert torch.equal(flipped["w"], torch.tensor([-4.0, 12.0])) and flipped["n"].item() == 4
    nan = poison("nan", trained, start)
    assert torch.isnan(nan["w"]).all() and nan["n"].item() == 4
    with pytest.raises(ValueError, match="attack must be one of nan, signflip10, got 'boom'"):
        poison("boom", trained, start)


def test_nan_site_rejected_by_validation_in_process(tmp_path):
    import json

    from fedsilo.federation.client_app import app as client_app
    from fedsilo.federation.inprocess import run_inprocess
    from fedsilo.run.app import make_server_app
    from fedsilo.run.folder import RunDir

    run = RunDir.create(tmp_path / "run", phantom_classification_config(rounds=1), engine="local")
    run_inprocess(make_server_app(run.path), client_app, 3, node_extra={2: {"attack": "nan"}})
    rows = [json.loads(x) for x in (run.path / "metrics.jsonl").read_text().splitlines()]
    bad = [r for r in rows if r["scope"] == "site-3" and r["round"] == 1 and r.get("rejected")]
    assert bad and "non-finite" in bad[0]["reason"]
    glob = [r for r in rows if r["scope"] == "global" and "sites_aggregated" in r][0]
    assert (glob["sites_aggregated"], glob["sites_rejected"]) == (2, 1)


# -- bad input at the CLI ----------------------------------------------------------------------------


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.one_of(st.text(max_size=200), st.binary(max_size=200).map(lambda b: b.decode("latin-1")),
                 st.dictionaries(st.sampled_from(["experiment", "federation", "data", "train"]),
                                 st.dictionaries(st.sampled_from(["rounds", "seed", "task", "num_sites", "lr"]),
                                                 st.one_of(st.integers(-5, 5), st.text(max_size=5), st.booleans(),
                                                           st.floats(allow_nan=True)), max_size=3),
                                 max_size=3).map(lambda d: "\n".join(
                                     f"[{k}]\n" + "\n".join(f"{kk} = {v!r}".replace("'", '"').replace("True", "true")
                                                            .replace("False", "false") for kk, v in vv.items())
                                     for k, vv in d.items()))))
def test_deploy_run_garbage_config_is_a_clean_user_error(tmp_path, text):
    make_dir = tmp_path / "cfgs"
    make_dir.mkdir(exist_ok=True)
    cfg = make_dir / "garbage.toml"
    cfg.write_text(text, encoding="utf-8")
    out = tmp_path / "never-created"
    proc_code = main(["deploy", "run", str(cfg), "--superlink", "127.0.0.1:1", "--certs", str(tmp_path),
                      "--out", str(out)])
    assert proc_code == 2
    assert not out.exists()


def test_deploy_run_errors_without_traceback(tmp_path):
    make_certs(tmp_path / "c", ["a"])
    (tmp_path / "bad.toml").write_text('[federation]\nrounds = "ten"\n')
    env = {"PYTHONPATH": str(SRC), "PATH": str(Path(sys.executable).parent)}
    proc = subprocess.run([sys.executable, "-m", "fedsilo", "deploy", "run", str(tmp_path / "bad.toml"),
                           "--superlink", "127.0.0.1:1", "--certs", str(tmp_path / "c"), "--out",
                           str(tmp_path / "run")], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2 and "federation.rounds" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "run").exists()
    # an existing run folder is never overwritten
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "keep.txt").write_text("x")
    good = tmp_path / "good.toml"
    good.write_text('[experiment]\nname = "g"\n')
    code = main(["deploy", "run", str(good), "--superlink", "127.0.0.1:1", "--certs", str(tmp_path / "c"),
                 "--out", str(tmp_path / "run")])
    assert code == 2 and (tmp_path / "run" / "keep.txt").read_text() == "x"


def test_free_port_never_hands_out_a_port_twice(monkeypatch):
    """The kernel may give a just-closed port 0 again; free_port skips ports it already returned."""
    import fedsilo.deploy.checks as checks

    first = checks.free_port()
    ports = iter([first, first, first + 1])

    class Fixed:  # a socket whose port 0 is ``first`` twice, then another
        def __init__(self, *a):
            self.port = next(ports)

        def __enter__(self):
            return self

        def __exit__(self, *a):
            return False

        def bind(self, addr):
            pass

        def getsockname(self):
            return ("127.0.0.1", self.port)

    monkeypatch.setattr(checks.socket, "socket", Fixed)
    assert checks.free_port() == first + 1
