"""Test hosts on one machine: Linux network namespaces on a private bridge, each running its own sshd.

A real multi-host MPI run needs hosts that mpiexec reaches over ssh and that reach each other over a
network. :class:`VirtualHosts` makes them as network namespaces joined by a bridge in a hub namespace, gives
the root namespace (where mpiexec runs) an address on the same subnet so that hydra's proxies can connect
back, and starts an sshd in each namespace that accepts a throwaway key. Everything lives in a temporary
folder and is reached through an ``ssh -F <config>`` wrapper: nothing in ``~/.ssh`` or ``/etc`` changes.
Root only. File systems are shared, so every host sees the same paths, as on a cluster.
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time

SUBNET = "10.213.7"
# mpiexec's own address on the test subnet: hydra's proxies connect back to it
LAUNCHER_ADDRESS = f"{SUBNET}.1"
# the same interface name in every namespace, so that hydra's -iface means the same on every host
IFACE = "mpicolor0"
PREFIX = "mpicolor-test"
# every ip/ssh-keygen call is quick; a hang is a failure, not a stuck test run
COMMAND_TIMEOUT = 20
SSHD_START_TIMEOUT = 10
# Debian's sshd refuses to start without its privilege separation folder (systemd normally makes it)
PRIVSEP_DIR = "/run/sshd"

REQUIRED_TOOLS = (("ip", "iproute2"), ("sshd", "openssh-server"), ("ssh", "openssh-client"),
                  ("ssh-keygen", "openssh-client"), ("unshare", "util-linux"))


class Unavailable(Exception):
    """This machine cannot make the test hosts (not root, a tool missing, or namespaces not allowed)."""


def tool(name):
    """The path of a system tool, looking in the sbin folders too (they are not on every PATH)."""
    return shutil.which(name, path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"]))


def missing():
    """Why test hosts cannot be made here, or None when they can be tried."""
    if os.geteuid() != 0:
        return "needs root: it makes network namespaces and runs an sshd in each"
    for name, package in REQUIRED_TOOLS:
        if tool(name) is None:
            return f"{name} is missing (apt-get install {package})"
    return None


def _run(*argv):
    """Run a short command; fail with its stderr."""
    finished = subprocess.run(argv, capture_output=True, text=True, timeout=COMMAND_TIMEOUT)
    if finished.returncode != 0:
        raise subprocess.CalledProcessError(finished.returncode, argv, finished.stdout, finished.stderr)
    return finished.stdout


class VirtualHosts:
    """``count`` hosts at ``10.213.7.11``, ``.12``, ... with sshd on port 22, for ``mpiexec -f hostfile``.

    Call :meth:`close` in every case (it undoes whatever :meth:`start` got to); :meth:`start` raises
    :class:`Unavailable` when the machine does not allow network namespaces.
    """

    def __init__(self, workdir, count=3):
        self.workdir = os.path.abspath(workdir)
        self.hub = f"{PREFIX}-hub"
        self.namespaces = [f"{PREFIX}-{number}" for number in range(1, count + 1)]
        self.addresses = [f"{SUBNET}.{10 + number}" for number in range(1, count + 1)]
        self.ssh_wrapper = os.path.join(self.workdir, "ssh")
        self.ip = tool("ip")
        self.sshds = []
        self.made_privsep_dir = False

    # ---- setup ------------------------------------------------------------------------------------------
    def start(self):
        """Make the network, the keys and one sshd per host, and wait until every sshd accepts connections."""
        self._remove()
        self._network()
        self._keys()
        for namespace, address in zip(self.namespaces, self.addresses):
            self._start_sshd(namespace, address)
        self._wait_listening()
        return self

    def _network(self):
        ip = self.ip
        try:
            _run(ip, "netns", "add", self.hub)
        except subprocess.CalledProcessError as error:
            raise Unavailable(f"cannot make network namespaces here: {error.stderr.strip()}") from error
        _run(ip, "-n", self.hub, "link", "set", "lo", "up")
        _run(ip, "-n", self.hub, "link", "add", "br0", "type", "bridge")
        _run(ip, "-n", self.hub, "link", "set", "br0", "up")
        # the bridge sits in a namespace of its own so that the root's firewall and br_netfilter never see it
        _run(ip, "link", "add", IFACE, "type", "veth", "peer", "name", "uplink", "netns", self.hub)
        _run(ip, "-n", self.hub, "link", "set", "uplink", "master", "br0", "up")
        _run(ip, "addr", "add", f"{LAUNCHER_ADDRESS}/24", "dev", IFACE)
        _run(ip, "link", "set", IFACE, "up")
        for number, (namespace, address) in enumerate(zip(self.namespaces, self.addresses), 1):
            _run(ip, "netns", "add", namespace)
            _run(ip, "-n", namespace, "link", "set", "lo", "up")
            _run(ip, "-n", self.hub, "link", "add", f"port{number}", "type", "veth", "peer", "name", IFACE,
                 "netns", namespace)
            _run(ip, "-n", self.hub, "link", "set", f"port{number}", "master", "br0", "up")
            _run(ip, "-n", namespace, "addr", "add", f"{address}/24", "dev", IFACE)
            _run(ip, "-n", namespace, "link", "set", IFACE, "up")

    def _path(self, name):
        return os.path.join(self.workdir, name)

    def _keys(self):
        """A host key shared by the hosts, a client key, and the ssh config and wrapper that use them."""
        for key in ("host_key", "client_key"):
            _run(tool("ssh-keygen"), "-q", "-t", "ed25519", "-N", "", "-C", f"mpicolor test {key}",
                 "-f", self._path(key))
        shutil.copyfile(self._path("client_key.pub"), self._path("authorized_keys"))
        with open(self._path("host_key.pub")) as public:
            host_key = " ".join(public.read().split()[:2])
        with open(self._path("known_hosts"), "w") as known:
            known.write(f"{','.join(self.addresses)} {host_key}\n")
        with open(self._path("ssh_config"), "w") as config:
            config.write(f"""\
Host *
    User root
    IdentityFile {self._path("client_key")}
    IdentitiesOnly yes
    UserKnownHostsFile {self._path("known_hosts")}
    GlobalKnownHostsFile /dev/null
    StrictHostKeyChecking yes
    BatchMode yes
    ConnectTimeout 10
    LogLevel ERROR
""")
        with open(self.ssh_wrapper, "w") as wrapper:
            wrapper.write(f'#!/bin/sh\nexec {tool("ssh")} -F {self._path("ssh_config")} "$@"\n')
        os.chmod(self.ssh_wrapper, 0o755)

    def _start_sshd(self, namespace, address):
        if not os.path.isdir(PRIVSEP_DIR):
            os.makedirs(PRIVSEP_DIR, mode=0o755)
            self.made_privsep_dir = True
        config_path = self._path(f"sshd-{namespace}.conf")
        with open(config_path, "w") as config:
            config.write(f"""\
ListenAddress {address}
HostKey {self._path("host_key")}
PidFile {self._path(f"sshd-{namespace}.pid")}
AuthorizedKeysFile {self._path("authorized_keys")}
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
LogLevel ERROR
""")
        with open(self._path(f"sshd-{namespace}.log"), "w") as log:
            # -D keeps sshd in the foreground, so that this Popen is the daemon and close() can end it by pid
            # a host name of its own too (a UTS namespace), as real hosts have: Open MPI tells nodes apart by it
            self.sshds.append(subprocess.Popen(
                [self.ip, "netns", "exec", namespace, tool("unshare"), "--uts", "sh", "-c",
                 f'hostname "$0" && exec "$@"', namespace, tool("sshd"), "-D", "-e", "-f", config_path],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT))

    def _wait_listening(self):
        deadline = time.monotonic() + SSHD_START_TIMEOUT
        for sshd, namespace, address in zip(self.sshds, self.namespaces, self.addresses):
            while True:
                if sshd.poll() is not None:
                    with open(self._path(f"sshd-{namespace}.log")) as log:
                        raise RuntimeError(f"sshd of {address} exited with {sshd.returncode}: {log.read()}")
                try:
                    socket.create_connection((address, 22), timeout=1).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"sshd of {address} is not listening after {SSHD_START_TIMEOUT} s")
                    time.sleep(0.05)

    # ---- use --------------------------------------------------------------------------------------------
    def launch_options(self, path, slots, open_mpi):
        """mpiexec options for a hostfile at ``path`` naming every host with ``slots`` slots, launching through the
        ssh wrapper and keeping the job's connections on the test subnet.

        MPICH's hydra: ``address:slots``, its proxies connect back over ``-iface``. Open MPI: ``address slots=N``;
        its daemons (prted) start from ``--prefix``, and its out-of-band and TCP traffic stay on the subnet.
        """
        with open(path, "w") as hostfile:
            hostfile.writelines(f"{address} slots={slots}\n" if open_mpi else f"{address}:{slots}\n"
                                for address in self.addresses)
        if not open_mpi:
            return ["-f", str(path), "-launcher", "ssh", "-launcher-exec", self.ssh_wrapper, "-iface", IFACE]
        prefix = os.path.dirname(os.path.dirname(os.path.abspath(sys.executable)))
        return ["--hostfile", str(path), "--prefix", prefix, "--prtemca", "plm_ssh_agent", self.ssh_wrapper,
                "--prtemca", "oob_tcp_if_include", IFACE, "--mca", "btl_tcp_if_include", IFACE,
                "-x", "PATH", "-x", "PYTHONPATH"]

    # ---- teardown ---------------------------------------------------------------------------------------
    def close(self):
        """Stop the sshds and remove the namespaces and links; safe after a partial or failed start."""
        for sshd in self.sshds:
            if sshd.poll() is None:
                sshd.terminate()
                try:
                    sshd.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    sshd.kill()
                    sshd.wait(timeout=5)
        self.sshds = []
        self._remove()
        if self.made_privsep_dir:
            try:
                os.rmdir(PRIVSEP_DIR)
            except OSError:
                pass
            self.made_privsep_dir = False

    def _remove(self):
        """Delete this class's namespaces and root link, ending processes still inside them (sessions of
        our sshds, or the sshds of an earlier run that was killed before it could clean up)."""
        existing = set(_run(self.ip, "netns", "list").split())
        for namespace in [*self.namespaces, self.hub]:
            if namespace not in existing:
                continue
            for pid in _run(self.ip, "netns", "pids", namespace).split():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except ProcessLookupError:
                    pass
            subprocess.run([self.ip, "netns", "delete", namespace], capture_output=True, timeout=COMMAND_TIMEOUT)
        subprocess.run([self.ip, "link", "delete", IFACE], capture_output=True, timeout=COMMAND_TIMEOUT)
