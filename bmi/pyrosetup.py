"""Pyro4 settings shared by the name server, the main server and the client."""
import signal

import Pyro4

# (flag, setting) pairs every program takes
COMMON_FLAGS = [("--ns-host", "BMI_NS_HOST"), ("--ns-port", "BMI_NS_PORT"),
                ("--host", "BMI_SERVER_HOST"), ("--port", "BMI_SERVER_PORT")]


def configure(settings):
    # serpent and json only: pickle, dill and marshal would let a caller build arbitrary objects
    Pyro4.config.SERIALIZER = "serpent"
    Pyro4.config.SERIALIZERS_ACCEPTED = {"serpent", "json"}
    Pyro4.config.SOCK_REUSE = True   # a restarted server binds its port again at once
    Pyro4.config.THREADPOOL_SIZE = settings.BMI_THREADPOOL_SIZE


def locate_ns(settings):
    return Pyro4.locateNS(settings.BMI_NS_HOST, settings.BMI_NS_PORT, broadcast=False)


def stop_on_signals():
    """SIGTERM stops a request loop as SIGINT does: the loop returns and the program closes cleanly."""
    signal.signal(signal.SIGTERM, signal.default_int_handler)
