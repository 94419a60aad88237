// NVTX ranges for the Rust side. NVTX3 is header-only: these calls cost a branch until a
// tool (nsys, ncu --nvtx) injects itself through NVTX_INJECTION64_PATH. Built by build.rs
// with the host C compiler when the nvtx3 headers are found.
#include <nvtx3/nvToolsExt.h>

static nvtxDomainHandle_t dllm_domain(void) {
    static nvtxDomainHandle_t d = 0;
    if (!d) d = nvtxDomainCreateA("dllm");
    return d;
}

int dllm_nvtx_push(const char *name) {
    nvtxEventAttributes_t a = {0};
    a.version = NVTX_VERSION;
    a.size = NVTX_EVENT_ATTRIB_STRUCT_SIZE;
    a.messageType = NVTX_MESSAGE_TYPE_ASCII;
    a.message.ascii = name;
    return nvtxDomainRangePushEx(dllm_domain(), &a);
}

int dllm_nvtx_pop(void) { return nvtxDomainRangePop(dllm_domain()); }
