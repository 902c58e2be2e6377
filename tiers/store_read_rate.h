/* store_read_rate: how fast the expert store gives its blobs, measured: the
 * yardstick of the store's side of decode (moetier tune's model of a miss,
 * bench model's bound where the DRAM tier misses). */
#ifndef MOETIER_STORE_READ_RATE_H
#define MOETIER_STORE_READ_RATE_H

#include "core/base/errbuf.h"
#include "nvme_tier.h"
#include "store.h"

/* GB/s of reading expert blobs from the store `batch` at a time (as a
 * layer's misses are read, top_k of them), in a scattered order, through the
 * NVMe tier's reads (io: auto, uring or pread), over at least 1 s or every
 * blob; -1 with e set when a read fails or memory runs out. */
double store_read_gbps(const store *st, io_mode io, int batch, errbuf *e);

#endif
