"""Certificates for the TLS tests, made with openssl: a CA of the service's, one of a stranger's."""
import subprocess

from testkit.service import variant

LEAF_EXTENSIONS = """\
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth, clientAuth
subjectAltName = {names}
authorityKeyIdentifier = keyid, issuer
"""


def openssl(*args):
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True, timeout=60)


def make_ca(directory, name):
    """A self-signed CA: (certificate, key)."""
    cert, key = directory / (name + ".crt"), directory / (name + ".key")
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-days", "2", "-subj", "/CN=" + name, "-keyout", key, "-out", cert)
    return str(cert), str(key)


def make_cert(directory, name, ca, addresses=("127.0.0.1",), subject=None):
    """A certificate for addresses signed by ca, good as server and as client, of subject (openssl's
    -subj; by default /CN=name): (certificate, key)."""
    cert, key, request = (directory / (name + suffix) for suffix in (".crt", ".key", ".csr"))
    extensions = directory / (name + ".ext")
    extensions.write_text(LEAF_EXTENSIONS.format(names=", ".join("IP:" + address for address in addresses)))
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-subj", subject or "/CN=" + name, "-keyout", key, "-out", request)
    openssl("x509", "-req", "-in", request, "-CA", ca[0], "-CAkey", ca[1], "-CAcreateserial",
            "-days", "2", "-extfile", extensions, "-out", cert)
    return str(cert), str(key)


class Certificates:
    """The service's CA and a certificate it signed, naming addresses; a stranger's CA and a
    certificate of its."""

    def __init__(self, directory, addresses=("127.0.0.1",)):
        directory.mkdir()
        self.ca = make_ca(directory, "bmi-ca")
        self.cert = make_cert(directory, "bmi", self.ca, addresses)
        self.other_ca = make_ca(directory, "other-ca")
        self.other_cert = make_cert(directory, "stranger", self.other_ca)
        self.both_cas = str(directory / "both-cas.crt")
        with open(self.both_cas, "w") as out:
            for ca in (self.ca, self.other_ca):
                with open(ca[0]) as f:
                    out.write(f.read())


def with_tls(settings, cert, ca, **changes):
    return variant(settings, BMI_TLS_CERT=cert[0], BMI_TLS_KEY=cert[1], BMI_TLS_CA=ca, **changes)
