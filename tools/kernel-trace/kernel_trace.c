// A kernel timeline of any CUDA program, for GPU machines where Nsight Systems cannot make a
// report: a CUPTI injection library. The CUDA driver loads it at cuInit when the program runs
// with CUDA_INJECTION64_PATH=<this .so> (the mechanism Nsight tools use). It records every
// kernel's start and end as the GPU timestamps them (CUPTI's concurrent-kernel activity: kernels
// are not serialised, programmatic dependent launches still overlap, CUDA graph replays are
// recorded node by node) and writes them, one line a kernel, when the program exits:
//   start_ns end_ns graph_id graph_node_id stream_id grid_x grid_y grid_z block_x name
// and every memcpy and memset the same way, grid and block 0 and the name in brackets
// ("[memcpy HtoD 4096 B]", "[memset 1028 B]"): the GPU time between kernels they take,
// to the file KERNEL_TRACE_OUT names (a tool's setting, as CUPTI's own; default
// kernel-trace.tsv). tools/kernel-trace/timeline.py turns that into per-layer tables.
// Build: tools/kernel-trace/build.sh (here, against the CUPTI headers of the pinned wheel).
#include <cupti.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define BUF_BYTES (8u << 20)
#define ALIGN 8

static FILE* out;
static unsigned long long records, dropped;

static void check(CUptiResult r, const char* what) {
    if (r != CUPTI_SUCCESS) {
        const char* s = "?";
        cuptiGetResultString(r, &s);
        fprintf(stderr, "kernel_trace: %s failed: %s\n", what, s);
    }
}

static void CUPTIAPI buffer_requested(uint8_t** buffer, size_t* size, size_t* max_records) {
    *buffer = (uint8_t*)aligned_alloc(ALIGN, BUF_BYTES);  // CUPTI wants 8-byte aligned buffers
    *size = *buffer ? BUF_BYTES : 0;
    *max_records = 0;  // as many as fit
}

static void CUPTIAPI buffer_completed(CUcontext ctx, uint32_t stream, uint8_t* buffer, size_t size, size_t valid) {
    (void)size;
    CUpti_Activity* rec = NULL;
    while (cuptiActivityGetNextRecord(buffer, valid, &rec) == CUPTI_SUCCESS) {
        if (rec->kind == CUPTI_ACTIVITY_KIND_MEMCPY) {
            static const char* const kinds[] = {"?", "HtoD", "DtoH", "HtoA", "AtoH", "AtoA", "AtoD", "DtoA", "DtoD", "HtoH", "PtoP"};
            const CUpti_ActivityMemcpy6* m = (const CUpti_ActivityMemcpy6*)rec;
            if (out)
                fprintf(out, "%llu %llu %u %llu %u 0 0 0 0 [memcpy %s %llu B]\n", (unsigned long long)m->start, (unsigned long long)m->end,
                        m->graphId, (unsigned long long)m->graphNodeId, m->streamId, m->copyKind < 11 ? kinds[m->copyKind] : "?",
                        (unsigned long long)m->bytes);
            records++;
            continue;
        }
        if (rec->kind == CUPTI_ACTIVITY_KIND_MEMSET) {
            const CUpti_ActivityMemset4* m = (const CUpti_ActivityMemset4*)rec;
            if (out)
                fprintf(out, "%llu %llu %u %llu %u 0 0 0 0 [memset %llu B]\n", (unsigned long long)m->start, (unsigned long long)m->end,
                        m->graphId, (unsigned long long)m->graphNodeId, m->streamId, (unsigned long long)m->bytes);
            records++;
            continue;
        }
        if (rec->kind != CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL && rec->kind != CUPTI_ACTIVITY_KIND_KERNEL) continue;
        const CUpti_ActivityKernel10* k = (const CUpti_ActivityKernel10*)rec;
        if (out)
            fprintf(out, "%llu %llu %u %llu %u %d %d %d %d %s\n", (unsigned long long)k->start, (unsigned long long)k->end, k->graphId,
                    (unsigned long long)k->graphNodeId, k->streamId, k->gridX, k->gridY, k->gridZ, k->blockX, k->name ? k->name : "?");
        records++;
    }
    size_t d = 0;
    if (cuptiActivityGetNumDroppedRecords(ctx, stream, &d) == CUPTI_SUCCESS) dropped += d;
    free(buffer);
}

static void finish(void) {
    check(cuptiActivityFlushAll(CUPTI_ACTIVITY_FLAG_FLUSH_FORCED), "cuptiActivityFlushAll");
    if (out) {
        fclose(out);
        out = NULL;
    }
    fprintf(stderr, "kernel_trace: %llu kernel, memcpy and memset records written, %llu dropped\n", records, dropped);
}

// Called by the CUDA driver (CUDA_INJECTION64_PATH) once, at cuInit.
int InitializeInjection(void) {
    const char* path = getenv("KERNEL_TRACE_OUT");
    if (!path || !*path) path = "kernel-trace.tsv";
    out = fopen(path, "w");
    if (!out) {
        fprintf(stderr, "kernel_trace: cannot write %s\n", path);
        return 0;
    }
    check(cuptiActivityRegisterCallbacks(buffer_requested, buffer_completed), "cuptiActivityRegisterCallbacks");
    check(cuptiActivityEnable(CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL), "cuptiActivityEnable(CONCURRENT_KERNEL)");
    check(cuptiActivityEnable(CUPTI_ACTIVITY_KIND_MEMCPY), "cuptiActivityEnable(MEMCPY)");
    check(cuptiActivityEnable(CUPTI_ACTIVITY_KIND_MEMSET), "cuptiActivityEnable(MEMSET)");
    atexit(finish);
    return 1;
}
