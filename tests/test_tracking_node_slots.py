"""The per-node bound on tracking requests (tracking.sender.NodeSlots): the processes of one machine share
`max_in_flight_per_node` slots for one server, and a killed holder frees its slot. Real processes and real
`flock`s; the "request" is a wait inside the slot (no server is needed to count concurrency)."""
from __future__ import annotations

import multiprocessing as mp
import os
import signal
import threading

from tracking.sender import NodeSlots, SendGate, SenderSettings

SERVER = "http://tracking.example:5000"


def _worker(slot_dir, per_node, in_flight, peak, lock, ready, threads=4, requests=6):
    gate = SendGate(SenderSettings(max_in_flight=4, max_in_flight_per_node=per_node, node_slot_dir=slot_dir), SERVER)

    def one():
        for _ in range(requests):
            with gate.slot():
                with lock:
                    in_flight.value += 1
                    peak.value = max(peak.value, in_flight.value)
                # hold the slot until 4 requests of the machine are in flight (or 0.3 s): without a node bound
                # the peak then exceeds 3 whatever the scheduling
                if in_flight.value < 4:
                    ready.wait(0.3)
                else:
                    ready.set()
                with lock:
                    in_flight.value -= 1

    ts = [threading.Thread(target=one) for _ in range(threads)]
    [t.start() for t in ts]
    [t.join() for t in ts]


def _peak(tmp_path, per_node: int, procs: int = 5) -> int:
    ctx = mp.get_context("fork")
    in_flight, peak, lock, ready = ctx.Value("i", 0), ctx.Value("i", 0), ctx.Lock(), ctx.Event()
    ps = [ctx.Process(target=_worker, args=(str(tmp_path / "slots"), per_node, in_flight, peak, lock, ready))
          for _ in range(procs)]
    [p.start() for p in ps]
    [p.join(120) for p in ps]
    assert all(p.exitcode == 0 for p in ps)
    return peak.value


def test_processes_of_one_machine_share_the_node_slots(tmp_path):
    bounded = _peak(tmp_path, per_node=3)
    unbounded = _peak(tmp_path, per_node=0)
    print(f"peak requests in flight: {bounded} with 3 node slots, {unbounded} without")
    assert 2 <= bounded <= 3          # the bound holds and was reached
    assert unbounded > 3              # 5 processes x 4 per process would exceed it


def _hold_forever(slot_dir, held):
    with NodeSlots(1, slot_dir, SERVER).slot():
        held.set()
        threading.Event().wait()


def test_a_killed_holder_frees_its_slot(tmp_path):
    ctx = mp.get_context("fork")
    held = ctx.Event()
    p = ctx.Process(target=_hold_forever, args=(str(tmp_path / "slots"), held))
    p.start()
    assert held.wait(60)
    got = threading.Event()

    def take():
        with NodeSlots(1, tmp_path / "slots", SERVER).slot():
            got.set()

    t = threading.Thread(target=take, daemon=True)
    t.start()
    assert not got.wait(0.5)               # the only slot is held by the live child
    os.kill(p.pid, signal.SIGKILL)
    p.join(30)
    assert got.wait(30)                    # the kernel dropped the dead holder's lock


def test_node_bound_is_read_from_the_environment():
    s = SenderSettings.from_env({"TRACKING_MAX_IN_FLIGHT_PER_NODE": "8", "TRACKING_NODE_SLOT_DIR": "/x"})
    assert s.max_in_flight_per_node == 8 and s.node_slot_dir == "/x"
