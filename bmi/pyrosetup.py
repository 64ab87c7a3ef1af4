"""Pyro4 settings shared by the name server, the main server and the client: serializers, the
shared HMAC key that authenticates every message, and optional TLS with client certificates."""
import functools
import os
import secrets
import signal
import ssl

import Pyro4
import Pyro4.socketutil

from bmi.files import write_private

_hmac_key = None
MIN_KEY_BYTES = 16


def configure(settings, create_key=False):
    """Set Pyro4 up for this program. The servers create the key file if it is missing."""
    global _hmac_key
    # serpent and json only: pickle, dill and marshal would let a caller build arbitrary objects
    Pyro4.config.SERIALIZER = "serpent"
    Pyro4.config.SERIALIZERS_ACCEPTED = {"serpent", "json"}
    Pyro4.config.SOCK_REUSE = True   # a restarted server binds its port again at once
    Pyro4.config.THREADPOOL_SIZE = settings.BMI_THREADPOOL_SIZE
    if settings.BMI_TLS_CERT:
        # Pyro4's own contexts trust the system's CAs too, and handshake in the accepting thread
        Pyro4.socketutil.getSSLcontext = _ssl_context
        # every program shows its certificate, as server and as client, and checks the other's
        Pyro4.config.SSL = True
        Pyro4.config.SSL_REQUIRECLIENTCERT = True
        Pyro4.config.SSL_SERVERCERT = Pyro4.config.SSL_CLIENTCERT = settings.BMI_TLS_CERT
        Pyro4.config.SSL_SERVERKEY = Pyro4.config.SSL_CLIENTKEY = settings.BMI_TLS_KEY
        Pyro4.config.SSL_CACERTS = settings.BMI_TLS_CA
    if create_key:
        _create_key_file(settings.BMI_KEY_FILE)
    with open(settings.BMI_KEY_FILE, "rb") as f:
        _hmac_key = f.read().strip()
    if len(_hmac_key) < MIN_KEY_BYTES:
        # an empty key is no key to Pyro4: it would sign nothing and check nothing
        raise ValueError("the key file %s holds no usable key (%d bytes, at least %d needed)"
                         % (settings.BMI_KEY_FILE, len(_hmac_key), MIN_KEY_BYTES))


class _ServerContext(ssl.SSLContext):
    """Its connections do their TLS handshake in the thread that serves them, at their first read,
    not in the one thread that accepts every connection: a peer that connects and says nothing
    holds up no one else."""

    def wrap_socket(self, sock, server_side=False, do_handshake_on_connect=True, *args, **kwargs):
        return super().wrap_socket(sock, server_side, False, *args, **kwargs)


@functools.lru_cache(maxsize=None)
def _ssl_context(servercert="", serverkey="", clientcert="", clientkey="", cacerts="", keypassword=""):
    """Stands in for Pyro4.socketutil.getSSLcontext: trusts BMI_TLS_CA alone."""
    if servercert:
        context = _ServerContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(servercert, serverkey or None, keypassword or None)
        context.verify_mode = ssl.CERT_REQUIRED   # the client shows a certificate of the CA
    else:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)   # checks the server's certificate and address
        context.load_cert_chain(clientcert, clientkey or None, keypassword or None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_verify_locations(cafile=cacerts)
    return context


def _create_key_file(path):
    """Make the key file, mode 0600, unless it exists. Two programs starting at the same instant
    both end up with the one key: linking a candidate into place succeeds for one of them only."""
    if os.path.exists(path):
        return
    os.makedirs(os.path.dirname(path) or ".", mode=0o700, exist_ok=True)
    try:
        write_private(path, secrets.token_hex(32) + "\n", replace=False)
    except FileExistsError:
        pass


def locate_ns(settings):
    return Pyro4.locateNS(settings.BMI_NS_HOST, settings.BMI_NS_PORT, broadcast=False, hmac_key=_hmac_key)


def proxy(uri):
    server = Pyro4.Proxy(uri)
    server._pyroHmacKey = _hmac_key
    return server


def daemon(settings):
    server = Pyro4.Daemon(host=settings.BMI_SERVER_HOST, port=settings.BMI_SERVER_PORT)
    server._pyroHmacKey = _hmac_key
    return server


def start_name_server(settings):
    """(uri, daemon) of a name server; no broadcast responder: clients are told where it is."""
    import Pyro4.naming   # here: the client, whose start-up time counts, does not need it
    uri, name_server, _ = Pyro4.naming.startNS(settings.BMI_NS_HOST, settings.BMI_NS_PORT,
                                               enableBroadcast=False, hmac=_hmac_key)
    return uri, name_server


def serve(daemon, uri, log):
    """Serve until SIGINT or SIGTERM, then close the daemon: the program ends cleanly either way."""
    signal.signal(signal.SIGTERM, signal.default_int_handler)   # SIGTERM too ends the request loop
    log.info("serving %s", uri)
    try:
        daemon.requestLoop()
    finally:
        daemon.close()
    log.info("stopped")
