import importlib.util
import re
from pathlib import Path

import tomllib

from lightning_lossguard import CATALOG, OutputMonitor, __version__
from lightning_lossguard.catalog import CAUSE_ORDER
from lightning_lossguard.detectors import DETECTORS, EVENT_DETECTORS
from lightning_lossguard.outputs import OUTPUT_DETECTORS

ROOT = Path(__file__).parents[1]
ALL_DETECTORS = {**DETECTORS, **OUTPUT_DETECTORS}
"""The core pipeline's detectors and those of the opt-in monitors."""
EMITTERS = {**ALL_DETECTORS, **EVENT_DETECTORS}
"""...and the codes decided outside report windows (the watchdog's stalls): every code comes from one of them."""


def test_every_code_has_a_detector_remedies_and_a_place_in_the_cause_order() -> None:
    assert not set(DETECTORS) & set(OUTPUT_DETECTORS)  # monitor codes stay out of the core pipeline
    assert not set(EVENT_DETECTORS) & set(ALL_DETECTORS)  # event codes have no window detector, and no thresholds
    assert set(OutputMonitor.codes) == set(OUTPUT_DETECTORS)
    assert set(EMITTERS) == set(CATALOG) == set(CAUSE_ORDER)
    assert all(cls.code == code for code, cls in EMITTERS.items())
    assert all(not cls.Thresholds().describe() for cls in EVENT_DETECTORS.values())
    for info in CATALOG.values():
        assert info.remedies and info.meaning.endswith(".") and info.silence_when


def test_every_code_is_documented() -> None:
    docs = (ROOT / "docs" / "diagnoses.md").read_text()
    headings = set(re.findall(r"^## `([a-z_]+)`", docs, flags=re.MULTILINE))
    assert headings == set(CATALOG)
    for code in CATALOG:
        assert f"[`{code}`](#{code})" in docs, f"{code} missing from the summary table"
    readme = (ROOT / "README.md").read_text()
    for code in CATALOG:
        assert f"`{code}`" in readme, f"{code} missing from the README's table"


def test_every_threshold_is_documented_in_its_section_with_its_default_and_range() -> None:
    docs = (ROOT / "docs" / "diagnoses.md").read_text()
    sections = dict(re.findall(r"^## `([a-z_]+)`\n(.*?)(?=^## |\Z)", docs, flags=re.MULTILINE | re.DOTALL))
    for code, detector in ALL_DETECTORS.items():
        for name, (value, doc) in detector.Thresholds().describe().items():
            assert doc, f"{code}.{name} has no documentation"
            assert f"| `{name}` | {value:g} |" in sections[code], f"{code}.{name}={value:g} not in its docs section"
    spec = importlib.util.spec_from_file_location("sync_thresholds", ROOT / "docs" / "sync_thresholds.py")
    assert spec is not None and spec.loader is not None
    sync = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sync)
    assert sync.sync(docs) == docs, "docs/diagnoses.md is out of date: run python docs/sync_thresholds.py"


def test_version_matches_pyproject() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["version"] == __version__
