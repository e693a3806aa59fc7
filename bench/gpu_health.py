#!/usr/bin/env python3
"""What NVML reports for the node health checks (docs/compute.md, "Node health").

On a machine with NVIDIA GPUs, this asks the real driver's libnvidia-ml.so.1 the same questions
the agent asks at every check (metrics/nvml.cc, metrics/gpu_health.cc): the device count, each
device's volatile uncorrectable ECC count and retired-pages-pending status, and whether XID
critical errors can be watched; then it prints the verdict the agent would reach (with
expected = the /dev/nvidia<N> device nodes present). Without the library it says so and exits 0,
so the project builds and runs its benches without a GPU.

Usage: python3 bench/gpu_health.py [--library PATH]
"""
import ctypes
import glob
import re
import sys

NVML_SUCCESS = 0
NVML_MEMORY_ERROR_TYPE_UNCORRECTED = 1
NVML_VOLATILE_ECC = 0
XID_CRITICAL = 0x8


def main():
    library = "libnvidia-ml.so.1"
    if len(sys.argv) == 3 and sys.argv[1] == "--library":
        library = sys.argv[2]
    try:
        nvml = ctypes.CDLL(library)
    except OSError as error:
        print("no NVML here (%s): the node has no GPU section and no GPU check" % error)
        return 0
    if nvml.nvmlInit_v2() != NVML_SUCCESS:
        print("nvmlInit_v2 failed: no driver loaded")
        return 0
    expected = len([p for p in glob.glob("/dev/nvidia*") if re.fullmatch(r"/dev/nvidia\d+", p)])
    count = ctypes.c_uint(0)
    nvml.nvmlDeviceGetCount_v2(ctypes.byref(count))
    print("devices: NVML lists %d, /dev/nvidia<N> nodes: %d" % (count.value, expected))
    problems = []
    if count.value < expected:
        problems.append("GPU missing: NVML lists %d of the %d expected" % (count.value, expected))
    events = ctypes.c_void_p()
    watching = nvml.nvmlEventSetCreate(ctypes.byref(events)) == NVML_SUCCESS
    for index in range(count.value):
        device = ctypes.c_void_p()
        nvml.nvmlDeviceGetHandleByIndex_v2(index, ctypes.byref(device))
        name = ctypes.create_string_buffer(96)
        nvml.nvmlDeviceGetName(device, name, 96)
        ecc = ctypes.c_ulonglong(0)
        ecc_status = nvml.nvmlDeviceGetTotalEccErrors(
            device, NVML_MEMORY_ERROR_TYPE_UNCORRECTED, NVML_VOLATILE_ECC, ctypes.byref(ecc))
        pending = ctypes.c_int(0)
        pending_status = nvml.nvmlDeviceGetRetiredPagesPendingStatus(device, ctypes.byref(pending))
        xid = watching and nvml.nvmlDeviceRegisterEvents(
            device, ctypes.c_ulonglong(XID_CRITICAL), events) == NVML_SUCCESS
        print("GPU %d %s: uncorrectable ECC %s, retired pages pending %s, XID events %s" % (
            index, name.value.decode(errors="replace"),
            ecc.value if ecc_status == NVML_SUCCESS else "not supported (%d)" % ecc_status,
            bool(pending.value) if pending_status == NVML_SUCCESS
            else "not supported (%d)" % pending_status,
            "watched" if xid else "not supported"))
        if ecc_status == NVML_SUCCESS and ecc.value > 0:
            problems.append("GPU %d: %d uncorrectable ECC error(s)" % (index, ecc.value))
        if pending_status == NVML_SUCCESS and pending.value:
            problems.append("GPU %d: memory pages are waiting to be retired" % index)
    print("verdict: " + ("; ".join(problems) if problems else "usable"))
    nvml.nvmlShutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
