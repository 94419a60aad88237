"""Session 39 probe: every pair of e4m3 codes through moe_gemm.cu's fp8x2_to_bf16x2 on the GPU
(fp8_widen_probe.cu), against torch's float8_e4m3fn -> bfloat16 conversion. Prints the count of
mismatching lanes (the two NaN codes, 0x7F and 0xFF, excluded: the quantizer never writes them)."""
import ctypes, sys
import torch

cubin = sys.argv[1]
torch.cuda.init()
out = torch.zeros(65536, dtype=torch.int32, device="cuda")
torch.cuda.synchronize()
cu = ctypes.CDLL("libcuda.so.1")
mod, fn = ctypes.c_void_p(), ctypes.c_void_p()
assert cu.cuModuleLoad(ctypes.byref(mod), cubin.encode()) == 0
assert cu.cuModuleGetFunction(ctypes.byref(fn), mod, b"fp8_widen_probe") == 0
arg = ctypes.c_void_p(out.data_ptr())
args = (ctypes.c_void_p * 1)(ctypes.addressof(arg))
assert cu.cuLaunchKernel(fn, 256, 1, 1, 256, 1, 1, 0, None, args, None) == 0
torch.cuda.synchronize()
got = out.cpu().view(torch.int16).view(-1, 2)  # [pair][low, high] (little-endian)
want = torch.arange(256, dtype=torch.uint8).view(torch.float8_e4m3fn).to(torch.bfloat16).view(torch.int16)
pairs = torch.arange(65536)
lo, hi = pairs & 0xFF, pairs >> 8
ok_lo = (got[:, 0] == want[lo]) | (lo == 0x7F) | (lo == 0xFF)
ok_hi = (got[:, 1] == want[hi]) | (hi == 0x7F) | (hi == 0xFF)
bad = int((~ok_lo).sum() + (~ok_hi).sum())
subnormal_codes = [c for c in range(256) if (c & 0x78) == 0 and (c & 7) != 0]
print(f"fp8x2_to_bf16x2: {bad} mismatching lanes of {2 * 65536} ({len(subnormal_codes)} subnormal codes among the 256)")
if bad:
    idx = torch.nonzero(~ok_lo).flatten()[:8].tolist()
    print("first bad low lanes:", [(hex(p), hex(int(got[p, 0]) & 0xFFFF), hex(int(want[p & 0xFF]) & 0xFFFF)) for p in idx])
sys.exit(1 if bad else 0)
