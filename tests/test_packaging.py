"""pyproject.toml builds without deprecation warnings (its licence is an SPDX expression, PEP 639)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import tomllib

from helpers import REPO_ROOT

_BUILD_METADATA = """
import sys, warnings
from setuptools import build_meta
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    name = build_meta.prepare_metadata_for_build_wheel(sys.argv[1])
for w in caught:
    print("WARNING", type(w.message).__name__, str(w.message).splitlines()[0])
print("DIST", name)
"""


def test_licence_is_an_spdx_expression_with_a_setuptools_that_reads_it():
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert project["project"]["license"] == "Apache-2.0"
    requires = project["build-system"]["requires"]
    assert "setuptools>=77" in requires  # the first setuptools that reads license = "<SPDX>"
    assert not any(c.startswith("License ::") for c in project["project"].get("classifiers", []))


def test_metadata_builds_without_deprecation_warnings(tmp_path):
    setuptools = pytest.importorskip("setuptools")
    if int(setuptools.__version__.split(".")[0]) < 77:
        pytest.skip(f"setuptools {setuptools.__version__} predates SPDX licences; a build installs >= 77")
    done = subprocess.run([sys.executable, "-c", _BUILD_METADATA, str(tmp_path)], cwd=REPO_ROOT,
                          capture_output=True, text=True, check=True)
    assert [line for line in done.stdout.splitlines() if line.startswith("WARNING")] == []
    dist = done.stdout.split("DIST ")[-1].strip()
    metadata = (tmp_path / dist / "METADATA").read_text(encoding="utf-8")
    assert "License-Expression: Apache-2.0" in metadata.splitlines()
