"""Load chains in a kernel's SASS: for each global (LDG) or generic (LD) load, how many other
loads are issued between it and the first instruction that reads its destination register. A load
"after 0 other loads" was waited on alone: a memory round trip of its own on the kernel's path.

    cuobjdump -sass -fun KERNEL file.cubin > k.sass   # nvcc --cubin -arch=sm_90a -I csrc csrc/FILE.cu
    python3 tools/sass_load_chains.py k.sass

A heuristic over the text (no control flow: a use on another branch counts as the first use).
"""
import re, signal, sys

signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # quiet under `| head`
lines = [l for l in open(sys.argv[1]) if re.match(r"\s+/\*[0-9a-f]{4}\*/", l)]
ins = [re.sub(r"/\*[0-9a-f]*\*/|;.*", "", l).strip() for l in lines]
def regs(op):  # registers read in an operand string
    return set(re.findall(r"\bR(\d+)\b", op))
for i, s in enumerate(ins):
    m = re.match(r"(@!?P\d\s+)?(LDG\S*|LD\.E\S*)\s+(R\d+)", s)
    if not m: continue
    dst = int(m.group(3)[1:])
    width = 4 if "128" in m.group(2) else 2 if "64" in m.group(2) else 1
    dregs = {str(dst + k) for k in range(width)}
    others = 0
    for j in range(i + 1, min(len(ins), i + 400)):
        t = ins[j]
        if re.match(r"(@!?P\d\s+)?(LDG|LD\.E)", t): others += 1
        parts = t.split(None, 1)
        if len(parts) < 2: continue
        ops = parts[1].split(",")
        srcs = ",".join(ops[1:]) if not re.match(r"(@!?P\d\s+)?(ST|RED|ATOM)", t) else parts[1]
        if regs(srcs) & dregs:
            print(f"{i:5d} {s[:60]:60s} used at {j} after {others} other loads")
            break
