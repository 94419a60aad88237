// The Tensor Memory Accelerator (sm_90; callers guard it with __CUDA_ARCH_FEAT_SM90_ALL): bulk
// tensor copies from global to shared memory described by a tensor map (CUtensorMap, encoded on
// the host: Kernels::tensor_map_bf16_3d), completing on an mbarrier as transferred bytes.
#pragma once
#include <stdint.h>

// Warms the tensor map's cache line (the map lies in device memory).
__device__ __forceinline__ void tma_prefetch_map(const void* map) { asm volatile("prefetch.tensormap [%0];\n" ::"l"(map) : "memory"); }

// One arrival on `bar` that also expects `bytes` more to land on it (the copies' complete-tx).
__device__ __forceinline__ void mbar_arrive_expect_tx(uint64_t* bar, uint32_t bytes) {
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"((uint32_t)__cvta_generic_to_shared(bar)), "r"(bytes)
                 : "memory");
}

// The box of the 3-D map at coordinates (c0 innermost, c1, c2) into `smem` (laid out as the map's
// swizzle says; 1024-byte aligned for the 128-byte swizzle), its bytes completing on `bar`.
// Coordinates past the tensor's dims read zeros.
__device__ __forceinline__ void tma_load_3d(void* smem, const void* map, int c0, int c1, int c2, uint64_t* bar) {
    asm volatile(
        "cp.async.bulk.tensor.3d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3, %4}], [%5];\n" ::"r"(
            (uint32_t)__cvta_generic_to_shared(smem)),
        "l"(map), "r"(c0), "r"(c1), "r"(c2), "r"((uint32_t)__cvta_generic_to_shared(bar))
        : "memory");
}
