import re
from pathlib import Path

import tomllib

from lightning_lossguard import CATALOG, __version__
from lightning_lossguard.detectors import DETECTORS
from lightning_lossguard.diagnostician import CAUSE_ORDER

ROOT = Path(__file__).parents[1]


def test_every_code_has_a_detector_remedies_and_a_place_in_the_cause_order() -> None:
    assert set(DETECTORS) == set(CATALOG) == set(CAUSE_ORDER)
    for info in CATALOG.values():
        assert info.remedies and info.meaning.endswith(".") and info.silence_when


def test_every_code_is_documented() -> None:
    docs = (ROOT / "docs" / "diagnoses.md").read_text()
    headings = set(re.findall(r"^## `([a-z_]+)`", docs, flags=re.MULTILINE))
    assert headings == set(CATALOG)
    readme = (ROOT / "README.md").read_text()
    for code in CATALOG:
        assert f"`{code}`" in readme


def test_every_threshold_is_documented_with_its_default() -> None:
    docs = (ROOT / "docs" / "diagnoses.md").read_text()
    for code, detector in DETECTORS.items():
        for name, (_, doc) in detector.Thresholds().describe().items():
            assert doc, f"{code}.{name} has no documentation"
            assert f"`{name}`" in docs, f"{code}.{name} missing from docs/diagnoses.md"


def test_version_matches_pyproject() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["version"] == __version__
