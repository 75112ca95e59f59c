"""Interop with DMTF's reference tools over their emulator socket protocol (INTEROP.md).

``emu_socket`` holds the frame codec and blocking socket helpers, ``doe_driver`` drives a
simulated endpoint's DOE mailbox at register level, ``server`` serves one simulated device to a
requester (``tiosim serve-device``), and ``client`` is the requester side (``tiosim attest``).
"""
