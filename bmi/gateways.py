"""The gateways of the service: main servers, each with a tgtd of its own, that share one store of
records (bmi/records.py: RADOS, for rbd) and export each node in nodes.EXPORTED at the gateways
placed for it (bmi/placement.py). The file backend has one.

A gateway asks the others through their main servers' peer methods (Pyro4, with the service's
key), all at once: each method of Gateways below is one of them. One that does not answer within
BMI_PEER_TIMEOUT counts as down: its answer is None, and it is named, not waited for.

Which gateways are alive, Ceph tells, where the records are there: those whose watch on the changes
it has (bmi/changes.py). One found dead so is not called at all (its answer is None at once), so a
gateway that hangs holds up no one. With records in files (one gateway), those that answer a ping.
"""
import concurrent.futures
import logging
import threading

import Pyro4.errors

from bmi import pyrosetup

log = logging.getLogger("bmi.gateways")


class Gateways:
    def __init__(self, records, name, timeout, pushed=False):
        """pushed: a change of a gateway's record is pushed to this one (bmi/changes.py), which then
        calls forget(), so the records are read once, not at every look (reading them lists every
        record: one listing of the namespace)."""
        self._records = records
        self.name = name
        self._timeout = timeout
        self._watching = None   # the Ceph clients watching the changes at the last look (None: not known)
        self._pushed = pushed
        self._known = None      # the records as last read, with pushed
        self._forgotten = 0     # how many times forget() was called: a read begun before one is not kept
        self._lock = threading.Lock()

    def all(self):
        """Every gateway's record, by name, up or down."""
        forgotten, known = self._forgotten, self._known
        if known is None:
            known = sorted(self._records.gateways(), key=lambda gateway: gateway.name)
            with self._lock:
                if self._pushed and forgotten == self._forgotten:
                    self._known = known
        return known

    def forget(self):
        """Read the gateways' records again at the next look: one changed, or a change may have been missed."""
        with self._lock:
            self._forgotten += 1
            self._known = None

    def live(self, fresh=True):
        """The names of the live gateways, this one among them: those a node is placed on. Those whose
        watch Ceph has, asked now (fresh) or as at the last look (every round of reconciling looks);
        where the records cannot tell, those that answer a ping."""
        if fresh or self._watching is None:
            self._watching = self._records.watchers()
        if self._watching is None:
            return sorted([self.name] + [name for name, answer in self.ping().items() if answer is not None])
        return sorted({self.name} | {g.name for g in self.all() if g.watcher in self._watching})

    # --- the peer interface: {gateway name: its answer, or None}, of every other gateway ---------

    def sync_node(self, node):
        """Each brings its export of node in line with the node's record now: {"exported": bool}."""
        return self.sync_node_meanwhile(node)()

    def sync_node_meanwhile(self, node):
        """sync_node in the background: the function that waits for the answers and returns them."""
        return self._ask(lambda peer: peer.sync_node(node))

    def logged_in(self, node):
        """The initiators logged in to node's target there (read only)."""
        return self._ask(lambda peer: peer.logged_in(node))()

    def exported_nodes(self, only=None, fresh=True):
        """The nodes each exports (each of only, names, if given): now (fresh), or as it knows from
        its last listing and its changes since (cheap)."""
        return self._ask(lambda peer: peer.exported_nodes(fresh), only=only)()

    def ping(self):
        """Every other gateway's answer to a ping, dead to Ceph or not."""
        return self._ask(lambda peer: peer.ping(), everyone=True)()

    def _ask(self, call, everyone=False, only=None):
        others = [gateway for gateway in self.all()
                  if gateway.name != self.name and (only is None or gateway.name in only)]
        dead = {gateway.name: None for gateway in others   # to Ceph: not asked, their answer None at once
                if self._watching is not None and not everyone and gateway.watcher not in self._watching}
        others = [gateway for gateway in others if gateway.name not in dead]
        if not others:
            return lambda: dict(dead)
        pool = concurrent.futures.ThreadPoolExecutor(len(others))
        asked = {gateway.name: pool.submit(self._ask_one, gateway, call) for gateway in others}
        pool.shutdown(wait=False)
        return lambda: dict(dead, **{name: answer.result() for name, answer in asked.items()})

    def _ask_one(self, gateway, call):
        if not gateway.uri:
            return None
        try:
            with pyrosetup.proxy(gateway.uri) as peer:
                peer._pyroTimeout = self._timeout
                peer._pyroSerializer = "json"   # names only; and read much faster than serpent (mainclient.call)
                return call(peer)
        except Pyro4.errors.CommunicationError as err:   # down: the caller names it
            log.info("gateway %s does not answer: %s", gateway.name, err)
        except Exception as err:   # up, but failing (its tgtd is down, say): as good as down here
            log.warning("gateway %s failed to answer: %s", gateway.name, err)
        return None
