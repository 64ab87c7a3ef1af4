"""Hosts for tests: network namespaces on one private network, each standing for a machine.

A Network is a bridge in a namespace of its own; each Host is a namespace joined to it by a veth
pair, with an address of the benchmarking range 198.18.0.0/15 (RFC 2544: never routed anywhere).
The test makes them and removes them (as root); whatever runs in a host is started by the test and
stopped by its process id before the host goes.
"""
import itertools
import os
import subprocess

SUBNET = "198.18.%d.%d"
_networks = itertools.count(1)


def ip(*args, netns=None):
    command = ["ip", *(["netns", "exec", netns, "ip"] if netns else []), *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise RuntimeError("%s: %s" % (" ".join(command), done.stderr.strip()))


class Host:
    def __init__(self, namespace, address):
        self.namespace = namespace
        self.address = address

    def command(self, *args):
        """args as a command that runs in this host."""
        return ["ip", "netns", "exec", self.namespace, *args]

    def run(self, *args, **kwargs):
        return subprocess.run(self.command(*args), **kwargs)

    def popen(self, *args, **kwargs):
        """A process in this host; its pid is that of args[0] itself (ip netns exec execs it)."""
        return subprocess.Popen(self.command(*args), **kwargs)


class Network:
    def __init__(self):
        self.number = next(_networks) % 200 + 1
        self.prefix = "bmi%d.%d" % (os.getpid(), self.number)   # namespaces of this test alone
        self.switch = self.prefix + "-switch"
        self.hosts = []
        ip("netns", "add", self.switch)
        ip("link", "add", "br0", "type", "bridge", netns=self.switch)
        ip("link", "set", "br0", "up", netns=self.switch)

    def host(self, name):
        """A new host on the network, its address the next of the subnet."""
        number = len(self.hosts) + 1
        host = Host("%s-%s" % (self.prefix, name), SUBNET % (self.number, number))
        self.hosts.append(host)
        ip("netns", "add", host.namespace)
        port = "port%d" % number
        ip("link", "add", "eth0", "netns", host.namespace, "type", "veth", "peer", "name", port,
           "netns", self.switch)
        ip("link", "set", port, "master", "br0", "up", netns=self.switch)
        ip("addr", "add", host.address + "/24", "dev", "eth0", netns=host.namespace)
        for device in ("eth0", "lo"):
            ip("link", "set", device, "up", netns=host.namespace)
        return host

    def close(self):
        """Remove every namespace (their veth pairs go with them)."""
        for namespace in [host.namespace for host in self.hosts] + [self.switch]:
            subprocess.run(["ip", "netns", "delete", namespace], capture_output=True, timeout=30)
