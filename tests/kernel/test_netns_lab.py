"""The namespace helper every root test stands on: it builds links and removes all it made."""

from pfha.lab.netns import run


def test_link_ping_and_teardown(lab):
    a, b = lab.ns("a"), lab.ns("b")
    lab.link(a, "xl0", b, "eth0")
    a.exec("ip", "addr", "add", "10.250.0.1/24", "dev", "xl0")
    b.exec("ip", "addr", "add", "10.250.0.2/24", "dev", "eth0")
    a.exec("ping", "-c", "1", "-W", "2", "10.250.0.2")
    names = {a.name, b.name}
    lab.close()
    listed = run(["ip", "netns", "list"]).stdout
    assert not any(name in listed for name in names)


def test_bridge_segment(lab):
    sw, a, b, c = lab.ns("sw"), lab.ns("a"), lab.ns("b"), lab.ns("c")
    lab.bridge(sw, "br0")
    for i, host in enumerate((a, b, c), start=1):
        lab.attach(sw, "br0", host, "eth0")
        host.exec("ip", "addr", "add", f"10.250.1.{i}/24", "dev", "eth0")
    a.exec("ping", "-c", "1", "-W", "2", "10.250.1.3")
