"""Tests that run INSIDE the User-Mode Linux VM (tools/uml/run.sh), where cgroup v2 is pure and
ours to use: as root, and as a user whose user@UID.service subtree is delegated. tools/run-tests.sh
starts one VM per identity and points HUTCH_BIN at the build."""
import os
import shutil
import subprocess
import tempfile

import pytest

HUTCH = os.environ.get("HUTCH_BIN", os.path.join(os.path.dirname(__file__), "..", "..", "build", "hutch"))


def _in_vm():
    try:
        with open("/sys/fs/cgroup/cgroup.controllers") as f:
            return "memory" in f.read().split()
    except OSError:
        return False


def pytest_collection_modifyitems(config, items):
    if _in_vm():
        return
    skip = pytest.mark.skip(reason="needs a pure cgroup v2 host: run through tools/uml/run.sh")
    for item in items:
        item.add_marker(skip)


class Hutch:
    def __init__(self, root):
        self.root = root

    def __call__(self, *args, timeout=120, **kw):
        return subprocess.run([HUTCH, "--root", self.root, *args], capture_output=True, text=True,
                              timeout=timeout, **kw)

    def popen(self, *args, **kw):
        return subprocess.Popen([HUTCH, "--root", self.root, *args], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, **kw)


@pytest.fixture
def h():
    # The store needs a filesystem overlayfs accepts as upper layer: /tmp is a tmpfs in the VM.
    root = tempfile.mkdtemp(prefix="hutch-vm-", dir="/tmp")
    os.chmod(root, 0o711)
    yield Hutch(root)
    subprocess.run([HUTCH, "--root", root, "ps", "--format", "json"], capture_output=True)
    shutil.rmtree(root, ignore_errors=True)


def own_cgroup_parent():
    """Where hutch puts sandbox cgroups for the current identity."""
    if os.geteuid() == 0:
        return "/sys/fs/cgroup/hutch"
    with open("/proc/self/cgroup") as f:
        path = f.read().strip().split("::", 1)[1]
    parts = path.split("/")
    # The delegation root is user@UID.service.
    for i, p in enumerate(parts):
        if p.startswith("user@") and p.endswith(".service"):
            return "/sys/fs/cgroup" + "/".join(parts[: i + 1]) + "/hutch"
    raise AssertionError("no user@UID.service in " + path)
