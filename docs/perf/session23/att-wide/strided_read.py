# Does reading one KV head's 256 bytes of every 1 KB position row (the pool's
# [page][layer][k|v][page_size][nkv][d] layout, mini: 4 heads x 128 x bf16) cost more DRAM
# time than reading the rows whole? Copies 1 GB both ways (each head's slice in turn, and
# whole), the same bytes read and written, timed with CUDA events.
import torch

x = torch.randn((1 << 20, 4, 128), dtype=torch.bfloat16, device="cuda")
heads = [torch.empty((1 << 20, 128), dtype=torch.bfloat16, device="cuda") for _ in range(4)]
whole = torch.empty_like(x)


def timed(fn, reps=10):
    fn()
    torch.cuda.synchronize()
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    a.record()
    for _ in range(reps):
        fn()
    b.record()
    torch.cuda.synchronize()
    return a.elapsed_time(b) / reps


def by_head():
    for h in range(4):
        heads[h].copy_(x[:, h, :])


t_whole = timed(lambda: whole.copy_(x))
t_head = timed(by_head)
gb = 2 * x.numel() * 2 / 1e9
print(f"whole rows: {t_whole:.3f} ms ({gb / t_whole:.0f} GB/s r+w); a head at a time: {t_head:.3f} ms ({gb / t_head:.0f} GB/s r+w)")
