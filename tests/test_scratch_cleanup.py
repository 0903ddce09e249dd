"""The suite frees its scratch as it goes: a CI disk filled up when every test's folders stayed.

Runs pytest on three small modules with this suite's conftest and pytest settings: the folders of a
module that passed are gone before the next module starts; a failing module's are kept to look at.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import REPO

MODULE_A = '''
import pytest

@pytest.fixture(scope="module")
def big(tmp_path_factory):
    folder = tmp_path_factory.mktemp("big")
    (folder / "ckpt.pt").write_bytes(b"x" * 4096)
    return folder

def test_a(big, tmp_path):
    (tmp_path / "out.bin").write_bytes(b"y" * 4096)
    (big.parent.parent / "seen.txt").write_text(f"{big}\\n{tmp_path}\\n")
'''

MODULE_B = '''
from pathlib import Path

def test_b(tmp_path_factory):
    base = tmp_path_factory.getbasetemp()
    for line in (base.parent / "seen.txt").read_text().split():
        assert not Path(line).exists(), line
    # (pytest's "<name>current" links to the newest folder of a name may remain, dangling)
    assert [p.name for p in base.iterdir() if p.exists()] == [], list(base.iterdir())
'''

MODULE_C = '''
import pytest

@pytest.fixture(scope="module")
def kept(tmp_path_factory):
    return tmp_path_factory.mktemp("kept")

def test_c(kept, tmp_path):
    (kept / "look.txt").write_text("at me")
    raise AssertionError("this one fails on purpose")
'''


@pytest.mark.slow  # a pytest session in a subprocess: ~8 s
def test_passing_modules_leave_no_scratch_and_failing_ones_keep_theirs(tmp_path):
    root = tmp_path / "suite"
    (root / "tests").mkdir(parents=True)
    shutil.copy(REPO / "tests" / "conftest.py", root / "tests" / "conftest.py")
    shutil.copy(REPO / "pyproject.toml", root / "pyproject.toml")
    for name, text in (("a", MODULE_A), ("b", MODULE_B), ("c", MODULE_C)):
        (root / "tests" / f"test_{name}.py").write_text(textwrap.dedent(text))
    base = tmp_path / "run" / "base"
    base.parent.mkdir()
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
                           f"--basetemp={base}", "tests"], cwd=root, capture_output=True, text=True,
                          timeout=300, env={"PATH": "/usr/bin:/bin", "DEPTHSEG_SHARED": str(REPO.parent / "shared")})
    # test_b checked that module a's fixture folder and test folder were gone when it ran
    assert "1 failed, 2 passed" in proc.stdout, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "this one fails on purpose" in proc.stdout
    left = sorted(p.name for p in base.iterdir() if not p.is_symlink())
    assert left == ["kept0", "test_c0"], left
    assert (base / "kept0" / "look.txt").read_text() == "at me"
