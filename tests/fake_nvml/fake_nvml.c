/* A fake libnvidia-ml for tests: two scripted GPUs.
 * GPU 0 "Fake RTX 4090": 24 GiB, used memory grows by 1 MiB on every query,
 *   two compute processes (this process with 300 MiB, pid 4242 with 1 GiB).
 * GPU 1 "Fake T4": 16 GiB, temperature and power are NOT_SUPPORTED (like a
 *   MIG or WDDM device), no processes. */
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#define NVML_SUCCESS 0
#define NVML_ERROR_INVALID_ARGUMENT 2
#define NVML_ERROR_NOT_SUPPORTED 3
#define NVML_ERROR_INSUFFICIENT_SIZE 7

typedef struct { unsigned int version; unsigned long long total, reserved, free, used; } mem_v2;
typedef struct { unsigned int gpu, memory; } util_t;
typedef struct { unsigned int pid; unsigned long long used; unsigned int gi, ci; } proc_t;

static unsigned long long queries = 0;

static int idx(void *d) {
    intptr_t i = (intptr_t)d - 1;
    return (i == 0 || i == 1) ? (int)i : -1;
}

static void copy(char *dst, unsigned int len, const char *src) {
    if (len == 0) return;
    strncpy(dst, src, len - 1);
    dst[len - 1] = 0;
}

int nvmlInit_v2(void) { return NVML_SUCCESS; }
int nvmlInit(void) { return NVML_SUCCESS; }
int nvmlShutdown(void) { return NVML_SUCCESS; }
const char *nvmlErrorString(int r) { return r == 3 ? "Not Supported" : "Fake NVML error"; }
int nvmlSystemGetDriverVersion(char *v, unsigned int len) { copy(v, len, "550.54.14"); return NVML_SUCCESS; }
int nvmlDeviceGetCount_v2(unsigned int *c) { *c = 2; return NVML_SUCCESS; }

int nvmlDeviceGetHandleByIndex_v2(unsigned int i, void **d) {
    if (i > 1) return NVML_ERROR_INVALID_ARGUMENT;
    *d = (void *)(intptr_t)(i + 1);
    return NVML_SUCCESS;
}

int nvmlDeviceGetName(void *d, char *name, unsigned int len) {
    int i = idx(d);
    if (i < 0) return NVML_ERROR_INVALID_ARGUMENT;
    copy(name, len, i == 0 ? "Fake RTX 4090" : "Fake T4");
    return NVML_SUCCESS;
}

int nvmlDeviceGetUUID(void *d, char *uuid, unsigned int len) {
    int i = idx(d);
    if (i < 0) return NVML_ERROR_INVALID_ARGUMENT;
    copy(uuid, len, i == 0 ? "GPU-00000000-1111-2222-3333-444444444444" : "GPU-55555555-6666-7777-8888-999999999999");
    return NVML_SUCCESS;
}

int nvmlDeviceGetMemoryInfo_v2(void *d, mem_v2 *m) {
    int i = idx(d);
    if (i < 0) return NVML_ERROR_INVALID_ARGUMENT;
    unsigned long long gib = 1024ULL * 1024 * 1024, mib = 1024ULL * 1024;
    m->total = i == 0 ? 24 * gib : 16 * gib;
    m->reserved = 0;
    m->used = i == 0 ? 2 * gib + (queries++) * mib : 512 * mib;
    m->free = m->total - m->used;
    return NVML_SUCCESS;
}

int nvmlDeviceGetUtilizationRates(void *d, util_t *u) {
    int i = idx(d);
    if (i < 0) return NVML_ERROR_INVALID_ARGUMENT;
    u->gpu = i == 0 ? 87 : 3;
    u->memory = i == 0 ? 41 : 1;
    return NVML_SUCCESS;
}

int nvmlDeviceGetTemperature(void *d, int sensor, unsigned int *t) {
    (void)sensor;
    int i = idx(d);
    if (i < 0) return NVML_ERROR_INVALID_ARGUMENT;
    if (i == 1) return NVML_ERROR_NOT_SUPPORTED;
    *t = 66;
    return NVML_SUCCESS;
}

int nvmlDeviceGetPowerUsage(void *d, unsigned int *mw) {
    int i = idx(d);
    if (i < 0) return NVML_ERROR_INVALID_ARGUMENT;
    if (i == 1) return NVML_ERROR_NOT_SUPPORTED;
    *mw = 312500;
    return NVML_SUCCESS;
}

int nvmlDeviceGetEnforcedPowerLimit(void *d, unsigned int *mw) {
    int i = idx(d);
    if (i < 0) return NVML_ERROR_INVALID_ARGUMENT;
    if (i == 1) return NVML_ERROR_NOT_SUPPORTED;
    *mw = 450000;
    return NVML_SUCCESS;
}

int nvmlDeviceGetClockInfo(void *d, int type, unsigned int *mhz) {
    int i = idx(d);
    if (i < 0) return NVML_ERROR_INVALID_ARGUMENT;
    *mhz = type == 1 ? 2520 : 10501; /* 1 = SM clock, 2 = memory clock */
    return NVML_SUCCESS;
}

int nvmlDeviceGetComputeRunningProcesses_v3(void *d, unsigned int *count, proc_t *infos) {
    int i = idx(d);
    if (i < 0) return NVML_ERROR_INVALID_ARGUMENT;
    unsigned int n = i == 0 ? 2 : 0;
    if (infos == 0 || *count < n) {
        *count = n;
        return n == 0 ? NVML_SUCCESS : NVML_ERROR_INSUFFICIENT_SIZE;
    }
    if (n == 2) {
        infos[0].pid = (unsigned int)getpid();
        infos[0].used = 300ULL * 1024 * 1024;
        infos[0].gi = infos[0].ci = 0xFFFFFFFF;
        infos[1].pid = 4242;
        infos[1].used = 1024ULL * 1024 * 1024;
        infos[1].gi = infos[1].ci = 0xFFFFFFFF;
    }
    *count = n;
    return NVML_SUCCESS;
}
