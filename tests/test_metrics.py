"""The main server's Prometheus metrics (README, Metrics), scraped over HTTP from the real processes
and read with Prometheus' own text parser, against the operations the test performed."""
import os
import socket
import subprocess
import sys
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from config import ROOT
from testkit.daemons import free_port, wait_until
from testkit.images import MiB, make_image_file
from testkit.initiator import lun_url, session
from testkit.service import variant

file_only = pytest.mark.parametrize("backend", ["file"], indirect=True)


@pytest.fixture
def settings(settings):
    return variant(settings, BMI_METRICS_PORT=free_port())


def scrape(settings):
    """{(sample name, ((label, value), ...)): value} of one scrape."""
    url = "http://%s:%d/metrics" % (settings.BMI_METRICS_HOST, settings.BMI_METRICS_PORT)
    with urllib.request.urlopen(url, timeout=30) as answer:
        text = answer.read().decode()
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def value(samples, name, **labels):
    return samples.get((name, tuple(sorted(labels.items()))))


def tgtd_status(tgtd, field):
    with open("/proc/%d/status" % tgtd.proc.pid) as f:
        return next(line.split()[1] for line in f if line.startswith(field + ":"))


def reflinks(directory):
    """Can cp make reflinks in directory (the file backend's disks are then copies of nothing)?"""
    (directory / "probe").write_bytes(b"")
    return subprocess.run(["cp", "--reflink=always", "probe", "probe.copy"], cwd=directory,
                          capture_output=True).returncode == 0


def test_operations_copies_nodes_and_targets(service, settings, tgtd, tmp_path):
    before = scrape(settings)   # the client's calls that waited for the server are counted too
    calls = {name: value(before, "bmi_operations_total", operation=name, outcome="ok")
             for name in ("import_image", "provision", "list_all_images", "create_snapshot", "detach_node")}
    assert calls["import_image"] == calls["provision"] == 0
    assert value(before, "bmi_targets_exported") == 0 and value(before, "bmi_nodes", state="ready") == 0

    make_image_file(tmp_path / "golden.raw", 4 * MiB)
    assert service.client("import_image", "golden", str(tmp_path / "golden.raw")).returncode == 0
    assert service.client("provision", "golden", "node-a").returncode == 0
    assert service.client("provision", "golden", "node-a").returncode != 0   # it exists
    assert service.client("provision", "missing", "node-b").returncode != 0
    assert service.client("list_all_images").returncode == 0
    with session(lun_url(settings, "node-a")):
        held = scrape(settings)
    assert value(held, "bmi_initiators_logged_in") == 1
    assert service.client("create_snapshot", "node-a", "snap").returncode == 0

    during = scrape(settings)
    assert value(during, "bmi_operations_total", operation="import_image", outcome="ok") == 1
    assert value(during, "bmi_operations_total", operation="provision", outcome="ok") == 1
    assert value(during, "bmi_operations_total", operation="provision", outcome="already_exists") == 1
    assert value(during, "bmi_operations_total", operation="provision", outcome="not_found") == 1
    assert value(during, "bmi_operations_total", operation="list_all_images", outcome="ok") == calls["list_all_images"] + 1
    assert value(during, "bmi_operation_duration_seconds_count", operation="provision") == 3
    assert value(during, "bmi_operation_duration_seconds_sum", operation="import_image") > 0
    # as the copy tools report their progress: the whole image, once a copy; the file backend's
    # disks are reflinks where the filesystem has them, rbd's are clones
    disk_copy = 0 if settings.BMI_BACKEND == "rbd" or reflinks(tmp_path) else 4 * MiB
    snapshot_copy = 0 if settings.BMI_BACKEND == "file" and reflinks(tmp_path) else 4 * MiB
    assert value(during, "bmi_copied_bytes_total", operation="import_image") == 4 * MiB
    assert value(during, "bmi_copied_bytes_total", operation="provision") == disk_copy
    assert value(during, "bmi_copied_bytes_total", operation="create_snapshot") == snapshot_copy
    assert value(during, "bmi_nodes", state="ready") == 1 and value(during, "bmi_nodes", state="detaching") == 0
    assert (value(during, "bmi_tgtd_up"), value(during, "bmi_targets_exported")) == (1, 1)
    assert value(during, "bmi_initiators_logged_in") == 0
    assert value(during, "bmi_gateway_up", gateway=settings.BMI_GATEWAY) == 1
    assert value(during, "bmi_tgtd_threads") == int(tgtd_status(tgtd, "Threads"))
    assert value(during, "bmi_tgtd_resident_memory_bytes") == int(tgtd_status(tgtd, "VmRSS")) * 1024

    assert service.client("detach_node", "node-a").returncode == 0
    after = scrape(settings)
    assert value(after, "bmi_operations_total", operation="detach_node", outcome="ok") == 1
    assert (value(after, "bmi_nodes", state="ready"), value(after, "bmi_targets_exported")) == (0, 0)
    assert value(after, "bmi_tgtd_threads") < value(during, "bmi_tgtd_threads")   # the LUN's threads went


@file_only
def test_reconcile_rounds_and_a_tgtd_that_is_down(service, settings, tgtd):
    first = scrape(settings)
    rounds = value(first, "bmi_reconcile_rounds_total", outcome="ok")
    wait_until(lambda: value(scrape(settings), "bmi_reconcile_rounds_total", outcome="ok") > rounds, 30,
               "a round of reconciling counted")
    assert value(first, "bmi_reconcile_rounds_total", outcome="failed") == 0
    # a round may end between the reading of its counter and that of its histogram
    assert abs(value(first, "bmi_reconcile_duration_seconds_count") - rounds) <= 1

    tgtd.stop()
    wait_until(lambda: value(scrape(settings), "bmi_reconcile_rounds_total", outcome="failed") > 0, 30,
               "a failed round counted")
    down = scrape(settings)
    assert value(down, "bmi_tgtd_up") == 0
    for gone in ("bmi_targets_exported", "bmi_initiators_logged_in", "bmi_tgtd_threads"):
        assert value(down, gone) is None, gone
    assert value(down, "bmi_nodes", state="ready") == 0   # what can be read still is
    tgtd.start()
    assert value(scrape(settings), "bmi_tgtd_up") == 1


@file_only
def test_a_metrics_port_in_use_is_one_line(settings):
    with socket.socket() as taken:
        taken.bind((settings.BMI_METRICS_HOST, settings.BMI_METRICS_PORT))
        taken.listen()
        done = subprocess.run([sys.executable, "mainserver.py"], cwd=ROOT, capture_output=True, text=True,
                              timeout=60, env=dict(os.environ, **settings.environment()))
    assert done.returncode == 1
    assert done.stderr.splitlines()[-1] == "mainserver: port %d on %s is in use by another program (BMI_METRICS_PORT)" % (
        settings.BMI_METRICS_PORT, settings.BMI_METRICS_HOST)
