"""The package builds without deprecation noise: the license is an SPDX expression
(PEP 639), which needs setuptools 77 or later in the build requirement."""

from __future__ import annotations

import importlib.metadata
import tomllib

from packaging.licenses import canonicalize_license_expression
from packaging.requirements import Requirement
from packaging.version import Version

from .conftest import ROOT


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_the_license_is_an_spdx_string_and_the_build_backend_supports_it() -> None:
    project = pyproject()
    license = project["project"]["license"]
    assert isinstance(license, str), "a {text = …} table is deprecated by setuptools"
    assert canonicalize_license_expression(license) == license == "Apache-2.0"
    (setuptools,) = [
        r for r in map(Requirement, project["build-system"]["requires"]) if r.name == "setuptools"
    ]
    # Every version the requirement admits understands the SPDX string form.
    assert not setuptools.specifier.contains(Version("76.9")), setuptools
    assert setuptools.specifier.contains(Version("77.0.0")), setuptools


def test_the_installed_metadata_carries_the_license_expression() -> None:
    meta = importlib.metadata.metadata("edge-access")
    assert meta["License-Expression"] == "Apache-2.0"
    assert meta.get("License") is None  # the deprecated free-text field is gone
