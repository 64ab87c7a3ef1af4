"""The gateways of the service: main servers, each with a tgtd of its own, that share one store of
records (bmi/records.py: RADOS, for rbd) and export every ready node alike. The file backend has one.

A gateway asks the others through their main servers (Pyro4, with the service's key): to bring a
node's export in line with its record now (sync_node), or which nodes they export. One that does
not answer within PEER_SECONDS counts as down, and is named, not waited for.
"""
import concurrent.futures
import logging

import Pyro4.errors

from bmi import pyrosetup

log = logging.getLogger("bmi.gateways")
PEER_SECONDS = 10.0


class Gateways:
    def __init__(self, records, name):
        self._records = records
        self.name = name

    def all(self):
        """Every gateway's record, by name: up or down, they are all in every boot script."""
        return sorted(self._records.gateways(), key=lambda gateway: gateway.name)

    def ask_the_others(self, method, *args):
        """{gateway name: its answer to method(*args), or None if it did not answer}, of every other
        gateway, asked at once."""
        return self.ask_the_others_meanwhile(method, *args)()

    def ask_the_others_meanwhile(self, method, *args):
        """Ask as ask_the_others does, in the background; return the function that waits for the
        answers and returns them."""
        others = [gateway for gateway in self.all() if gateway.name != self.name]
        if not others:
            return dict
        pool = concurrent.futures.ThreadPoolExecutor(len(others))
        asked = {gateway.name: pool.submit(self._ask, gateway, method, args) for gateway in others}
        pool.shutdown(wait=False)

        def answers():
            return {name: answer.result() for name, answer in asked.items()}
        return answers

    @staticmethod
    def _ask(gateway, method, args):
        if not gateway.uri:
            return None
        try:
            with pyrosetup.proxy(gateway.uri) as peer:
                peer._pyroTimeout = PEER_SECONDS
                return getattr(peer, method)(*args)
        except Pyro4.errors.CommunicationError as err:   # down: the caller names it
            log.info("gateway %s does not answer: %s", gateway.name, err)
        except Exception as err:   # up, but failing (its tgtd is down, say): as good as down here
            log.warning("gateway %s failed to %s: %s", gateway.name, method, err)
        return None
