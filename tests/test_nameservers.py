"""No single host in the control plane: two hosts, each with a name server and a gateway (gw-a and
the first name server, gw-b and the second), on one Ceph cluster; every program is given both name
servers (BMI_NS_HOST). Every gateway registers with each; a client asks each in turn; losing a host
(its name server and its gateway) during a burst of provisions loses no operation."""
import json
import time

import pytest

from testkit.daemons import wait_until
from testkit.gateways import running_gateways

pytestmark = pytest.mark.parametrize("backend", ["rbd"], indirect=True)


@pytest.fixture
def hosts(settings, tmp_path):
    with running_gateways(settings, tmp_path, ["gw-a", "gw-b"], name_servers=2) as group:
        yield group


def test_losing_a_name_server_and_a_gateway_during_a_burst_of_provisions_loses_no_operation(hosts, settings):
    first, second = [ns.settings.BMI_NS_HOST.split(",")[0] for ns in hosts.name_servers]
    b = hosts.services["gw-b"]   # the clients' settings: both name servers, the first one first

    def registered(address, gateway):
        """Whether gateway is registered with the name server at address alone (it answers there)."""
        return b.client("--ns-host", address, "--gateway", gateway, "ping").returncode == 0

    wait_until(lambda: all(registered(address, gateway) for address in (first, second) for gateway in ("gw-a", "gw-b")),
               10, "both gateways registered with both name servers")
    before = hosts.provisions("gw-b", ["before-%d" % i for i in range(8)])   # each at any gateway
    iqns = {"%s:%s" % (settings.BMI_IQN_PREFIX, node) for node in before}
    wait_until(lambda: iqns & set(hosts.exported("gw-a") + hosts.exported("gw-b")), 60, "provisions under way")
    hosts.name_servers[0].nameserver.kill()   # the first host dies: its name server, its gateway
    hosts.name_servers[0].nameserver.wait(10)
    hosts.kill("gw-a")
    after = hosts.provisions("gw-b", ["after-%d" % i for i in range(8)])
    ended = {node: (client.wait(120), client.communicate()[1]) for node, client in {**before, **after}.items()}

    # every provision asked for once the host was gone is done, through the other name server and gateway
    assert all(ended[node] == (0, "") for node in after), ended
    # one under way at the dead gateway is told so (no answer: exit 3), never silently lost; all others are done
    gw_a = hosts.settings("gw-a").BMI_SERVER_PORT
    assert all(ended[node] == (0, "") or (ended[node][0] == 3 and ":%d" % gw_a in ended[node][1])
               for node in before), ended
    succeeded = {node for node, (code, _) in ended.items() if code == 0}

    done = b.client("--json", "status")   # the dead name server and gateway down, the others up
    assert done.returncode == 8, done.stderr
    status = json.loads(done.stdout)
    assert [(ns["address"], ns["up"]) for ns in status["name servers"]] == [(first, False), (second, True)]
    assert "cannot reach the name server at %s" % first in status["name servers"][0]["detail"]
    assert {name: gateway["up"] for name, gateway in status["gateways"].items()} == {"gw-a": False, "gw-b": True}
    lines = b.client("status").stdout.splitlines()
    assert lines[:2] == ["name server %s: DOWN (cannot reach the name server at %s)" % (first, first),
                         "name server %s: up" % second], lines

    hosts.name_servers[0].start_nameserver()   # back, empty: gw-b registers with it again by itself
    restarted = time.monotonic()
    wait_until(lambda: registered(first, "gw-b"), 10, "gw-b registered with the first name server again")
    assert time.monotonic() - restarted < 5

    hosts.start("gw-a")   # back: what it left half made is taken away, the rest is exported where placed
    wait_until(lambda: hosts.whole("gw-b"), 60, lambda: "nothing half made, at either gateway (%s)"
               % "; ".join(hosts.half_made("gw-b")))
    ready = {n["node"] for n in hosts.listing("gw-a")["nodes"]}
    assert succeeded <= ready, succeeded - ready
    assert registered(first, "gw-a") and registered(second, "gw-a")
