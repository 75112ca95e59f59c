"""pcap capture of the DOE objects that cross the emulator socket, in the form DMTF's ``spdm_dump`` reads.

One record per DOE data object (header included), link type 292, as the reference tools write
(INTEROP.md "pcap"). The snapshot length is 64 KiB because ``spdm_dump`` refuses a file whose
snaplen exceeds 0x10000 (its ``PCAP_PACKET_MAX_SIZE``); a larger object would be cut at 64 KiB with
its true length kept in ``orig_len``. Timestamps are wall-clock time: these are captures of a real
socket, not of simulated time.
"""

from __future__ import annotations

import time
from typing import BinaryIO

from sim.engine.trace import LINKTYPE_PCI_DOE, pcap_global_header, pcap_record


class DoeCapture:
    """Writes the pcap global header at once, then one flushed record per object."""

    def __init__(self, stream: BinaryIO) -> None:
        self.stream = stream
        self.records = 0
        stream.write(pcap_global_header(LINKTYPE_PCI_DOE))
        stream.flush()

    def record(self, data: bytes) -> None:
        self.stream.write(pcap_record(time.time_ns(), data))
        self.stream.flush()
        self.records += 1
