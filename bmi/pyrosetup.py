"""Pyro4 settings shared by the name server, the main server and the client: serializers, the
shared HMAC key that authenticates every message, and optional TLS with client certificates."""
import errno
import functools
import os
import secrets
import signal
import socket
import ssl

import Pyro4
import Pyro4.socketutil

from bmi.files import write_private

_hmac_key = None
MIN_KEY_BYTES = 16
# What a server reads of a caller's message, its annotations and its body each (checked from its
# header, before they are read and before its HMAC is): every call's arguments are names and paths.
# Answers are not bounded: a listing of 10,000 nodes is several MiB.
SERVER_MESSAGE_BYTES = 1 << 20
# A new connection has this long to say who it is (its first message carries the HMAC): one that
# connects and says nothing gives its worker thread back then.
HANDSHAKE_SECONDS = 5


def configure(settings, create_key=False, timeout=None):
    """Set Pyro4 up for this program. The servers create the key file if it is missing. With a
    timeout, every wait for the other side (connect, each answer) is bounded by it (a client's)."""
    global _hmac_key
    Pyro4.config.COMMTIMEOUT = timeout or 0.0
    # serpent and json only: pickle, dill and marshal would let a caller build arbitrary objects
    Pyro4.config.SERIALIZER = "serpent"
    Pyro4.config.SERIALIZERS_ACCEPTED = {"serpent", "json"}
    Pyro4.config.SOCK_REUSE = True   # a restarted server binds its port again at once
    Pyro4.config.THREADPOOL_SIZE = settings.BMI_THREADPOOL_SIZE
    Pyro4.config.MAX_MESSAGE_SIZE = 0   # Pyro4's limit would bound what a server sends too: see _bounded
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
    _hmac_key = read_key_file(settings.BMI_KEY_FILE)


def read_key_file(path):
    """The key in path, refused unless it is the file of its owner alone, as ssh refuses a private key."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        raise ValueError("there is no key file %s (BMI_KEY_FILE): copy the servers' key file there, "
                         "mode 0600" % path) from None
    except OSError as err:
        raise ValueError("cannot read the key file %s: %s" % (path, err.strerror)) from None
    with os.fdopen(fd, "rb") as f:
        status = os.fstat(f.fileno())
        if status.st_mode & 0o077:
            raise ValueError("the key file %s is open to others (mode %04o): it must be readable by its owner "
                             "alone; chmod 600 %s" % (path, status.st_mode & 0o7777, path))
        if status.st_uid not in (0, os.geteuid()):
            raise ValueError("the key file %s belongs to user id %d, not to this user (%d) or root"
                             % (path, status.st_uid, os.geteuid()))
        key = f.read().strip()
    if len(key) < MIN_KEY_BYTES:
        # an empty key is no key to Pyro4: it would sign nothing and check nothing
        raise ValueError("the key file %s holds no usable key (%d bytes, at least %d needed)"
                         % (path, len(key), MIN_KEY_BYTES))
    return key


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


def name_servers(settings):
    """[(host, port)] of the name servers of BMI_NS_HOST, in its order (BMI_NS_PORT where one names none)."""
    return [split_address(entry, settings.BMI_NS_PORT) for entry in settings.BMI_NS_HOST.split(",")]


def locate_ns(settings, where=None):
    """A proxy of the name server at where (host, port), by default the first of BMI_NS_HOST."""
    host, port = where or name_servers(settings)[0]
    return Pyro4.locateNS(host, port, broadcast=False, hmac_key=_hmac_key)


def gateways(ns, service):
    """{gateway name: uri} of the service's main servers registered with the name server ns: each
    as SERVICE.GATEWAY, with SERVICE in its metadata."""
    found = ns.list(metadata_all={service})
    return {name[len(service) + 1:]: Pyro4.URI(uri) for name, uri in found.items() if name.startswith(service + ".")}


def proxy(uri):
    server = Pyro4.Proxy(uri)
    server._pyroHmacKey = _hmac_key
    return server


def _listening(start, host, port, setting):
    """start(), which makes a server listen on host:port; a port in use is one line naming it."""
    try:
        return start()
    except OSError as err:
        if err.errno == errno.EADDRINUSE:
            raise OSError(err.errno, "port %d on %s is in use by another program (%s)" % (port, host, setting)) from None
        raise OSError(err.errno, "cannot listen on %s:%d (%s): %s" % (host, port, setting, err.strerror)) from None


WILDCARD_HOSTS = ("0.0.0.0", "::")


def split_address(text, default_port=0):
    """(host, port) of HOST, HOST:PORT or [V6 ADDRESS]:PORT; default_port where it names none."""
    host, colon, port = text.rpartition(":")
    if not colon or (":" in host and not host.startswith("[")):   # no port: a name, IPv4 or bare IPv6
        return text.strip("[]"), default_port
    return host.strip("[]"), int(port)


def advertised(advertise, listen_host, setting, reach=None):
    """(nathost, natport) for Pyro4: the address a server that listens on listen_host gives others
    (in its URIs: the name server hands the main server's to clients). advertise (host[:port]) if
    set; else nothing, the address it listens on, unless it listens on all interfaces: then that of
    the interface that reaches reach (host, port), if it is no loopback. ValueError naming setting
    where no reachable address can be told."""
    if advertise:
        return split_address(advertise)
    if listen_host not in WILDCARD_HOSTS:
        return None, None
    address = None
    if reach:
        try:
            with socket.socket(socket.AF_INET6 if ":" in reach[0] else socket.AF_INET, socket.SOCK_DGRAM) as probe:
                probe.connect(reach)   # a route, no packet: the address of the interface that reaches it
                address = probe.getsockname()[0]
        except OSError:
            pass
    if address is None or address.startswith("127.") or address == "::1":
        raise ValueError("it listens on all interfaces (%s) but cannot tell which address others reach it at: "
                         "set %s=HOST[:PORT]" % (listen_host, setting))
    return address, 0


def _bounded(receive):
    """receive(size), refusing a size over SERVER_MESSAGE_BYTES before anything of it is read."""
    def bounded_receive(size):
        if size > SERVER_MESSAGE_BYTES:
            raise Pyro4.errors.MessageTooLargeError("a message of more than %d bytes (%d): refused"
                                                    % (SERVER_MESSAGE_BYTES, size))
        return receive(size)
    return bounded_receive


class _HandshakeInTime:
    """A Pyro4 daemon whose connections have HANDSHAKE_SECONDS for their handshake, and whose
    callers' messages are read up to SERVER_MESSAGE_BYTES. A connection refused for want of a
    worker thread is closed at once: the accepting thread that refuses it would otherwise wait for
    its first message."""

    def _handshake(self, conn, denied_reason=None):
        if denied_reason:
            conn.close()
            return False
        conn.recv = _bounded(conn.recv)
        conn.sock.settimeout(HANDSHAKE_SECONDS)
        try:
            return super()._handshake(conn)
        finally:
            conn.sock.settimeout(Pyro4.config.COMMTIMEOUT or None)


class _Daemon(_HandshakeInTime, Pyro4.Daemon):
    pass


def daemon(settings):
    host, port = settings.BMI_SERVER_HOST, settings.BMI_SERVER_PORT
    nathost, natport = advertised(settings.BMI_SERVER_ADVERTISE, host, "BMI_SERVER_ADVERTISE",
                                  name_servers(settings)[0])
    server = _listening(lambda: _Daemon(host=host, port=port, nathost=nathost, natport=natport),
                        host, port, "BMI_SERVER_PORT")
    server._pyroHmacKey = _hmac_key
    return server


def start_name_server(settings):
    """(uri, daemon) of a name server; no broadcast responder: clients are told where it is."""
    import Pyro4.naming   # here: the client, whose start-up time counts, does not need it
    host, port = name_servers(settings)[0]   # the others of BMI_NS_HOST are other hosts'
    nathost, natport = advertised(settings.BMI_NS_ADVERTISE, host, "BMI_NS_ADVERTISE")

    class NameServerDaemon(_HandshakeInTime, Pyro4.naming.NameServerDaemon):
        pass
    name_server = _listening(lambda: NameServerDaemon(host, port, nathost=nathost, natport=natport),
                             host, port, "BMI_NS_PORT")
    name_server._pyroHmacKey = _hmac_key
    return name_server.uriFor(name_server.nameserver), name_server


def serve(daemon, uri, log):
    """Serve until SIGINT or SIGTERM, then close the daemon: the program ends cleanly either way."""
    signal.signal(signal.SIGTERM, signal.default_int_handler)   # SIGTERM too ends the request loop
    log.info("serving %s", uri)
    try:
        daemon.requestLoop()
    finally:
        daemon.close()
    log.info("stopped")
