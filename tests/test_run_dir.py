"""The run directory and bus socket folders: created private, a folder we did not create never chmodded.

Issue #14: ``CHMGR_BUS_IN=ipc:///tmp/x.sock`` or ``CHMGR_RUN_DIR=/tmp`` used to chmod that shared
folder to 0700. A "shared folder" here is a temporary directory with /tmp's own mode (1777), so
a regression cannot touch the real /tmp. Issue #19: the project's own run/ (in git, which stores
no directory modes) is the one existing directory that is tightened.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from coldharbour import config
from coldharbour.bus import prepare_endpoint
from coldharbour.cli.doctor import check_run_dir
from coldharbour.config import make_private_dir, prepare_run_dir
from coldharbour.errors import ConfigError
from tests.support import make_settings

SHARED_MODE = 0o1777  # /tmp's mode: sticky, world-writable


def mode(path: Path) -> int:
    """Return ``path``'s permission bits."""
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def umask_022() -> Iterator[None]:
    """Run with the usual umask, which mkdir's mode alone would not survive."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)


@pytest.fixture
def shared(tmp_path: Path) -> Path:
    """A folder someone else made, with /tmp's mode."""
    folder = tmp_path / "shared"
    folder.mkdir()
    folder.chmod(SHARED_MODE)
    return folder


@pytest.mark.usefixtures("umask_022")
def test_make_private_dir_creates_every_missing_level_0700(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "run"

    made = make_private_dir(target)

    assert made == target
    assert [mode(p) for p in (tmp_path / "a", tmp_path / "a" / "b", target)] == [0o700, 0o700, 0o700]


def test_make_private_dir_leaves_an_existing_folder_as_it_was(shared: Path) -> None:
    make_private_dir(shared)

    assert mode(shared) == SHARED_MODE


@pytest.mark.usefixtures("umask_022")
def test_prepare_run_dir_in_a_shared_folder_creates_logs_private_and_keeps_the_folder(shared: Path) -> None:
    prepare_run_dir(shared)

    assert mode(shared) == SHARED_MODE
    assert mode(shared / "logs") == 0o700


def test_prepare_run_dir_tightens_the_projects_own_run_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A fresh clone's run/ and run/logs/ come from git with the umask's mode (0755)."""
    monkeypatch.setattr(config, "PROJECT_ROOT", tmp_path)
    (tmp_path / "run" / "logs").mkdir(parents=True)
    (tmp_path / "run").chmod(0o755)
    (tmp_path / "run" / "logs").chmod(0o755)
    elsewhere = tmp_path / "other"
    elsewhere.mkdir(mode=0o755)
    elsewhere.chmod(0o755)

    prepare_run_dir(tmp_path / "run")
    prepare_run_dir(elsewhere)

    assert (mode(tmp_path / "run"), mode(tmp_path / "run" / "logs")) == (0o700, 0o700)
    assert mode(elsewhere) == 0o755  # not the project's: the owner's choice stands


def test_prepare_run_dir_never_follows_a_symlinked_project_run_dir(
    tmp_path: Path, shared: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "run").symlink_to(shared, target_is_directory=True)
    monkeypatch.setattr(config, "PROJECT_ROOT", project)

    prepare_run_dir(project / "run")

    assert mode(shared) == SHARED_MODE


def test_prepare_run_dir_that_cannot_be_created_is_one_line_naming_the_variable(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")

    with pytest.raises(ConfigError) as raised:
        prepare_run_dir(blocker / "run")

    assert str(raised.value).startswith(f"CHMGR_RUN_DIR: cannot prepare {blocker / 'run'}: ")
    assert "\n" not in str(raised.value)


def test_bus_endpoint_in_a_shared_folder_keeps_its_mode(shared: Path) -> None:
    prepare_endpoint(f"ipc://{shared}/x.sock", bind=True)
    prepare_endpoint(f"ipc://{shared}/y.sock", bind=False)

    assert mode(shared) == SHARED_MODE


@pytest.mark.usefixtures("umask_022")
def test_bus_endpoint_creates_its_missing_folder_0700(tmp_path: Path) -> None:
    prepare_endpoint(f"ipc://{tmp_path}/new/dir/bus-in.sock", bind=True)

    assert (mode(tmp_path / "new"), mode(tmp_path / "new" / "dir")) == (0o700, 0o700)


def test_doctor_fresh_clone_run_dir_is_a_warning_another_open_dir_a_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before the first start a clone's run/ has git's mode: not a failure, it is fixed at start."""
    monkeypatch.setattr(config, "PROJECT_ROOT", tmp_path)
    (tmp_path / "run").mkdir()
    (tmp_path / "other").mkdir()
    for folder in ("run", "other"):
        (tmp_path / folder).chmod(0o755)

    verdicts = {
        folder: next(check_run_dir(make_settings("postgresql://u@127.0.0.1:1/x", tmp_path / folder)))
        for folder in ("run", "other")
    }

    assert verdicts["run"].verdict == "WARN"
    assert verdicts["run"].line.endswith("`chmgr up` or the first program makes it 0700")
    assert verdicts["other"].verdict == "FAIL"
