"""The release link (module_utils/releases.py): what it names, its switch, and the preflight's problems.

Real directories, symlinks and modes; the readability checks are judged for real users of this
machine (root and nobody) from the owner/group/other bits, the way the preflight judges them for
the daemon's user.
"""
from __future__ import annotations

import os
import pwd
import shutil
import tempfile
import threading
from pathlib import Path

import pytest
from releases import Releases, ServiceIdentity, release_problems, switch_release
from sqlite_common import DaemonError


@pytest.fixture
def layout(tmp_path) -> Releases:
    return make_layout(tmp_path)


@pytest.fixture
def open_layout():
    """A layout in a directory every user can search (pytest's own tmp directories are 0700)."""
    base = Path(tempfile.mkdtemp(prefix="riskmgr-releases-", dir="/tmp"))
    base.chmod(0o755)
    yield make_layout(base)
    shutil.rmtree(base)


def make_layout(tmp_path: Path) -> Releases:
    for version in (1, 2):
        release = tmp_path / "releases" / str(version)
        (release / "bin").mkdir(parents=True)
        (release / "bin" / "daemon.py").write_text(f"release {version}\n")
    os.symlink(tmp_path / "releases" / "1", tmp_path / "current")
    return Releases(link=str(tmp_path / "current"),
                    paths={1: str(tmp_path / "releases" / "1"), 2: str(tmp_path / "releases" / "2")})


def nobody() -> ServiceIdentity:
    return ServiceIdentity.of_user("nobody")


def test_from_params_is_none_without_a_link_and_keys_versions_as_integers():
    assert Releases.from_params({"release_link": None, "release_paths": {"1": "/a"}}) is None
    releases = Releases.from_params({"release_link": "/opt/x/current", "release_paths": {"1": "/a", "2": "/b"}})
    assert releases.paths == {1: "/a", 2: "/b"} and releases.path_for(2) == "/b"
    with pytest.raises(DaemonError, match="no release is named for schema v3"):
        releases.path_for(3)


def test_the_link_names_the_v1_release_and_a_switch_to_v2_replaces_it(layout):
    assert layout.version_linked() == 1 and layout.facts(2)["switch_needed"] and not layout.facts(1)["switch_needed"]
    result = switch_release(layout, 2)
    assert result["changed"] and result["before"] == layout.paths[1] and result["after"] == layout.paths[2]
    assert os.path.islink(layout.link) and os.readlink(layout.link) == layout.paths[2]
    assert (Path(layout.link) / "bin" / "daemon.py").read_text() == "release 2\n"
    assert layout.version_linked() == 2
    # Nothing is left beside the link, and a second switch changes nothing.
    assert sorted(p.name for p in Path(layout.link).parent.iterdir()) == ["current", "releases"]
    assert not switch_release(layout, 2)["changed"]


def test_a_relative_link_is_read_from_its_own_directory(layout):
    os.unlink(layout.link)
    os.symlink("releases/2", layout.link)
    assert layout.linked() == layout.paths[2] and layout.version_linked() == 2
    assert not switch_release(layout, 2)["changed"]


def test_check_mode_reports_the_switch_and_leaves_the_link(layout):
    result = switch_release(layout, 2, check_mode=True)
    assert result["changed"] and os.readlink(layout.link) == layout.paths[1]


def test_the_switch_is_atomic_a_reader_always_finds_one_of_the_releases(layout):
    # A reader resolving the link while it is switched back and forth never finds it missing.
    stop, misses = threading.Event(), []

    def read():
        while not stop.is_set():
            try:
                (Path(layout.link) / "bin" / "daemon.py").read_text()
            except FileNotFoundError as err:
                misses.append(err)
    reader = threading.Thread(target=read)
    reader.start()
    for turn in range(300):
        switch_release(layout, 2 if turn % 2 == 0 else 1)
    stop.set()
    reader.join()
    assert misses == []


def test_a_link_that_is_a_directory_is_refused_and_left_alone(layout):
    os.unlink(layout.link)
    os.mkdir(layout.link)
    assert any("is not a symlink" in p for p in release_problems(layout, None))
    with pytest.raises(DaemonError, match="is not a symlink"):
        switch_release(layout, 2)
    assert os.path.isdir(layout.link) and not os.path.islink(layout.link)


def test_problems_name_a_missing_link_a_missing_release_and_an_unset_path(layout, tmp_path):
    os.unlink(layout.link)
    missing = Releases(link=layout.link, paths={1: layout.paths[1], 2: str(tmp_path / "releases" / "9")})
    problems = release_problems(missing, None)
    assert any(f"riskmgr_release_link {layout.link} does not exist" in p for p in problems)
    assert any("riskmgr_release_v2_path" in p and "is not a directory on this host" in p for p in problems)
    assert any("riskmgr_release_v2_path is not set" in p
               for p in release_problems(Releases(link=layout.link, paths={1: layout.paths[1]}), None))
    assert release_problems(Releases(link=layout.link, paths=layout.paths), None)[0].startswith(
        f"riskmgr_release_link {layout.link} does not exist")


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to hand files to another user")
def test_a_release_the_service_user_cannot_read_is_refused_with_the_path(open_layout, tmp_path):
    layout = open_layout
    assert release_problems(layout, nobody()) == []
    secret = Path(layout.paths[2]) / "bin" / "daemon.py"
    secret.chmod(0o600)  # root's, unreadable to nobody
    problems = release_problems(layout, nobody())
    assert len(problems) == 1 and "the service user nobody cannot read the release" in problems[0]
    assert f"{secret} (not readable)" in problems[0]
    # Given to nobody, or readable by others, it is fine again; root reads anything.
    os.chown(secret, pwd.getpwnam("nobody").pw_uid, -1)
    assert release_problems(layout, nobody()) == []
    os.chown(secret, 0, -1)
    assert release_problems(layout, ServiceIdentity.of_user("root")) == []
    Path(layout.paths[1]).chmod(0o700)
    assert f"{layout.paths[1]} (not readable and searchable)" in " ".join(release_problems(layout, nobody()))
    # A parent directory nobody cannot search hides the whole release.
    hidden = make_layout(tmp_path)
    assert f"{tmp_path} (not searchable)" in " ".join(release_problems(hidden, nobody()))


def test_the_identity_of_a_running_process_is_its_uid_and_groups():
    me = ServiceIdentity.of_process(os.getpid())
    assert me.uid == os.geteuid() and os.getegid() in me.gids
    assert ServiceIdentity.of_process(2 ** 22 + 12345) is None
    assert ServiceIdentity.of_user("no-such-user-here") is None
