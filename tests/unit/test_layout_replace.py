"""Outputs replace what was there in one step, and a killed run's temps beside them are swept."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from ociassemble.transport.layout import replace_path, temp_sibling


def test_a_directory_output_is_swapped_in_one_step(tmp_path: Path) -> None:
    target = tmp_path / "layout"
    target.mkdir()
    (target / "old").write_text("old")
    new = temp_sibling(target, directory=True)
    (new / "new").write_text("new")
    replace_path(new, target)
    assert sorted(p.name for p in target.iterdir()) == ["new"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["layout"]  # the old tree went with the temp


def test_temps_of_dead_runs_are_swept_and_live_ones_kept(tmp_path: Path) -> None:
    target = tmp_path / "image.tar"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True).stdout.strip()
    left_file = tmp_path / f".image.tar.tmp-{dead}-abc"
    left_dir = tmp_path / f".image.tar.tmp-{dead}-old-def"
    left_file.write_bytes(b"partial")
    (left_dir / "x").mkdir(parents=True)
    live = tmp_path / f".image.tar.tmp-{os.getppid()}-ghi"  # our parent is alive: maybe a concurrent writer
    live.write_bytes(b"in progress")
    other = tmp_path / ".image.tar.tmp-5.tmp-1-jkl"  # another output's temp ("image.tar.tmp-5")
    other.write_bytes(b"not ours")
    mine = temp_sibling(target, directory=False)
    assert mine.name.startswith(f".image.tar.tmp-{os.getpid()}-")
    assert not left_file.exists() and not left_dir.exists()
    assert live.exists() and other.exists() and mine.exists()
