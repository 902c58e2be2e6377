/* emu_stream: streams and events for the CPU emulation (cuda_runtime.h here).
 *
 * The default stream (0) is immediate: kernels and its copies run when called.
 * A created stream keeps its work (copies, event records, waits) in a queue and
 * runs it only when something needs it: an event recorded after it is waited
 * for (cudaEventSynchronize, or cudaStreamWaitEvent by the default stream), the
 * stream is synchronized, or the device is (cudaDeviceSynchronize, cudaFree).
 * So a kernel that reads a copy's destination without waiting for the copy's
 * event reads the old bytes, and a copy whose source changes before anybody
 * waits for it copies the new ones: the ordering mistakes an asynchronous copy
 * can hide on a device show here in every run. The default stream's
 * asynchronous copies wait in a queue of their own until its next operation
 * (emu_default_stream_flush): a copy from pinned memory reads it then, one from
 * pageable memory at the call (the driver stages it), one into pageable memory
 * runs at the call (the call waits for it). Streams and events belong to
 * the device current when they are made; recording an event on another
 * device's stream fails, as it does on a GPU. Used by one thread at a time,
 * like the backend's calls into CUDA.
 *
 * With MOETIER_EMU_COPIES_FIRST=1 the order is the other one a device may
 * take: the default stream keeps all its work (kernels too) until something
 * waits for it, and a created stream runs its work as soon as its waits
 * allow, at the call. A copy into memory that kernels queued before it still
 * read then lands first, unless an event orders them (the backend's `freed`
 * events): what the first order cannot show. A pinned source changed after
 * its copy is queued is the first order's to show, so the tests run in both. */
#include <chrono>
#include <deque>
#include <functional>
#include <memory>
#include <vector>

#include "cuda_runtime.h"

enum op_kind { OP_COPY, OP_MARK, OP_WAIT };

struct emu_op {
    op_kind kind;
    void *dst;
    const void *src;
    size_t n;
    cudaEvent_t ev;
    unsigned long gen;
};

struct emu_stream {
    std::deque<emu_op> queue;
    int device;
};

struct emu_event {
    int device;
    cudaStream_t stream;        /* of its latest record; 0: already reached */
    unsigned long gen, done_gen; /* records made / reached */
    double seconds;             /* host time when the latest record was reached */
};

static std::vector<cudaStream_t> streams;

/* the default stream's queued work: its copies, and with copies_first its
 * kernels, records and waits too */
static std::deque<std::function<void()>> default_ops;

bool emu_copies_first(void)
{
    static int on = -1;
    if (on < 0) {
        const char *v = getenv("MOETIER_EMU_COPIES_FIRST");
        on = v && !strcmp(v, "1");
    }
    return on;
}

void emu_default_stream_push(std::function<void()> op)
{
    default_ops.push_back(std::move(op));
}

static std::vector<std::pair<const char *, size_t>> pinned;

void emu_pin(void *p, size_t n)
{
    pinned.push_back({(const char *)p, n});
}

void emu_unpin(const void *p)
{
    for (size_t i = 0; i < pinned.size(); i++)
        if (pinned[i].first == p) {
            pinned.erase(pinned.begin() + (long)i);
            return;
        }
}

static bool is_pinned(const void *p)
{
    for (const auto &r : pinned)
        if ((const char *)p >= r.first && (const char *)p < r.first + r.second)
            return true;
    return false;
}

/* runs the default stream's first queued operation */
static void step_default(void)
{
    std::function<void()> op = std::move(default_ops.front());
    default_ops.pop_front();
    op();
}

void emu_default_stream_flush(void)
{
    while (!default_ops.empty())
        step_default();
}

static double now(void)
{
    using namespace std::chrono;
    return duration<double>(steady_clock::now().time_since_epoch()).count();
}

static void wait_for(cudaEvent_t ev, unsigned long gen);

static void mark(cudaEvent_t ev, unsigned long gen)
{
    if (ev->done_gen < gen) {
        ev->done_gen = gen;
        ev->seconds = now();
    }
}

/* runs the stream's first queued operation; a wait not yet met is met first
 * and stays in the queue, met, for the caller's next step (meeting it may run
 * work that starts this stream's queue itself: copies_first) */
static void step(cudaStream_t s)
{
    emu_op op = s->queue.front();
    if (op.kind == OP_WAIT && op.ev->done_gen < op.gen) {
        wait_for(op.ev, op.gen);
        return;
    }
    s->queue.pop_front();
    if (op.kind == OP_COPY)
        memmove(op.dst, op.src, op.n);
    else if (op.kind == OP_MARK)
        mark(op.ev, op.gen);
}

/* copies_first: the stream's work as far as its waits allow */
static void run_ready(cudaStream_t s)
{
    while (!s->queue.empty()) {
        const emu_op &op = s->queue.front();
        if (op.kind == OP_WAIT && op.ev->done_gen < op.gen)
            return;
        step(s);
    }
}

static void run_ready_all(void)
{
    for (cudaStream_t s : streams)
        run_ready(s);
}

/* copies_first: an operation queued on a created stream starts at once */
static void queued_on(cudaStream_t s)
{
    if (emu_copies_first())
        run_ready(s);
}

static void drain(cudaStream_t s)
{
    while (s && !s->queue.empty())
        step(s);
}

static void wait_for(cudaEvent_t ev, unsigned long gen)
{
    while (ev->done_gen < gen) {
        if (ev->stream && !ev->stream->queue.empty()) {
            step(ev->stream);
        } else if (!ev->stream && !default_ops.empty()) {
            step_default();     /* (copies_first: recorded on the default stream, queued) */
        } else {
            fprintf(stderr, "cuda_emu: waiting for an event that can never be reached\n");
            abort();
        }
    }
}

cudaError_t cudaDeviceSynchronize(void)
{
    emu_default_stream_flush();
    for (cudaStream_t s : streams)
        drain(s);
    return cudaSuccess;
}

cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned)
{
    *s = new emu_stream{{}, emu_current_device()};
    streams.push_back(*s);
    return cudaSuccess;
}

int emu_stream_device(cudaStream_t s)
{
    return s ? s->device : emu_current_device();
}

cudaError_t cudaStreamDestroy(cudaStream_t s)
{
    drain(s);
    for (size_t i = 0; i < streams.size(); i++)
        if (streams[i] == s)
            streams.erase(streams.begin() + (long)i);
    delete s;
    return cudaSuccess;
}

cudaError_t cudaStreamSynchronize(cudaStream_t s)
{
    if (!s)
        emu_default_stream_flush();
    drain(s);
    return cudaSuccess;
}

cudaError_t cudaMemcpyAsync(void *d, const void *src, size_t n, cudaMemcpyKind kind, cudaStream_t s)
{
    if (s) {
        s->queue.push_back(emu_op{OP_COPY, d, src, n, nullptr, 0});
        queued_on(s);
    } else if (kind == cudaMemcpyDeviceToHost && !is_pinned(d)) {
        emu_default_stream_flush();
        memmove(d, src, n);
    } else if (kind == cudaMemcpyHostToDevice && !is_pinned(src)) {
        auto staged = std::make_shared<std::vector<char>>((const char *)src, (const char *)src + n);
        default_ops.push_back([d, staged] { memmove(d, staged->data(), staged->size()); });
    } else {
        default_ops.push_back([d, src, n] { memmove(d, src, n); });
    }
    return cudaSuccess;
}

cudaError_t cudaEventCreateWithFlags(cudaEvent_t *ev, unsigned)
{
    *ev = new emu_event{emu_current_device(), nullptr, 0, 0, now()};
    return cudaSuccess;
}

cudaError_t cudaEventDestroy(cudaEvent_t ev)
{
    delete ev;
    return cudaSuccess;
}

cudaError_t cudaEventRecord(cudaEvent_t ev, cudaStream_t s)
{
    if (ev->device != emu_stream_device(s))
        return cudaErrorInvalidResourceHandle;
    ev->gen++;
    ev->stream = s;
    unsigned long gen = ev->gen;
    if (s) {
        s->queue.push_back(emu_op{OP_MARK, nullptr, nullptr, 0, ev, gen});
        queued_on(s);
    } else if (emu_copies_first()) {
        /* (what waits for it may start once it is reached) */
        default_ops.push_back([ev, gen] {
            mark(ev, gen);
            run_ready_all();
        });
    } else {
        emu_default_stream_flush();
        mark(ev, gen);
    }
    return cudaSuccess;
}

cudaError_t cudaStreamWaitEvent(cudaStream_t s, cudaEvent_t ev, unsigned)
{
    unsigned long gen = ev->gen;
    if (s) {
        s->queue.push_back(emu_op{OP_WAIT, nullptr, nullptr, 0, ev, gen});
        queued_on(s);
    } else if (emu_copies_first()) {
        default_ops.push_back([ev, gen] { wait_for(ev, gen); });
    } else {
        emu_default_stream_flush();
        wait_for(ev, gen);
    }
    return cudaSuccess;
}

cudaError_t cudaEventSynchronize(cudaEvent_t ev)
{
    wait_for(ev, ev->gen);
    return cudaSuccess;
}

/* whether the event's latest record has been reached; runs nothing */
cudaError_t cudaEventQuery(cudaEvent_t ev)
{
    return ev->done_gen >= ev->gen ? cudaSuccess : cudaErrorNotReady;
}

cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t start, cudaEvent_t end)
{
    wait_for(start, start->gen);
    wait_for(end, end->gen);
    *ms = (float)((end->seconds - start->seconds) * 1e3);
    return cudaSuccess;
}
