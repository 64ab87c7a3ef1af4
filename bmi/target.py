"""Target backend: iSCSI targets in tgtd, made and removed by the script scripts/target/tgt."""
from bmi import runner


class Target:
    def __init__(self, settings):
        self._run = runner.Script("target", "tgt", settings)

    def create(self, tid, iqn, backing, chap_user, chap_secret):
        bstype, store, bsopts = backing
        self._run("create", str(tid), iqn, bstype, store, bsopts, chap_user, chap_secret)

    def delete(self, tid, chap_user, force=False):
        self._run("delete", str(tid), chap_user, *(["--force"] if force else []))

    def connections(self, tid):
        """Initiators logged in to the target."""
        return self._run("connections", str(tid)).split()

    def exported(self):
        """{tid: iqn} of every target tgtd has now."""
        pairs = (line.split(" ", 1) for line in self._run("list").splitlines())
        return {int(tid): iqn for tid, iqn in pairs}
