"""What the tests, the demo and the benchmark share: real daemons started on loopback and stopped by
their process id (daemons.py), the three bmi-rpc processes (service.py), a real iSCSI initiator
(initiator.py), disk images (images.py), a bootable disk and a virtual node booting it (bootdisk.py,
bootvm.py). fixtures.py makes them pytest fixtures; nothing else here imports pytest."""
