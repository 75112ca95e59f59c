"""Interop with DMTF's reference tools over their emulator socket protocol (INTEROP.md).

* ``emu_socket`` — the frame codec (12-byte big-endian header) and blocking socket helpers;
* ``doe_driver`` — drives a simulated endpoint's DOE mailbox at register level;
* ``device`` — the simulated device ``serve-device`` serves, and its default identity;
* ``server`` — the responder side (``tiosim serve-device``); ``describe`` its one-line log summaries;
* ``client`` — the requester side; ``attest_flow`` — the steps ``tiosim attest`` runs through it;
* ``capture`` — pcap files of the DOE objects on the socket, readable by DMTF's ``spdm_dump``.
"""
