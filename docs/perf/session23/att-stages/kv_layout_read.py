# Does the KV pool's layout cost the attention DRAM bandwidth? The pool keeps a page's positions
# whole ([page][layer][k|v][page_size][nkv][d]: mini's 4 KV heads x 128 dims, 1 KB a position),
# so a CTA of one KV head reads 256 bytes of every 1 KB row; a head-major page ([nkv][page_size]
# [d]) would give it 8 KB runs. One Triton kernel reads 1 GB as 64-position x 128-dim tiles
# (one K chunk of one head), the grid ordered as block_attention_deep's (heads fastest), from
# both layouts, and from one head's rows alone (a quarter of the bytes, the same stride).
import torch
import triton
import triton.language as tl


@triton.jit
def read_tiles(x, out, head_stride, row_stride, tile_stride, ROWS: tl.constexpr, D: tl.constexpr):
    h = tl.program_id(0)
    t = tl.program_id(1)
    r = tl.arange(0, ROWS)
    c = tl.arange(0, D)
    v = tl.load(x + t * tile_stride + h * head_stride + r[:, None] * row_stride + c[None, :])
    s = tl.sum(v.to(tl.float32), axis=1)
    tl.store(out + (t * 4 + h) * ROWS + r, s)


def timed(fn, reps=20):
    fn()
    torch.cuda.synchronize()
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    a.record()
    for _ in range(reps):
        fn()
    b.record()
    torch.cuda.synchronize()
    return a.elapsed_time(b) / reps


NKV, D, ROWS = 4, 128, 64
positions = 1 << 20
x = torch.randn((positions, NKV, D), dtype=torch.bfloat16, device="cuda")  # 1 GB
tiles = positions // ROWS
out = torch.empty((tiles * NKV * ROWS,), dtype=torch.float32, device="cuda")
gb = x.numel() * 2 / 1e9
# Position-major (today): head h at column h * D of 1 KB rows; a tile is 64 rows of one head.
pm = timed(lambda: read_tiles[(NKV, tiles)](x, out, D, NKV * D, ROWS * NKV * D, ROWS=ROWS, D=D))
# Head-major within a 64-position page: head h's 64 rows contiguous (16 KB of 4 heads x 64 x 128).
hm = timed(lambda: read_tiles[(NKV, tiles)](x, out, ROWS * D, D, ROWS * NKV * D, ROWS=ROWS, D=D))
# One head only, position-major (a quarter of the bytes).
one = timed(lambda: read_tiles[(1, tiles)](x, out, D, NKV * D, ROWS * NKV * D, ROWS=ROWS, D=D))
print(f"position-major rows: {pm:.3f} ms, {gb / pm:.2f} TB/s")
print(f"head-major pages:    {hm:.3f} ms, {gb / hm:.2f} TB/s")
print(f"one head of 4:       {one:.3f} ms, {gb / 4 / one:.2f} TB/s")
