"""Debian bookworm test guests: a debootstrap root file system, a network namespace and sshd in a chroot.

Everything here runs as root on the host and touches only what it creates:

* a cached base image (a tar of a debootstrap'ed root file system with a local apt repository inside),
  keyed by the suite, the package lists and the build recipe version, under GUEST_CACHE_DIR;
* per guest: a copy of that image, /proc, /dev (tmpfs with a few nodes) and /dev/pts mounted inside it,
  a network namespace with one veth pair on its own /30 of TEST_SUBNET, and sshd running chrooted in it.

`python3 tests/guests/guestlib.py build` builds (or reuses) the cached image and prints its path.
"""
import contextlib
import fcntl
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SUITE = "bookworm"
MIRROR = os.environ.get("GUEST_DEBIAN_MIRROR", "http://deb.debian.org/debian")
GUEST_CACHE_DIR = Path(os.environ.get("GUEST_CACHE_DIR", "/var/cache/azure-vm-extensions-guests"))
TEST_SUBNET = "10.213.0"  # 10.213.0.0/24, one /30 per guest
RECIPE_VERSION = "3"

# Installed in the base image (debootstrap --include).
BASE_PACKAGES = [
    "openssh-server",
    "python3",
    "python3-apt",
    "iproute2",
    "ca-certificates",
    "openssl",
    "procps",
]
# Downloaded (with their missing dependencies) into the guest's local apt repository, NOT installed.
REPO_PACKAGES = ["waagent"]
LOCAL_REPO = "/srv/local-apt"

POLICY_RC_D = "#!/bin/sh\n# test guest: never start services\nexit 101\n"

SSHD_CONFIG = """\
ListenAddress {address}
Port 22
HostKey /etc/ssh/ssh_host_ed25519_key
HostKey /etc/ssh/ssh_host_rsa_key
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
AuthorizedKeysFile /root/.ssh/authorized_keys
UsePAM no
StrictModes no
UseDNS no
PidFile /run/sshd-test.pid
Subsystem sftp /usr/lib/openssh/sftp-server
MaxStartups 50
MaxSessions 50
"""


def log(msg):
    sys.stderr.write("[guests] %s\n" % msg)
    sys.stderr.flush()


def run(cmd, check=True, **kwargs):
    return subprocess.run(cmd, check=check, **kwargs)


def cache_key():
    text = "\n".join([RECIPE_VERSION, SUITE, MIRROR, " ".join(BASE_PACKAGES), " ".join(REPO_PACKAGES),
                      POLICY_RC_D])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def image_path():
    return GUEST_CACHE_DIR / ("bookworm-%s.tar" % cache_key())


def host_missing_tools():
    return [tool for tool in ("debootstrap", "ip", "dpkg-scanpackages", "ssh", "ssh-keygen", "tar", "mount")
            if shutil.which(tool) is None]


def _chroot(root, *cmd, **kwargs):
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "DEBIAN_FRONTEND": "noninteractive", "LC_ALL": "C",
           "HOME": "/root"}
    return run(["chroot", str(root)] + list(cmd), env=env, **kwargs)


@contextlib.contextmanager
def mounted_proc(root):
    proc = Path(root) / "proc"
    proc.mkdir(exist_ok=True)
    run(["mount", "-t", "proc", "proc", str(proc)])
    try:
        yield
    finally:
        run(["umount", "-l", str(proc)], check=False)


def build_image(logfile=None):
    """Build the base image tarball unless the cache already holds it; return its path."""
    target = image_path()
    if target.exists():
        return target
    GUEST_CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with open(GUEST_CACHE_DIR / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if target.exists():
            return target
        logfile = Path(logfile or (GUEST_CACHE_DIR / ("build-%s.log" % cache_key())))
        log("building guest image %s (debootstrap log: %s)" % (target, logfile))
        started = time.time()
        workdir = Path(tempfile.mkdtemp(prefix="build-", dir=str(GUEST_CACHE_DIR)))
        root = workdir / "root"
        try:
            with open(logfile, "w") as out:
                _build_root(root, out)
                tmp = target.with_suffix(".tar.partial")
                run(["tar", "--numeric-owner", "-C", str(root), "-cf", str(tmp), "."], stdout=out, stderr=out)
                os.replace(str(tmp), str(target))
        finally:
            _assert_nothing_mounted(root)
            shutil.rmtree(str(workdir), ignore_errors=True)
        log("guest image built in %.0fs" % (time.time() - started))
    return target


def _build_root(root, out):
    run(["debootstrap", "--variant=minbase", "--include=" + ",".join(BASE_PACKAGES), SUITE, str(root), MIRROR],
        stdout=out, stderr=out)
    (root / "usr/sbin/policy-rc.d").write_text(POLICY_RC_D)
    os.chmod(str(root / "usr/sbin/policy-rc.d"), 0o755)
    shutil.copy("/etc/resolv.conf", str(root / "etc/resolv.conf"))
    with mounted_proc(root):
        # Download the agent and whatever it needs that the image lacks, without installing it.
        _chroot(root, "apt-get", "update", stdout=out, stderr=out)
        _chroot(root, "apt-get", "clean", stdout=out, stderr=out)
        _chroot(root, "apt-get", "install", "-y", "--download-only", "--no-install-recommends",
                *REPO_PACKAGES, stdout=out, stderr=out)
        repo = root / LOCAL_REPO.lstrip("/")
        repo.mkdir(parents=True)
        debs = sorted((root / "var/cache/apt/archives").glob("*.deb"))
        if not any(d.name.startswith("waagent_") for d in debs):
            raise RuntimeError("waagent .deb was not downloaded; see %s" % out.name)
        for deb in debs:
            shutil.move(str(deb), str(repo / deb.name))
        packages = run(["dpkg-scanpackages", "--multiversion", "."], cwd=str(repo), stdout=subprocess.PIPE,
                       stderr=out).stdout
        (repo / "Packages").write_bytes(packages)
        # Only the local repository from now on: installs work without any network.
        (root / "etc/apt/sources.list").write_text("deb [trusted=yes] file:%s ./\n" % LOCAL_REPO)
        for stale in (root / "etc/apt/sources.list.d").glob("*"):
            stale.unlink()
        shutil.rmtree(str(root / "var/lib/apt/lists"))
        (root / "var/lib/apt/lists/partial").mkdir(parents=True)
        _chroot(root, "apt-get", "update", stdout=out, stderr=out)
        _chroot(root, "ssh-keygen", "-A", stdout=out, stderr=out)
    if (root / "usr/sbin/waagent").exists():
        raise RuntimeError("waagent must not be preinstalled in the base image")
    (root / "etc/resolv.conf").write_text("")
    (root / "etc/hostname").write_text("guest\n")
    (root / "root/.ssh").mkdir(mode=0o700, exist_ok=True)


def _mounts_under(root):
    root = os.path.realpath(str(root))
    found = []
    with open("/proc/self/mounts") as mounts:
        for line in mounts:
            point = line.split()[1].replace("\\040", " ")
            if point == root or point.startswith(root + "/"):
                found.append(point)
    return found


def _assert_nothing_mounted(root):
    left = _mounts_under(root)
    if left:
        raise RuntimeError("still mounted, refusing to delete: %s" % left)


class Guest:
    """One guest: root file system copy, network namespace with a veth pair, sshd in a chroot."""

    def __init__(self, name, index, workdir, tag):
        self.name = name
        self.index = index
        self.root = Path(workdir) / name
        self.netns = "azvm-%s-%d" % (tag, index)
        self.veth_host = "azv%s%dh" % (tag[-6:], index)
        self.veth_guest = "azv%s%dg" % (tag[-6:], index)
        base = 4 * (index + 1)
        self.host_address = "%s.%d" % (TEST_SUBNET, base + 1)
        self.address = "%s.%d" % (TEST_SUBNET, base + 2)
        self.sshd = None
        self._mounts = []
        self._netns_made = False

    # -- setup -----------------------------------------------------------------------------------------
    def create(self, image, public_key):
        self.root.mkdir(parents=True)
        run(["tar", "--numeric-owner", "-C", str(self.root), "-xf", str(image)])
        (self.root / "etc/hostname").write_text(self.name + "\n")
        auth = self.root / "root/.ssh/authorized_keys"
        auth.write_text(public_key)
        os.chmod(str(auth), 0o600)
        self._mount("proc", "proc", "proc")
        self._mount("tmpfs", "dev", "tmpfs", "mode=755,size=16m")
        for node, major, minor in (("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8),
                                   ("urandom", 1, 9), ("tty", 5, 0)):
            path = self.root / "dev" / node
            os.mknod(str(path), 0o666 | 0o020000, os.makedev(major, minor))
            os.chmod(str(path), 0o666)
        (self.root / "dev/pts").mkdir()
        self._mount("devpts", "dev/pts", "devpts", "newinstance,ptmxmode=0666,mode=620")
        os.symlink("pts/ptmx", str(self.root / "dev/ptmx"))
        (self.root / "dev/shm").mkdir()
        for link, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                             ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")):
            os.symlink(target, str(self.root / "dev" / link))
        self._network()
        self._start_sshd()

    def _mount(self, source, point, fstype, options=None):
        target = self.root / point
        target.mkdir(exist_ok=True)
        cmd = ["mount", "-t", fstype]
        if options:
            cmd += ["-o", options]
        run(cmd + [source, str(target)])
        self._mounts.append(str(target))

    def _network(self):
        run(["ip", "netns", "add", self.netns])
        self._netns_made = True
        run(["ip", "link", "add", self.veth_host, "type", "veth", "peer", "name", self.veth_guest,
             "netns", self.netns])
        run(["ip", "addr", "add", self.host_address + "/30", "dev", self.veth_host])
        run(["ip", "link", "set", self.veth_host, "up"])
        ns = ["ip", "netns", "exec", self.netns]
        run(ns + ["ip", "link", "set", "lo", "up"])
        run(ns + ["ip", "addr", "add", self.address + "/30", "dev", self.veth_guest])
        run(ns + ["ip", "link", "set", self.veth_guest, "up"])
        # No default route: the guest can reach only the host end of its own veth pair.

    def _start_sshd(self):
        (self.root / "run/sshd").mkdir(parents=True, exist_ok=True)
        (self.root / "etc/ssh/sshd_test_config").write_text(SSHD_CONFIG.format(address=self.address))
        self.sshd = subprocess.Popen(
            ["ip", "netns", "exec", self.netns, "chroot", str(self.root), "/usr/sbin/sshd", "-D", "-e",
             "-f", "/etc/ssh/sshd_test_config"],
            stdout=subprocess.DEVNULL, stderr=open(str(self.root) + ".sshd.log", "w"),
            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"})
        deadline = time.time() + 20
        while time.time() < deadline:
            if self.sshd.poll() is not None:
                raise RuntimeError("sshd exited: %s" % Path(str(self.root) + ".sshd.log").read_text())
            try:
                with socket.create_connection((self.address, 22), timeout=1) as sock:
                    if sock.recv(4).startswith(b"SSH"):
                        return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("sshd on %s did not come up" % self.address)

    # -- use ---------------------------------------------------------------------------------------------
    def chroot(self, *cmd, **kwargs):
        """Run a command inside the guest (its chroot and network namespace)."""
        kwargs.setdefault("stdout", subprocess.PIPE)
        kwargs.setdefault("stderr", subprocess.PIPE)
        kwargs.setdefault("universal_newlines", True)
        check = kwargs.pop("check", False)
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C", "HOME": "/root"}
        return subprocess.run(["ip", "netns", "exec", self.netns, "chroot", str(self.root)] + list(cmd),
                              env=env, check=check, **kwargs)

    def processes(self):
        """PIDs of the processes whose root directory is this guest's root."""
        root = os.path.realpath(str(self.root))
        pids = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                if os.readlink("/proc/%s/root" % entry) == root:
                    pids.append(int(entry))
            except OSError:
                continue
        return pids

    def process_commands(self):
        out = {}
        for pid in self.processes():
            try:
                with open("/proc/%d/cmdline" % pid, "rb") as f:
                    out[pid] = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
            except OSError:
                continue
        return out

    # -- teardown ------------------------------------------------------------------------------------------
    def destroy(self):
        errors = []
        if self.sshd is not None and self.sshd.poll() is None:
            self.sshd.terminate()
            try:
                self.sshd.wait(10)
            except subprocess.TimeoutExpired:
                self.sshd.kill()
                self.sshd.wait(10)
        # Anything still running inside this chroot was started by this harness (ssh sessions, ...).
        for sig in (signal.SIGTERM, signal.SIGKILL):
            pids = self.processes() if self.root.exists() else []
            for pid in pids:
                with contextlib.suppress(OSError):
                    os.kill(pid, sig)
            if pids:
                time.sleep(0.5)
        for point in reversed(self._mounts):
            result = run(["umount", point], check=False, stderr=subprocess.DEVNULL)
            if result.returncode != 0:
                run(["umount", "-l", point], check=False)
        self._mounts = []
        if self._netns_made:
            run(["ip", "netns", "del", self.netns], check=False)
            self._netns_made = False
        # the host end goes away with its peer; make sure
        if subprocess.run(["ip", "link", "show", self.veth_host], stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL, check=False).returncode == 0:
            run(["ip", "link", "del", self.veth_host], check=False, stderr=subprocess.DEVNULL)
        if self.root.exists():
            try:
                _assert_nothing_mounted(self.root)
                shutil.rmtree(str(self.root))
            except Exception as exc:  # pylint: disable=broad-except
                errors.append(str(exc))
        if errors:
            raise RuntimeError("; ".join(errors))


def can_create_namespaces():
    """None when this machine can run guests, else the reason it cannot."""
    if os.geteuid() != 0:
        return "guest tests need root (network namespaces, chroot, mounts)"
    name = "azvm-probe-%d" % os.getpid()
    result = subprocess.run(["ip", "netns", "add", name], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            universal_newlines=True, check=False)
    if result.returncode != 0:
        return "cannot create a network namespace: %s" % result.stdout.strip()
    subprocess.run(["ip", "netns", "del", name], check=False)
    return None


def ensure_host_tools():
    """None when the host tools are there, else why not (`make system-deps` installs them as root)."""
    missing = host_missing_tools()
    if missing:
        return "missing host tools %s: run `make system-deps` (tests/install-system-packages.sh) as root" % missing
    return None


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "build":
        print(build_image())
    else:
        print(image_path())
